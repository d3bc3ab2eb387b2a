//! Unpacking an item's archive as one path, confined to it: every entry is created relative to
//! a directory descriptor reached one component at a time with `O_NOFOLLOW` (no path is ever
//! resolved as a string), files are written under a temporary name and renamed into place only
//! once complete, hard links may only point to files this same unpack wrote, and the archive's
//! size (headers included) is capped before a byte of it is written.

use std::cell::Cell;
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

/// Bytes one entry's headers (its ustar header, GNU long names, pax records and the padding of
/// an entry that is skipped) may take: far more than any real path needs, little enough to
/// hold in memory.
pub const MAX_ENTRY_HEADER_BYTES: u64 = 1024 * 1024;

/// What an unpack keeps of the archive and how far it trusts the tree it writes into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnpackPolicy {
    /// The most bytes the archive may hold: file contents plus every entry's headers.
    pub max_bytes: u64,
    /// Owners from the archive (setting them needs root); otherwise files belong to the caller.
    pub preserve_owners: bool,
    /// setuid, setgid and sticky bits from the archive; otherwise modes are masked to `0o777`.
    pub special_mode_bits: bool,
    /// Device nodes and fifos are created; otherwise they (and anything else that is not a
    /// file, a directory or a link) are skipped and listed in [`UnpackReport::skipped`].
    pub special_files: bool,
    /// Symlinks met on the way to an entry are followed, as a plain `tar x` does; otherwise an
    /// entry is never written through a symlink, whether the archive made it or it was there.
    pub follow_symlinks: bool,
}

impl UnpackPolicy {
    /// For bytes the host must not trust (a box's `copy_out`): nothing written through a
    /// symlink, permission bits only, no special files, owners not kept, at most `max_bytes`.
    pub fn confined(max_bytes: u64) -> UnpackPolicy {
        UnpackPolicy {
            max_bytes,
            preserve_owners: false,
            special_mode_bits: false,
            special_files: false,
            follow_symlinks: false,
        }
    }

    /// For a trusted archive unpacked where its writer may put anything (`copy_in`, run inside
    /// the box): owners, full modes, device nodes and fifos kept, the tree's symlinks followed.
    pub fn trusted() -> UnpackPolicy {
        UnpackPolicy {
            max_bytes: u64::MAX,
            preserve_owners: true,
            special_mode_bits: true,
            special_files: true,
            follow_symlinks: true,
        }
    }
}

/// What an unpack did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnpackReport {
    /// Bytes of the archive consumed (headers and contents).
    pub bytes: u64,
    /// Entries written.
    pub entries: u64,
    /// Entries left out by the policy (special files), as `path (kind)`.
    pub skipped: Vec<String>,
}

/// Why an unpack stopped. Whatever it wrote before stays, but never a file with part of its
/// content under its own name.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The entry would write outside the item, through a symlink, or replace a directory.
    #[error("archive entry {entry:?} refused: {reason}")]
    Refused { entry: String, reason: String },
    /// The archive is larger than [`UnpackPolicy::max_bytes`].
    #[error(
        "the archive is over its size limit of {limit} bytes: {entry:?} needs {needed} more after {used} bytes"
    )]
    TooLarge {
        entry: String,
        needed: u64,
        used: u64,
        limit: u64,
    },
    /// The destination's file system has not enough free space for the entry.
    #[error("archive entry {entry:?} needs {needed} bytes but its destination has only {available} bytes free")]
    NoSpace {
        entry: String,
        needed: u64,
        available: u64,
    },
    /// Reading the archive or writing the tree failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl From<UnpackError> for io::Error {
    fn from(e: UnpackError) -> io::Error {
        let kind = match &e {
            UnpackError::Io { source, .. } => source.kind(),
            UnpackError::NoSpace { .. } => io::ErrorKind::StorageFull,
            UnpackError::TooLarge { .. } => io::ErrorKind::FileTooLarge,
            UnpackError::Refused { .. } => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> UnpackError {
    let context = context.into();
    move |source| UnpackError::Io { context, source }
}

fn errno_error(context: impl Into<String>) -> impl FnOnce(Errno) -> UnpackError {
    let context = context.into();
    move |errno| UnpackError::Io {
        context,
        source: errno.into(),
    }
}

/// The components of an entry's path below the item (its first component, the item's own
/// name, is dropped); absolute paths and `..` are refused.
pub fn entry_components(entry: &Path) -> Result<Vec<OsString>, UnpackError> {
    let refused = |reason: &str| UnpackError::Refused {
        entry: entry.display().to_string(),
        reason: reason.into(),
    };
    let mut parts = entry.components().filter(|c| *c != Component::CurDir);
    match parts.next() {
        Some(Component::Normal(_)) => {}
        Some(Component::RootDir | Component::Prefix(_)) => {
            return Err(refused("absolute paths are not allowed"))
        }
        Some(Component::ParentDir) => return Err(refused("`..` is not allowed")),
        Some(Component::CurDir) | None => return Err(refused("the entry has no name")),
    }
    parts
        .map(|part| match part {
            Component::Normal(p) => Ok(p.to_os_string()),
            _ => Err(refused("`..` is not allowed")),
        })
        .collect()
}

/// Counts what the archive reader consumes, and stops it when an entry's headers (read while
/// the next entry is parsed) grow past [`MAX_ENTRY_HEADER_BYTES`].
struct Metered<R> {
    inner: R,
    meter: Rc<Meter>,
}

#[derive(Default)]
struct Meter {
    total: Cell<u64>,
    /// Bytes read since [`Meter::begin_headers`], while `in_headers` is set.
    header_bytes: Cell<u64>,
    in_headers: Cell<bool>,
}

impl Meter {
    fn begin_headers(&self) {
        self.header_bytes.set(0);
        self.in_headers.set(true);
    }

    /// Ends the header phase; returns the bytes it read.
    fn end_headers(&self) -> u64 {
        self.in_headers.set(false);
        self.header_bytes.get()
    }
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut buf = buf;
        if self.meter.in_headers.get() {
            let left = MAX_ENTRY_HEADER_BYTES.saturating_sub(self.meter.header_bytes.get());
            if left == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "an entry's headers (long names, pax records, skipped data) exceed {MAX_ENTRY_HEADER_BYTES} bytes"
                    ),
                ));
            }
            let cap = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            buf = &mut buf[..cap];
        }
        let n = self.inner.read(buf)?;
        self.meter.total.set(self.meter.total.get() + n as u64);
        if self.meter.in_headers.get() {
            self.meter
                .header_bytes
                .set(self.meter.header_bytes.get() + n as u64);
        }
        Ok(n)
    }
}

/// Metadata a directory gets once everything below it is written.
struct DirMeta {
    rel: Vec<OsString>,
    mode: u32,
    mtime: Option<u64>,
    owner: Option<(u64, u64)>,
}

struct Unpacker<'a> {
    policy: &'a UnpackPolicy,
    /// The directory that holds the item (the caller's, trusted).
    root: OwnedFd,
    root_path: PathBuf,
    item: OsString,
    used: u64,
    /// Regular files this unpack wrote (paths relative to `root`): the only hard-link targets.
    files: HashSet<Vec<OsString>>,
    dirs: Vec<DirMeta>,
    /// The last parent directory walked to, as the same walk would find it again: this unpack
    /// never removes or replaces a directory.
    cached: Option<(Vec<OsString>, Rc<OwnedFd>)>,
    temp_counter: u64,
    report: UnpackReport,
}

/// Unpacks an item's tar stream (as [`super::pack_item`] writes it) as `target`, under
/// `policy`. `target`'s parent is the caller's and may be reached through symlinks (it is
/// created if missing); everything at and below `target` is governed by the policy.
/// Directories get their own metadata last, so a read-only one can still be filled.
pub fn unpack_item<R: Read>(
    reader: R,
    target: &Path,
    policy: &UnpackPolicy,
) -> Result<UnpackReport, UnpackError> {
    let item = target.file_name().ok_or_else(|| UnpackError::Refused {
        entry: target.display().to_string(),
        reason: "the destination has no file name".into(),
    })?;
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).map_err(io_error(format!("create {}", parent.display())))?;
    let root = rustix::fs::open(
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno_error(format!("open {}", parent.display())))?;
    let meter = Rc::new(Meter::default());
    let mut archive = tar::Archive::new(Metered {
        inner: reader,
        meter: meter.clone(),
    });
    let mut unpacker = Unpacker {
        policy,
        root,
        root_path: parent.to_path_buf(),
        item: item.to_os_string(),
        used: 0,
        files: HashSet::new(),
        dirs: Vec::new(),
        cached: None,
        temp_counter: 0,
        report: UnpackReport::default(),
    };
    let mut entries = archive.entries().map_err(io_error("reading the archive"))?;
    loop {
        meter.begin_headers();
        let next = entries.next();
        let header_bytes = meter.end_headers();
        unpacker.charge(header_bytes, "(headers)")?;
        let Some(entry) = next else { break };
        let entry = entry.map_err(io_error("reading the archive"))?;
        unpacker.entry(entry)?;
    }
    unpacker.finish_dirs()?;
    unpacker.report.bytes = meter.total.get();
    Ok(unpacker.report)
}

impl Unpacker<'_> {
    fn charge(&mut self, bytes: u64, entry: &str) -> Result<(), UnpackError> {
        let total = self.used.saturating_add(bytes);
        if total > self.policy.max_bytes {
            return Err(UnpackError::TooLarge {
                entry: entry.into(),
                needed: bytes,
                used: self.used,
                limit: self.policy.max_bytes,
            });
        }
        self.used = total;
        Ok(())
    }

    /// The path of `rel` (relative to the root) for messages.
    fn show(&self, rel: &[OsString]) -> String {
        let mut path = self.root_path.clone();
        for part in rel {
            path.push(part);
        }
        path.display().to_string()
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let path = entry
            .path()
            .map_err(io_error("reading an entry's name"))?
            .into_owned();
        let shown = path.display().to_string();
        let mut rel = vec![self.item.clone()];
        rel.extend(entry_components(&path)?);
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().unwrap_or(0o644);
        let mode = if self.policy.special_mode_bits {
            mode & 0o7777
        } else {
            mode & 0o777
        };
        let mtime = entry.header().mtime().ok();
        let owner = if self.policy.preserve_owners {
            match (entry.header().uid(), entry.header().gid()) {
                (Ok(uid), Ok(gid)) => Some((uid, gid)),
                _ => None,
            }
        } else {
            None
        };
        use tar::EntryType as T;
        match kind {
            T::Directory => {
                self.directory(&rel)?;
                self.dirs.push(DirMeta {
                    rel,
                    mode,
                    mtime,
                    owner,
                });
            }
            // A sparse file's size is its real size; its holes are read as zeros.
            T::Regular | T::Continuous | T::GNUSparse => {
                let size = entry.size();
                self.charge(size, &shown)?;
                self.file(&rel, &shown, size, mode, mtime, owner, &mut entry)?;
            }
            T::Symlink => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| UnpackError::Refused {
                        entry: shown.clone(),
                        reason: "a symlink without a target".into(),
                    })?
                    .into_owned();
                self.place(&rel, owner, |dir, temp| {
                    rustix::fs::symlinkat(OsStr::from_bytes(&link), dir, temp)
                })?;
                self.files.remove(&rel);
            }
            T::Link => {
                let link = entry
                    .link_name()
                    .map_err(io_error(format!("{shown}: reading its link target")))?
                    .ok_or_else(|| UnpackError::Refused {
                        entry: shown.clone(),
                        reason: "a hard link without a target".into(),
                    })?
                    .into_owned();
                let source = entry_components(&link).ok().map(|below| {
                    let mut source = vec![self.item.clone()];
                    source.extend(below);
                    source
                });
                let Some(source) = source.filter(|s| self.files.contains(s)) else {
                    return Err(UnpackError::Refused {
                        entry: shown,
                        reason: format!(
                            "a hard link may only point to a file this copy wrote earlier, not to {}",
                            link.display()
                        ),
                    });
                };
                if source != rel {
                    let (source_parent, source_name) = source.split_at(source.len() - 1);
                    let source_dir = self.walk(source_parent, false)?;
                    self.place(&rel, None, |dir, temp| {
                        rustix::fs::linkat(
                            &*source_dir,
                            &source_name[0],
                            dir,
                            temp,
                            AtFlags::empty(),
                        )
                    })?;
                    self.files.insert(rel);
                }
            }
            T::Char | T::Block | T::Fifo if self.policy.special_files => {
                let file_type = match kind {
                    T::Char => FileType::CharacterDevice,
                    T::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let major = entry.header().device_major().ok().flatten().unwrap_or(0);
                let minor = entry.header().device_minor().ok().flatten().unwrap_or(0);
                let dev = rustix::fs::makedev(major, minor);
                self.place(&rel, owner, |dir, temp| {
                    rustix::fs::mknodat(dir, temp, file_type, Mode::from_raw_mode(mode), dev)
                })?;
                self.files.remove(&rel);
            }
            T::Char | T::Block | T::Fifo => {
                let what = match kind {
                    T::Char => "character device",
                    T::Block => "block device",
                    _ => "fifo",
                };
                self.report.skipped.push(format!("{shown} ({what})"));
                return Ok(());
            }
            T::XGlobalHeader => return Ok(()),
            other => {
                return Err(UnpackError::Refused {
                    entry: shown,
                    reason: format!("unsupported entry type {:?}", other.as_byte() as char),
                })
            }
        }
        self.report.entries += 1;
        Ok(())
    }

    /// The directory `rel` (relative to the root), reached one component at a time; missing
    /// ones are created when `create` is set.
    fn walk(&mut self, rel: &[OsString], create: bool) -> Result<Rc<OwnedFd>, UnpackError> {
        if let Some((path, fd)) = &self.cached {
            if path.as_slice() == rel {
                return Ok(fd.clone());
            }
        }
        let mut flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        if !self.policy.follow_symlinks {
            flags |= OFlags::NOFOLLOW;
        }
        let mut dir: Option<OwnedFd> = None;
        for (i, part) in rel.iter().enumerate() {
            let at = dir.as_ref().map_or(self.root.as_fd(), |d| d.as_fd());
            let opened = match rustix::fs::openat(at, part, flags, Mode::empty()) {
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(at, part, Mode::from_raw_mode(0o700)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => {
                            return Err(errno_error(format!("mkdir {}", self.show(&rel[..=i])))(e))
                        }
                    }
                    rustix::fs::openat(at, part, flags, Mode::empty())
                }
                other => other,
            };
            dir = Some(match opened {
                Ok(fd) => fd,
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    return Err(UnpackError::Refused {
                        entry: self.show(&rel[..=i]),
                        reason:
                            "it is a symlink or not a directory, and nothing is written through one"
                                .into(),
                    })
                }
                Err(e) => return Err(errno_error(format!("open {}", self.show(&rel[..=i])))(e)),
            });
        }
        let fd = Rc::new(match dir {
            Some(fd) => fd,
            None => self
                .root
                .try_clone()
                .map_err(io_error(format!("dup {}", self.root_path.display())))?,
        });
        self.cached = Some((rel.to_vec(), fd.clone()));
        Ok(fd)
    }

    /// A directory entry: an existing directory is kept (a symlink to one only when the policy
    /// follows symlinks); a file or symlink in its place is replaced.
    fn directory(&mut self, rel: &[OsString]) -> Result<(), UnpackError> {
        let (parent, name) = rel.split_at(rel.len() - 1);
        let dir = self.walk(parent, true)?;
        let name = &name[0];
        let existing = rustix::fs::statat(&*dir, name, AtFlags::SYMLINK_NOFOLLOW);
        match existing {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => return Ok(()),
            Ok(st) => {
                let followed = FileType::from_raw_mode(st.st_mode) == FileType::Symlink
                    && self.policy.follow_symlinks
                    && rustix::fs::statat(&*dir, name, AtFlags::empty())
                        .is_ok_and(|t| FileType::from_raw_mode(t.st_mode) == FileType::Directory);
                if followed {
                    return Ok(());
                }
                rustix::fs::unlinkat(&*dir, name, AtFlags::empty())
                    .map_err(errno_error(format!("replace {}", self.show(rel))))?;
                self.files.remove(rel);
            }
            Err(Errno::NOENT) => {}
            Err(e) => return Err(errno_error(format!("stat {}", self.show(rel)))(e)),
        }
        rustix::fs::mkdirat(&*dir, name, Mode::from_raw_mode(0o700))
            .map_err(errno_error(format!("mkdir {}", self.show(rel))))
    }

    /// A name no entry uses, for an entry being built in `dir`.
    fn temp_name(&mut self) -> OsString {
        self.temp_counter += 1;
        OsString::from(format!(
            ".boxlite-partial-{}-{}",
            std::process::id(),
            self.temp_counter
        ))
    }

    /// Creates an entry with `make(dir, temp)` under a temporary name, sets its owner, and
    /// renames it over `rel` (never onto a directory).
    fn place(
        &mut self,
        rel: &[OsString],
        owner: Option<(u64, u64)>,
        make: impl FnOnce(&OwnedFd, &OsStr) -> Result<(), Errno>,
    ) -> Result<(), UnpackError> {
        let dir = self.walk(&rel[..rel.len() - 1], true)?;
        let temp = self.temp_name();
        make(&dir, &temp).map_err(errno_error(format!("create {}", self.show(rel))))?;
        let placed = (|| {
            if let Some(owner) = owner {
                chown(&dir, &temp, owner)?;
            }
            self.rename_into_place(&dir, &temp, rel)
        })();
        // Gone after a rename, except when it failed or renamed one link of a file onto another
        // of the same file (which leaves both).
        let _ = rustix::fs::unlinkat(&*dir, &temp, AtFlags::empty());
        placed
    }

    fn rename_into_place(
        &self,
        dir: &OwnedFd,
        temp: &OsStr,
        rel: &[OsString],
    ) -> Result<(), UnpackError> {
        let name = &rel[rel.len() - 1];
        match rustix::fs::renameat(dir, temp, dir, name) {
            Ok(()) => Ok(()),
            Err(Errno::ISDIR | Errno::NOTEMPTY | Errno::EXIST) => Err(UnpackError::Refused {
                entry: self.show(rel),
                reason: "a directory is there already; it is never replaced".into(),
            }),
            Err(e) => Err(errno_error(format!("rename into {}", self.show(rel)))(e)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn file(
        &mut self,
        rel: &[OsString],
        shown: &str,
        size: u64,
        mode: u32,
        mtime: Option<u64>,
        owner: Option<(u64, u64)>,
        data: &mut impl Read,
    ) -> Result<(), UnpackError> {
        let (parent, _) = rel.split_at(rel.len() - 1);
        let dir = self.walk(parent, true)?;
        let space = rustix::fs::fstatvfs(&*dir)
            .map_err(errno_error(format!("statvfs {}", self.show(parent))))?;
        let available = space.f_bavail.saturating_mul(space.f_frsize);
        if size > available {
            return Err(UnpackError::NoSpace {
                entry: shown.into(),
                needed: size,
                available,
            });
        }
        let temp = self.temp_name();
        let fd = rustix::fs::openat(
            &*dir,
            &temp,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(errno_error(format!("create {}", self.show(rel))))?;
        let written = (|| {
            let mut file = File::from(fd);
            let copied = io::copy(data, &mut file)
                .map_err(io_error(format!("{shown}: reading its content")))?;
            if copied != size {
                return Err(UnpackError::Io {
                    context: format!("{shown}: the archive ended after {copied} of {size} bytes"),
                    source: io::ErrorKind::UnexpectedEof.into(),
                });
            }
            let fd = file.as_fd();
            if let Some(owner) = owner {
                fchown(fd, owner, || self.show(rel))?;
            }
            rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))
                .map_err(errno_error(format!("chmod {}", self.show(rel))))?;
            if let Some(mtime) = mtime {
                rustix::fs::futimens(fd, &times(mtime))
                    .map_err(errno_error(format!("set times of {}", self.show(rel))))?;
            }
            self.rename_into_place(&dir, &temp, rel)
        })();
        if written.is_err() {
            let _ = rustix::fs::unlinkat(&*dir, &temp, AtFlags::empty());
        }
        written?;
        self.files.insert(rel.to_vec());
        Ok(())
    }

    /// Gives directories their owners, modes and times, deepest first.
    fn finish_dirs(&mut self) -> Result<(), UnpackError> {
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.rel.len()));
        self.cached = None;
        for meta in dirs {
            let dir = self.walk(&meta.rel, false)?;
            if let Some(owner) = meta.owner {
                fchown(&*dir, owner, || self.show(&meta.rel))?;
            }
            rustix::fs::fchmod(&*dir, Mode::from_raw_mode(meta.mode))
                .map_err(errno_error(format!("chmod {}", self.show(&meta.rel))))?;
            if let Some(mtime) = meta.mtime {
                rustix::fs::futimens(&*dir, &times(mtime)).map_err(errno_error(format!(
                    "set times of {}",
                    self.show(&meta.rel)
                )))?;
            }
            self.cached = None;
        }
        Ok(())
    }
}

/// The archive's owner as ids to set, unless it is out of range (or -1, "unchanged").
fn ids(uid: u64, gid: u64) -> Option<(rustix::fs::Uid, rustix::fs::Gid)> {
    let (uid, gid) = (u32::try_from(uid).ok()?, u32::try_from(gid).ok()?);
    (uid != u32::MAX && gid != u32::MAX).then(|| {
        (
            rustix::fs::Uid::from_raw(uid),
            rustix::fs::Gid::from_raw(gid),
        )
    })
}

/// Sets the owner of `name` in `dir`, not following a symlink.
fn chown(dir: &OwnedFd, name: &OsStr, owner: (u64, u64)) -> Result<(), UnpackError> {
    let Some((uid, gid)) = ids(owner.0, owner.1) else {
        return Ok(());
    };
    rustix::fs::chownat(dir, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)
        .map_err(errno_error(format!("chown {}", Path::new(name).display())))
}

/// Sets the owner of an open file or directory.
fn fchown(
    fd: impl AsFd,
    owner: (u64, u64),
    shown: impl FnOnce() -> String,
) -> Result<(), UnpackError> {
    let Some((uid, gid)) = ids(owner.0, owner.1) else {
        return Ok(());
    };
    rustix::fs::fchown(fd, Some(uid), Some(gid))
        .map_err(|e| errno_error(format!("chown {}", shown()))(e))
}

fn times(mtime: u64) -> Timestamps {
    let at = Timespec {
        tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX),
        tv_nsec: 0,
    };
    Timestamps {
        last_access: at,
        last_modification: at,
    }
}
