//! The confined walk: directories reached one component at a time from the caller's directory
//! (`O_NOFOLLOW` unless the policy follows symlinks), directory entries made without replacing
//! one, and entries built under a temporary name and renamed into place.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::metadata::chown;
use super::{errno_error, io_error, UnpackError, Unpacker};

impl Unpacker<'_> {
    /// The directory `rel` (relative to the root), reached one component at a time; missing
    /// ones are created when `create` is set.
    pub(super) fn walk(
        &mut self,
        rel: &[OsString],
        create: bool,
    ) -> Result<Rc<OwnedFd>, UnpackError> {
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
    pub(super) fn directory(&mut self, rel: &[OsString]) -> Result<(), UnpackError> {
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
    pub(super) fn temp_name(&mut self) -> OsString {
        self.temp_counter += 1;
        OsString::from(format!(
            ".boxlite-partial-{}-{}",
            std::process::id(),
            self.temp_counter
        ))
    }

    /// Creates an entry with `make(dir, temp)` under a temporary name, sets its owner, and
    /// renames it over `rel` (never onto a directory).
    pub(super) fn place(
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

    pub(super) fn rename_into_place(
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
}
