//! Owners, modes and times: directories get theirs last (deepest first, so a read-only one
//! can still be filled); owners out of range are left as they are.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, Mode, Timespec, Timestamps};

use super::{errno_error, UnpackError, Unpacker};

impl Unpacker<'_> {
    /// Gives directories their owners, modes and times, deepest first.
    pub(super) fn finish_dirs(&mut self) -> Result<(), UnpackError> {
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
pub(super) fn ids(uid: u64, gid: u64) -> Option<(rustix::fs::Uid, rustix::fs::Gid)> {
    let (uid, gid) = (u32::try_from(uid).ok()?, u32::try_from(gid).ok()?);
    (uid != u32::MAX && gid != u32::MAX).then(|| {
        (
            rustix::fs::Uid::from_raw(uid),
            rustix::fs::Gid::from_raw(gid),
        )
    })
}

/// Sets the owner of `name` in `dir`, not following a symlink.
pub(super) fn chown(dir: &OwnedFd, name: &OsStr, owner: (u64, u64)) -> Result<(), UnpackError> {
    let Some((uid, gid)) = ids(owner.0, owner.1) else {
        return Ok(());
    };
    rustix::fs::chownat(dir, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)
        .map_err(errno_error(format!("chown {}", Path::new(name).display())))
}

/// Sets the owner of an open file or directory.
pub(super) fn fchown(
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

pub(super) fn times(mtime: u64) -> Timestamps {
    let at = Timespec {
        tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX),
        tv_nsec: 0,
    };
    Timestamps {
        last_access: at,
        last_modification: at,
    }
}
