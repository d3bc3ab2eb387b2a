//! Why an unpack stopped ([`UnpackError`]), its `io::Error` kind, and the helpers that wrap an
//! I/O failure with what was being done.

use std::io;

use rustix::io::Errno;

/// Why an unpack stopped. Whatever it wrote before stays, but never a file with part of its
/// content under its own name.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The entry would write outside the item, through a symlink, or replace a directory.
    #[error("archive entry {entry:?} refused: {reason}")]
    Refused { entry: String, reason: String },
    /// The archive is larger than [`UnpackPolicy::max_bytes`](super::UnpackPolicy::max_bytes).
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

pub(super) fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> UnpackError {
    let context = context.into();
    move |source| UnpackError::Io { context, source }
}

pub(super) fn errno_error(context: impl Into<String>) -> impl FnOnce(Errno) -> UnpackError {
    let context = context.into();
    move |errno| UnpackError::Io {
        context,
        source: errno.into(),
    }
}
