//! One archive entry: its path below the item (no absolute paths, no `..`), and what each
//! entry type becomes under the policy (hard links only to files this unpack wrote, special
//! files created or skipped and reported).

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use rustix::fs::{AtFlags, FileType, Mode};

use super::{io_error, DirMeta, UnpackError, Unpacker};

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
impl Unpacker<'_> {
    pub(super) fn entry<R: Read>(
        &mut self,
        mut entry: tar::Entry<'_, R>,
    ) -> Result<(), UnpackError> {
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
}
