//! Engine errors. Each variant names the problem and, where there is one, the fix; the Python
//! bindings map each kind to its own exception class.

use std::path::PathBuf;

use boxlite_protocol::files::FileFailure;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("QEMU is not installed: `{binary}` was not found on PATH. Install it (Debian/Ubuntu: `sudo apt-get install qemu-system-x86`; Fedora: `sudo dnf install qemu-system-x86`) or set BOXLITE_QEMU to its path")]
    QemuNotFound { binary: String },

    /// passt (the user-mode network of a box) is missing; Python adds this host's install command.
    #[error("networking needs passt, which is not installed: {0}. Install it (Debian/Ubuntu: `sudo apt-get install passt`; Fedora: `sudo dnf install passt`; Arch: `sudo pacman -S passt`), set BOXLITE_PASST to its path, or create the box with its network disabled (SecurityOptions(network_enabled=False), `--network none`)")]
    PasstNotFound(String),

    #[error("no usable hardware accelerator: {0}")]
    Accelerator(String),

    #[error("guest kernel or initramfs missing: {0}. The boxlite-core package was built without its guest files; rebuild it with `make guest` or set BOXLITE_GUEST_DIR")]
    GuestAssets(String),

    #[error("image error for {image}: {reason}")]
    Image { image: String, reason: String },

    #[error("not an OCI image layout: {path}: {reason}. Point rootfs_path at a directory holding `oci-layout`, `index.json` and `blobs/` (e.g. `skopeo copy docker://IMAGE oci:DIR:TAG`)")]
    NotOciLayout { path: PathBuf, reason: String },

    #[error("invalid option: {0}")]
    InvalidOption(String),

    /// A name or a box is already taken: a box with that name exists, or another process owns
    /// the box. Python raises it as a subclass of the invalid-option class, as it once was.
    #[error("invalid option: {0}")]
    Conflict(String),

    #[error("no box with id or name '{0}'")]
    BoxNotFound(String),

    #[error("box {id} is {state}: {action} needs a running box. Start it again with `start()` or create a new box")]
    BoxNotRunning {
        id: String,
        state: String,
        action: String,
    },

    /// The box is paused: what was asked needs its vCPUs running. Raised as the stopped-box
    /// class in Python (a paused box is not running).
    #[error("box {id} is paused: {action} needs a running box. Resume it first with `resume()`")]
    BoxPaused { id: String, action: String },

    /// The VMM's control channel (QMP) failed or refused a command.
    #[error("box {id}: {reason}")]
    Vmm { id: String, reason: String },

    #[error("box {id} failed to boot: {reason}")]
    BootFailed { id: String, reason: String },

    #[error("box {id} stopped unexpectedly: {reason}")]
    BoxDied { id: String, reason: String },

    #[error("guest channel error for box {id}: {reason}")]
    Channel { id: String, reason: String },

    #[error("disk error: {0}")]
    Disk(String),

    /// A snapshot could not be taken or must not be restored (why, and the fix).
    #[error("{0}")]
    Snapshot(String),

    #[error("no snapshot with name or id '{0}': see `runtime.snapshots.list()` for the snapshots of this home")]
    SnapshotNotFound(String),

    #[error("{0}")]
    Copy(String),

    #[error("{0}")]
    StdinClosed(String),

    /// A file operation in the box (`read_file`, `write_file`, `list_dir`, `stat`) failed;
    /// `failure` says why, and the bindings raise the matching `OSError` subclass.
    #[error("{message}")]
    File {
        failure: FileFailure,
        message: String,
    },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The kind of an [`Error`], without its details: what the bindings key their exception
/// classes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    QemuNotFound,
    PasstNotFound,
    Accelerator,
    GuestAssets,
    Image,
    NotOciLayout,
    InvalidOption,
    Conflict,
    BoxNotFound,
    BoxNotRunning,
    BootFailed,
    BoxDied,
    Channel,
    Disk,
    Snapshot,
    SnapshotNotFound,
    Copy,
    StdinClosed,
    FileNotFound,
    FileIsADirectory,
    FileNotADirectory,
    FilePermission,
    FileExists,
    FileTooLarge,
    FileOther,
    Io,
}

impl ErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; 26] = [
        ErrorKind::QemuNotFound,
        ErrorKind::PasstNotFound,
        ErrorKind::Accelerator,
        ErrorKind::GuestAssets,
        ErrorKind::Image,
        ErrorKind::NotOciLayout,
        ErrorKind::InvalidOption,
        ErrorKind::Conflict,
        ErrorKind::BoxNotFound,
        ErrorKind::BoxNotRunning,
        ErrorKind::BootFailed,
        ErrorKind::BoxDied,
        ErrorKind::Channel,
        ErrorKind::Disk,
        ErrorKind::Snapshot,
        ErrorKind::SnapshotNotFound,
        ErrorKind::Copy,
        ErrorKind::StdinClosed,
        ErrorKind::FileNotFound,
        ErrorKind::FileIsADirectory,
        ErrorKind::FileNotADirectory,
        ErrorKind::FilePermission,
        ErrorKind::FileExists,
        ErrorKind::FileTooLarge,
        ErrorKind::FileOther,
        ErrorKind::Io,
    ];
}

impl Error {
    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::QemuNotFound { .. } => ErrorKind::QemuNotFound,
            Error::PasstNotFound(_) => ErrorKind::PasstNotFound,
            Error::Accelerator(_) => ErrorKind::Accelerator,
            Error::GuestAssets(_) => ErrorKind::GuestAssets,
            Error::Image { .. } => ErrorKind::Image,
            Error::NotOciLayout { .. } => ErrorKind::NotOciLayout,
            Error::InvalidOption(_) => ErrorKind::InvalidOption,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::BoxNotFound(_) => ErrorKind::BoxNotFound,
            Error::BoxNotRunning { .. } | Error::BoxPaused { .. } => ErrorKind::BoxNotRunning,
            Error::Vmm { .. } => ErrorKind::Channel,
            Error::BootFailed { .. } => ErrorKind::BootFailed,
            Error::BoxDied { .. } => ErrorKind::BoxDied,
            Error::Channel { .. } => ErrorKind::Channel,
            Error::Disk(_) => ErrorKind::Disk,
            Error::Snapshot(_) => ErrorKind::Snapshot,
            Error::SnapshotNotFound(_) => ErrorKind::SnapshotNotFound,
            Error::Copy(_) => ErrorKind::Copy,
            Error::StdinClosed(_) => ErrorKind::StdinClosed,
            Error::File { failure, .. } => match failure {
                FileFailure::NotFound => ErrorKind::FileNotFound,
                FileFailure::IsADirectory => ErrorKind::FileIsADirectory,
                FileFailure::NotADirectory => ErrorKind::FileNotADirectory,
                FileFailure::PermissionDenied => ErrorKind::FilePermission,
                FileFailure::AlreadyExists => ErrorKind::FileExists,
                FileFailure::TooLarge => ErrorKind::FileTooLarge,
                FileFailure::Other => ErrorKind::FileOther,
            },
            Error::Io { .. } => ErrorKind::Io,
        }
    }
}

/// Adds a description of what was being done to an I/O error.
pub trait IoContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: what(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_kind_once() {
        let kinds: std::collections::HashSet<ErrorKind> = ErrorKind::ALL.into_iter().collect();
        assert_eq!(kinds.len(), ErrorKind::ALL.len());
    }

    #[test]
    fn a_conflict_reads_as_the_invalid_option_it_was() {
        let err = Error::Conflict("a box named \"x\" already exists".into());
        assert_eq!(err.kind(), ErrorKind::Conflict);
        assert_eq!(
            err.to_string(),
            "invalid option: a box named \"x\" already exists"
        );
    }
}
