//! Entry paths: normalised to components relative to the root (no `..`, no control
//! characters, names and paths within ext4's limits), and parents resolved inside the root,
//! following symlinks as the guest would.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use super::{invalid, Kind, Meta, Unpacker};

pub(super) const MAX_SYMLINK_HOPS: usize = 40;
/// Longest file name component ext4 (and Linux) accepts.
pub const MAX_NAME_BYTES: usize = 255;
/// Longest path (relative to the root) an image may hold: Linux's `PATH_MAX` less the NUL.
pub const MAX_PATH_BYTES: usize = 4095;
/// Normalises a tar entry path to components relative to the root; `..` is refused, and so
/// are names with control characters, components over [`MAX_NAME_BYTES`] and paths over
/// [`MAX_PATH_BYTES`].
pub(super) fn normalise(path: &Path) -> io::Result<PathBuf> {
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
impl Unpacker {
    /// Resolves `rel`'s parent directories inside the root, following symlinks as the guest
    /// would (absolute targets restart at the root, `..` stops at the root), creating missing
    /// directories. Returns the resolved relative path of the parent.
    pub(super) fn resolve_parent(&mut self, rel: &Path) -> io::Result<PathBuf> {
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
}
