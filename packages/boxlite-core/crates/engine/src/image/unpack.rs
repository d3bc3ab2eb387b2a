//! Applying image layers into a staging directory without root.
//!
//! Files are written with owner-accessible modes as the current user; the real owner, group
//! and mode of every entry are recorded in a [`Manifest`] and later written into the ext4 image
//! by `debugfs` (see `ext4.rs`). Device nodes are recorded only (a non-root user cannot create
//! them) and created by `debugfs` too.
//!
//! Paths are resolved inside the staging root, symlinks included: an absolute symlink in the
//! image (`/opt/escape -> /`) never makes a later entry land outside the root.
//!
//! Layers are hostile input: the bytes written and the entries created per image are capped
//! ([`ImageLimits`]), a file's declared size is checked before anything is written (a 1 TiB
//! sparse entry fails at once), names the ext4 fix-up could not express safely (control
//! characters, components over 255 bytes, paths over 4,095 bytes) and malformed whiteouts
//! (`.wh.`, `.wh..`, `.wh...`, unknown `.wh..wh.` markers) are refused.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

/// What an entry in the final tree is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDevice { major: u32, minor: u32 },
    BlockDevice { major: u32, minor: u32 },
}

impl Kind {
    /// The `S_IFMT` bits of this kind.
    pub fn type_bits(self) -> u32 {
        match self {
            Kind::File => 0o100000,
            Kind::Dir => 0o040000,
            Kind::Symlink => 0o120000,
            Kind::Fifo => 0o010000,
            Kind::CharDevice { .. } => 0o020000,
            Kind::BlockDevice { .. } => 0o060000,
        }
    }

    /// Device nodes and fifos exist only in the manifest until `debugfs` makes them.
    pub fn is_special(self) -> bool {
        matches!(
            self,
            Kind::Fifo | Kind::CharDevice { .. } | Kind::BlockDevice { .. }
        )
    }
}

/// The intended metadata of one entry, keyed by its path relative to the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Every entry of the unpacked tree with its intended metadata (the root is `""`).
pub type Manifest = BTreeMap<PathBuf, Meta>;

const MAX_SYMLINK_HOPS: usize = 40;
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
/// Longest file name component ext4 (and Linux) accepts.
pub const MAX_NAME_BYTES: usize = 255;
/// Longest path (relative to the root) an image may hold: Linux's `PATH_MAX` less the NUL.
pub const MAX_PATH_BYTES: usize = 4095;

/// What preparing one image may write: hostile images (gzip bombs, sparse-file bombs, millions
/// of empty files) fail with an error naming the limit long before the disk fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ImageLimits {
    /// Most bytes of file content an image may unpack to (all layers together; a file a later
    /// layer overwrites counts twice). Also caps the sum of its layers' stated sizes on a pull.
    pub image_max_bytes: u64,
    /// Most tar entries an image may hold (all layers together, whiteouts included).
    pub image_max_entries: u64,
}

/// Default [`ImageLimits::image_max_bytes`]: 16 GiB.
pub const DEFAULT_IMAGE_MAX_BYTES: u64 = 16 << 30;
/// Default [`ImageLimits::image_max_entries`].
pub const DEFAULT_IMAGE_MAX_ENTRIES: u64 = 1_000_000;

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits {
            image_max_bytes: DEFAULT_IMAGE_MAX_BYTES,
            image_max_entries: DEFAULT_IMAGE_MAX_ENTRIES,
        }
    }
}

impl ImageLimits {
    /// The error for an image over `image_max_bytes`.
    pub fn too_many_bytes(&self, what: &str) -> io::Error {
        invalid(format!(
            "{what} more than {} bytes, the limit image_max_bytes; if you trust this image, \
             raise it: Options(image_max_bytes=...)",
            self.image_max_bytes
        ))
    }
}

pub struct Unpacker {
    root: PathBuf,
    manifest: Manifest,
    /// Paths written by the layer being applied (an opaque whiteout keeps these).
    this_layer: HashSet<PathBuf>,
    limits: ImageLimits,
    /// Bytes this unpacker may still write before the file system runs short (see
    /// [`Unpacker::set_free_space`]); `None`: not checked.
    free_space: Option<u64>,
    /// File content written so far, all layers.
    written: u64,
    /// Tar entries seen so far, all layers.
    entries: u64,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Normalises a tar entry path to components relative to the root; `..` is refused, and so
/// are names with control characters, components over [`MAX_NAME_BYTES`] and paths over
/// [`MAX_PATH_BYTES`].
fn normalise(path: &Path) -> io::Result<PathBuf> {
    use std::os::unix::ffi::OsStrExt as _;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(c) => {
                let bytes = c.as_bytes();
                if bytes.len() > MAX_NAME_BYTES {
                    return Err(invalid(format!(
                        "entry {:?} has a name of {} bytes; file names are at most {MAX_NAME_BYTES} bytes",
                        path.display(),
                        bytes.len()
                    )));
                }
                if bytes.iter().any(|b| b.is_ascii_control()) {
                    return Err(invalid(format!(
                        "entry {:?} has a control character in its name, which images may not use",
                        path.display()
                    )));
                }
                out.push(c)
            }
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                return Err(invalid(format!(
                    "entry {} escapes the root with '..'",
                    path.display()
                )))
            }
            Component::Prefix(_) => {
                return Err(invalid(format!(
                    "entry {} has a path prefix",
                    path.display()
                )))
            }
        }
    }
    if out.as_os_str().len() > MAX_PATH_BYTES {
        return Err(invalid(format!(
            "entry {:?}... has a path of {} bytes; paths are at most {MAX_PATH_BYTES} bytes",
            path.to_string_lossy().chars().take(64).collect::<String>(),
            out.as_os_str().len()
        )));
    }
    Ok(out)
}

/// The name a whiteout hides (`.wh.NAME`), refusing names that are no file of the directory
/// (`.wh.`, `.wh..`, `.wh...`) and whiteout markers other than the opaque one.
fn whiteout_target(name: &str) -> io::Result<Option<&str>> {
    let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) else {
        return Ok(None);
    };
    if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.starts_with(WHITEOUT_PREFIX) {
        return Err(invalid(format!(
            "whiteout {name:?} is malformed (it names no file of its directory); the layer is refused"
        )));
    }
    Ok(Some(hidden))
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

impl Unpacker {
    pub fn new(root: &Path) -> io::Result<Unpacker> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(root)?;
        let mut manifest = Manifest::new();
        manifest.insert(
            PathBuf::new(),
            Meta {
                kind: Kind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
            },
        );
        Ok(Unpacker {
            root: root.to_owned(),
            manifest,
            this_layer: HashSet::new(),
            limits: ImageLimits::default(),
            free_space: None,
            written: 0,
            entries: 0,
        })
    }

    /// Caps what the image may write (default: [`ImageLimits::default`]).
    pub fn set_limits(&mut self, limits: ImageLimits) {
        self.limits = limits;
    }

    /// Bytes of file content the staging file system can take for this image; beyond it the
    /// unpack fails with an error saying so, before the disk is full.
    pub fn set_free_space(&mut self, bytes: u64) {
        self.free_space = Some(bytes);
    }

    /// File content written so far, in bytes.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Checks that `more` bytes of file content fit the limit and the free space.
    fn reserve(&self, rel: &Path, more: u64) -> io::Result<()> {
        let total = self.written.saturating_add(more);
        if total > self.limits.image_max_bytes {
            return Err(self.limits.too_many_bytes(&format!(
                "{} (declared {more} bytes) takes the image to",
                rel.display()
            )));
        }
        if let Some(free) = self.free_space {
            if total > free {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    format!(
                        "not enough free space to unpack the image: {} (declared {more} bytes) takes it to \
                         {total} bytes, and only {free} can be staged (the base disk needs the same again); \
                         free some space (runtime.images.prune()) or put BOXLITE_HOME on a larger disk",
                        rel.display()
                    ),
                ));
            }
        }
        Ok(())
    }

    pub fn into_manifest(self) -> Manifest {
        self.manifest
    }

    /// Resolves `rel`'s parent directories inside the root, following symlinks as the guest
    /// would (absolute targets restart at the root, `..` stops at the root), creating missing
    /// directories. Returns the resolved relative path of the parent.
    fn resolve_parent(&mut self, rel: &Path) -> io::Result<PathBuf> {
        let mut pending: VecDeque<OsString> = rel
            .parent()
            .into_iter()
            .flat_map(|p| p.iter().map(OsStr::to_owned))
            .collect();
        let mut resolved = PathBuf::new();
        let mut hops = 0;
        while let Some(component) = pending.pop_front() {
            if component == ".." {
                // Like the kernel, `..` at the root stays at the root.
                resolved.pop();
                continue;
            }
            let candidate = resolved.join(&component);
            let host = self.root.join(&candidate);
            match fs::symlink_metadata(&host) {
                Ok(m) if m.file_type().is_symlink() => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(invalid(format!(
                            "too many symlink levels resolving {}",
                            rel.display()
                        )));
                    }
                    let target = fs::read_link(&host)?;
                    if target.is_absolute() {
                        resolved = PathBuf::new();
                    }
                    for part in target.components().rev() {
                        match part {
                            Component::Normal(c) => pending.push_front(c.to_owned()),
                            Component::ParentDir => pending.push_front(OsString::from("..")),
                            _ => {}
                        }
                    }
                }
                Ok(m) if m.is_dir() => resolved = candidate,
                Ok(_) => {
                    return Err(invalid(format!(
                        "{} is not a directory (in {})",
                        candidate.display(),
                        rel.display()
                    )))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::DirBuilder::new().mode(0o755).create(&host)?;
                    self.manifest.entry(candidate.clone()).or_insert(Meta {
                        kind: Kind::Dir,
                        mode: 0o755,
                        uid: 0,
                        gid: 0,
                    });
                    resolved = candidate;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(resolved)
    }

    fn forget(&mut self, rel: &Path) {
        let doomed: Vec<PathBuf> = self
            .manifest
            .range(rel.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(rel))
            .map(|(p, _)| p.clone())
            .collect();
        for p in doomed {
            self.manifest.remove(&p);
        }
    }

    /// Applies one layer (an uncompressed tar stream) on top of what is there.
    pub fn apply_layer<R: Read>(&mut self, layer: R) -> io::Result<()> {
        self.this_layer.clear();
        let mut archive = tar::Archive::new(layer);
        for entry in archive.entries()? {
            let mut entry = entry?;
            self.entries += 1;
            if self.entries > self.limits.image_max_entries {
                return Err(invalid(format!(
                    "the image has more than {} entries, the limit image_max_entries; if you trust \
                     this image, raise it: Options(image_max_entries=...)",
                    self.limits.image_max_entries
                )));
            }
            let raw_path = entry.path()?.into_owned();
            let rel = normalise(&raw_path)?;
            let header = entry.header();
            let meta = Meta {
                kind: Kind::File,
                mode: header.mode()? & 0o7777,
                uid: header.uid()? as u32,
                gid: header.gid()? as u32,
            };
            if rel.as_os_str().is_empty() {
                // The root directory's own entry ("./").
                self.manifest.insert(
                    PathBuf::new(),
                    Meta {
                        kind: Kind::Dir,
                        ..meta
                    },
                );
                continue;
            }
            let name = rel
                .file_name()
                .expect("normalised path has a name")
                .to_owned();
            let parent = self.resolve_parent(&rel)?;
            let target = parent.join(&name);
            let host = self.root.join(&target);
            let name_str = name.to_string_lossy();

            if name_str == OPAQUE_WHITEOUT {
                self.clear_directory(&parent)?;
                continue;
            }
            if let Some(hidden) = whiteout_target(&name_str)? {
                let doomed = parent.join(hidden);
                remove_any(&self.root.join(&doomed))?;
                self.forget(&doomed);
                continue;
            }

            let entry_type = header.entry_type();
            let existing = fs::symlink_metadata(&host).ok();
            let keep_existing_dir =
                entry_type == EntryType::Directory && existing.as_ref().is_some_and(|m| m.is_dir());
            if !keep_existing_dir && existing.is_some() {
                remove_any(&host)?;
                self.forget(&target);
            }
            let meta = match entry_type {
                EntryType::Directory => {
                    if !keep_existing_dir {
                        fs::DirBuilder::new().mode(0o755).create(&host)?;
                    }
                    Meta {
                        kind: Kind::Dir,
                        ..meta
                    }
                }
                EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                    // The size the header declares (for a GNU sparse entry, its expanded size)
                    // is checked before a byte is written; the copy is capped all the same.
                    let declared = entry.size();
                    self.reserve(&rel, declared)?;
                    let mut file = fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o644)
                        .open(&host)?;
                    let room = self.limits.image_max_bytes - self.written;
                    let copied =
                        io::copy(&mut (&mut entry).take(room.saturating_add(1)), &mut file)?;
                    if copied > room {
                        return Err(self
                            .limits
                            .too_many_bytes(&format!("{} takes the image to", rel.display())));
                    }
                    self.written += copied;
                    meta
                }
                EntryType::Symlink => {
                    let link = entry.link_name()?.ok_or_else(|| {
                        invalid(format!("symlink {} has no target", rel.display()))
                    })?;
                    std::os::unix::fs::symlink(&link, &host)?;
                    Meta {
                        kind: Kind::Symlink,
                        mode: 0o777,
                        ..meta
                    }
                }
                EntryType::Link => {
                    let link = entry.link_name()?.ok_or_else(|| {
                        invalid(format!("hard link {} has no target", rel.display()))
                    })?;
                    let link_rel = normalise(&link)?;
                    let link_parent = self.resolve_parent(&link_rel)?;
                    let source = link_parent.join(link_rel.file_name().unwrap_or_default());
                    let source_meta = *self.manifest.get(&source).ok_or_else(|| {
                        invalid(format!(
                            "hard link {} points at missing {}",
                            rel.display(),
                            link.display()
                        ))
                    })?;
                    if source_meta.kind.is_special() {
                        // No host file to link; record a second node with the same metadata.
                        source_meta
                    } else {
                        fs::hard_link(self.root.join(&source), &host)?;
                        source_meta
                    }
                }
                EntryType::Fifo => Meta {
                    kind: Kind::Fifo,
                    ..meta
                },
                EntryType::Char | EntryType::Block => {
                    let major = header.device_major().ok().flatten().unwrap_or(0);
                    let minor = header.device_minor().ok().flatten().unwrap_or(0);
                    let kind = if entry_type == EntryType::Char {
                        Kind::CharDevice { major, minor }
                    } else {
                        Kind::BlockDevice { major, minor }
                    };
                    Meta { kind, ..meta }
                }
                // PAX/GNU extension headers are consumed by the tar reader; others carry nothing.
                _ => continue,
            };
            if let Ok(mtime) = entry.header().mtime() {
                let time = filetime::FileTime::from_unix_time(mtime as i64, 0);
                let _ = filetime::set_symlink_file_times(&host, time, time);
            }
            self.manifest.insert(target.clone(), meta);
            self.this_layer.insert(target);
        }
        Ok(())
    }

    /// Opaque whiteout: hide everything lower layers put in `dir`.
    fn clear_directory(&mut self, dir: &Path) -> io::Result<()> {
        let host = self.root.join(dir);
        let Ok(entries) = fs::read_dir(&host) else {
            return Ok(());
        };
        for entry in entries {
            let child = dir.join(entry?.file_name());
            if !self.this_layer.contains(&child) {
                remove_any(&self.root.join(&child))?;
                self.forget(&child);
            }
        }
        // Special files live in the manifest only.
        let special: Vec<PathBuf> = self
            .manifest
            .iter()
            .filter(|(p, m)| {
                m.kind.is_special() && p.parent() == Some(dir) && !self.this_layer.contains(*p)
            })
            .map(|(p, _)| p.clone())
            .collect();
        for p in special {
            self.manifest.remove(&p);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn add(
        b: &mut tar::Builder<Vec<u8>>,
        path: &str,
        kind: EntryType,
        mode: u32,
        uid: u64,
        data: &[u8],
        link: Option<&str>,
    ) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(uid);
        h.set_size(data.len() as u64);
        if matches!(kind, EntryType::Char | EntryType::Block) {
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
        }
        if let Some(l) = link {
            b.append_link(&mut h, path, l).unwrap();
        } else {
            b.append_data(&mut h, path, data).unwrap();
        }
    }

    #[test]
    fn whiteouts_owners_and_escaping_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let mut u = Unpacker::new(&root).unwrap();
        u.apply_layer(
            &layer(|b| {
                add(b, "data/", EntryType::Directory, 0o755, 0, b"", None);
                add(
                    b,
                    "data/keep",
                    EntryType::Regular,
                    0o640,
                    1000,
                    b"keep",
                    None,
                );
                add(b, "data/gone", EntryType::Regular, 0o644, 0, b"x", None);
                add(b, "data/opq/old", EntryType::Regular, 0o644, 0, b"x", None);
                add(b, "data/secret", EntryType::Regular, 0o000, 0, b"s", None);
                add(b, "escape", EntryType::Symlink, 0o777, 0, b"", Some("/"));
                add(b, "dev/null", EntryType::Char, 0o666, 0, b"", None);
            })[..],
        )
        .unwrap();
        u.apply_layer(
            &layer(|b| {
                add(b, "data/.wh.gone", EntryType::Regular, 0o644, 0, b"", None);
                add(
                    b,
                    "data/opq/.wh..wh..opq",
                    EntryType::Regular,
                    0o644,
                    0,
                    b"",
                    None,
                );
                add(b, "data/opq/new", EntryType::Regular, 0o644, 0, b"n", None);
                add(
                    b,
                    "escape/tmp/canary",
                    EntryType::Regular,
                    0o644,
                    0,
                    b"c",
                    None,
                );
                add(
                    b,
                    "data/hard",
                    EntryType::Link,
                    0o644,
                    0,
                    b"",
                    Some("data/keep"),
                );
            })[..],
        )
        .unwrap();
        let m = u.into_manifest();
        assert_eq!(
            m[Path::new("data/keep")],
            Meta {
                kind: Kind::File,
                mode: 0o640,
                uid: 1000,
                gid: 1000
            }
        );
        assert_eq!(m[Path::new("data/hard")], m[Path::new("data/keep")]);
        assert!(!m.contains_key(Path::new("data/gone")) && !root.join("data/gone").exists());
        assert!(!m.contains_key(Path::new("data/opq/old")) && !root.join("data/opq/old").exists());
        assert!(root.join("data/opq/new").exists());
        assert_eq!(m[Path::new("data/secret")].mode, 0);
        assert_eq!(
            fs::read(root.join("data/secret")).unwrap(),
            b"s",
            "staged files stay readable"
        );
        assert_eq!(
            m[Path::new("dev/null")].kind,
            Kind::CharDevice { major: 1, minor: 3 }
        );
        // The write through the absolute symlink landed inside the root.
        assert_eq!(fs::read(root.join("tmp/canary")).unwrap(), b"c");
        assert!(m.contains_key(Path::new("tmp/canary")));
    }

    fn small_limits() -> ImageLimits {
        ImageLimits {
            image_max_bytes: 1 << 20,
            image_max_entries: 10,
        }
    }

    #[test]
    fn a_file_over_the_byte_limit_is_refused_and_no_more_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut u = Unpacker::new(dir.path()).unwrap();
        u.set_limits(small_limits());
        let big = vec![0u8; (1 << 20) + 1];
        let err = u
            .apply_layer(&layer(|b| add(b, "big", EntryType::Regular, 0o644, 0, &big, None))[..])
            .unwrap_err();
        assert!(err.to_string().contains("image_max_bytes"), "{err}");
        assert_eq!(u.written(), 0);
        assert!(
            !dir.path().join("big").exists(),
            "refused before it was created"
        );
    }

    #[test]
    fn a_huge_declared_size_fails_before_anything_is_written() {
        // A 1 TiB header with no data behind it: refused on the header alone.
        let dir = tempfile::tempdir().unwrap();
        let mut u = Unpacker::new(dir.path()).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_path("sparse-bomb").unwrap();
        h.set_size(1 << 40);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        let mut raw = h.as_bytes().to_vec();
        raw.extend_from_slice(&[0u8; 4096]);
        let err = u.apply_layer(&raw[..]).unwrap_err();
        assert!(
            err.to_string().contains("declared 1099511627776 bytes")
                && err.to_string().contains("image_max_bytes"),
            "{err}"
        );
        assert!(!dir.path().join("sparse-bomb").exists());
    }

    #[test]
    fn free_space_is_checked_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let mut u = Unpacker::new(dir.path()).unwrap();
        u.set_free_space(100);
        let err = u
            .apply_layer(&layer(|b| add(b, "f", EntryType::Regular, 0o644, 0, &[1; 200], None))[..])
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{err}");
        assert!(err.to_string().contains("not enough free space"), "{err}");
    }

    #[test]
    fn too_many_entries_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut u = Unpacker::new(dir.path()).unwrap();
        u.set_limits(small_limits());
        let err = u
            .apply_layer(
                &layer(|b| {
                    for i in 0..11 {
                        add(b, &format!("f{i}"), EntryType::Regular, 0o644, 0, b"", None);
                    }
                })[..],
            )
            .unwrap_err();
        assert!(err.to_string().contains("image_max_entries"), "{err}");
    }

    #[test]
    fn malformed_whiteouts_are_refused_and_delete_nothing() {
        for bad in [".wh.", ".wh..", ".wh...", "sub/.wh...", ".wh..wh.plnk"] {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("root");
            let canary = dir.path().join("canary");
            fs::write(&canary, b"c").unwrap();
            let mut u = Unpacker::new(&root).unwrap();
            u.apply_layer(
                &layer(|b| add(b, "sub/keep", EntryType::Regular, 0o644, 0, b"k", None))[..],
            )
            .unwrap();
            let err = u
                .apply_layer(&layer(|b| add(b, bad, EntryType::Regular, 0o644, 0, b"", None))[..])
                .unwrap_err();
            assert!(err.to_string().contains("malformed"), "{bad}: {err}");
            assert!(canary.exists() && root.join("sub/keep").exists(), "{bad}");
        }
    }

    #[test]
    fn names_debugfs_could_misread_are_refused() {
        for (name, why) in [
            (
                "a\nsif /etc/shadow mode 0777".to_owned(),
                "control character",
            ),
            ("tab\there".to_owned(), "control character"),
            ("x".repeat(256), "at most 255 bytes"),
            (vec!["y".repeat(255); 17].join("/"), "at most 4095 bytes"),
        ] {
            let err = normalise(Path::new(&name)).unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
        }
        assert!(normalise(Path::new(&"z".repeat(255))).is_ok());
    }

    #[test]
    fn parent_dir_entries_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut u = Unpacker::new(dir.path()).unwrap();
        let mut raw = layer(|b| add(b, "ok", EntryType::Regular, 0o644, 0, b"", None));
        // Patch the name field to "../x" (append_data refuses to write it).
        raw[..4].copy_from_slice(b"../x");
        raw[4..6].copy_from_slice(b"\0\0");
        let mut h = tar::Header::from_byte_slice(&raw[..512]).clone();
        h.set_cksum();
        raw[..512].copy_from_slice(h.as_bytes());
        let err = u.apply_layer(&raw[..]).unwrap_err();
        assert!(err.to_string().contains("escapes the root"), "{err}");
    }
}
