//! A regular file: checked against its destination's free space, written under a temporary
//! name with its mode, owner and time, and renamed into place only once complete.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;

use rustix::fs::{AtFlags, Mode, OFlags};

use super::metadata::{fchown, times};
use super::{errno_error, io_error, UnpackError, Unpacker};

impl Unpacker<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn file(
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
}
