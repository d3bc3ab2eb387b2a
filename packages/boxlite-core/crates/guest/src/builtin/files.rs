//! File operations for the host's `read_file`, `write_file`, `list_dir` and `stat`: no shell,
//! no program of the image, the data on stdin/stdout, and an exit code that says what failed
//! ([`FileFailure`]).

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::fd::FromRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use boxlite_protocol::encode_frame;
use boxlite_protocol::files::{FileFailure, FileInfo, FileKind};

/// A failed builtin: its exit code and the message for stderr.
pub(super) struct Failure {
    pub exit_code: i32,
    pub message: String,
}

impl Failure {
    /// An archive builtin's failure: exit code 1, as `copy_in`/`copy_out` expect.
    pub fn archive(e: io::Error) -> Failure {
        Failure {
            exit_code: 1,
            message: e.to_string(),
        }
    }

    fn new(failure: FileFailure, message: String) -> Failure {
        Failure {
            exit_code: failure.exit_code(),
            message,
        }
    }

    /// `path: what went wrong`, with the kind the error stands for.
    fn io(path: &Path, e: io::Error) -> Failure {
        let failure = FileFailure::from_io(&e);
        let what = match failure {
            FileFailure::NotFound => "no such file or directory".to_owned(),
            FileFailure::IsADirectory => "is a directory".to_owned(),
            FileFailure::NotADirectory => "not a directory".to_owned(),
            FileFailure::PermissionDenied => "permission denied".to_owned(),
            FileFailure::AlreadyExists => "file exists".to_owned(),
            FileFailure::TooLarge | FileFailure::Other => e.to_string(),
        };
        Failure::new(failure, format!("{}: {what}", path.display()))
    }
}

type Result<T = ()> = std::result::Result<T, Failure>;

fn stdin() -> std::mem::ManuallyDrop<File> {
    // SAFETY: fd 0 is the execution's stdin; ManuallyDrop keeps it open.
    std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(0) })
}

fn stdout() -> std::mem::ManuallyDrop<File> {
    // SAFETY: fd 1 is the execution's stdout; ManuallyDrop keeps it open.
    std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(1) })
}

/// Copies the regular file `path` from `offset` to stdout: `length` bytes at most, or all
/// the rest, refused when that is more than `max_bytes` (before sending anything) or found to
/// be while reading (a file that grows, a /proc file whose size says 0).
pub(super) fn read(path: &Path, offset: u64, length: Option<u64>, max_bytes: u64) -> Result {
    // Non-blocking: opening a FIFO must not wait for a writer (it is refused below); reads
    // of a regular file ignore the flag.
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| Failure::io(path, e))?;
    let meta = file.metadata().map_err(|e| Failure::io(path, e))?;
    if meta.is_dir() {
        return Err(Failure::new(
            FileFailure::IsADirectory,
            format!("{}: is a directory", path.display()),
        ));
    }
    if !meta.is_file() {
        // A FIFO or a device may never end: refused rather than read.
        return Err(Failure::new(
            FileFailure::Other,
            format!("{}: not a regular file", path.display()),
        ));
    }
    let too_large = || {
        Failure::new(
            FileFailure::TooLarge,
            format!(
                "{}: larger than the {max_bytes} bytes a read may return",
                path.display()
            ),
        )
    };
    if length.is_none() && meta.len().saturating_sub(offset) > max_bytes {
        return Err(too_large());
    }
    if offset > 0 {
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| Failure::io(path, e))?;
    }
    let stdout = stdout();
    let mut out = BufWriter::with_capacity(64 * 1024, &*stdout);
    // Without a length, one byte past the cap tells a file that grew.
    let cap = length.map_or(max_bytes.saturating_add(1), |n| n.min(max_bytes));
    let copied = io::copy(&mut (&file).take(cap), &mut out).map_err(|e| Failure::io(path, e))?;
    if length.is_none() && copied > max_bytes {
        return Err(too_large());
    }
    out.flush().map_err(|e| Failure::io(path, e))
}

/// Writes stdin to `path`. A file it creates gets exactly `mode` (no umask); an existing one
/// keeps its mode and owner and is truncated, unless `exclusive` makes that a failure.
pub(super) fn write(path: &Path, mode: u32, parents: bool, exclusive: bool) -> Result {
    if parents {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Failure::io(parent, e))?;
        }
    }
    let created = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path);
    let file = match created {
        Ok(file) => {
            file.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(|e| Failure::io(path, e))?;
            file
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && !exclusive => OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)
            .map_err(|e| Failure::io(path, e))?,
        Err(e) => return Err(Failure::io(path, e)),
    };
    let mut out = BufWriter::with_capacity(64 * 1024, file);
    io::copy(&mut &*stdin(), &mut out).map_err(|e| Failure::io(path, e))?;
    out.into_inner()
        .map_err(|e| Failure::io(path, e.into_error()))?
        .sync_data()
        .map_err(|e| Failure::io(path, e))
}

/// Describes the entries of directory `path` on stdout, sorted by name; refuses a directory
/// of more than `max_entries` before sending anything.
pub(super) fn list(path: &Path, max_entries: u64) -> Result {
    let entries = std::fs::read_dir(path).map_err(|e| Failure::io(path, e))?;
    let mut infos = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Failure::io(path, e))?;
        if infos.len() as u64 >= max_entries {
            return Err(Failure::new(
                FileFailure::TooLarge,
                format!(
                    "{}: more than the {max_entries} entries a listing may return",
                    path.display()
                ),
            ));
        }
        let entry_path = entry.path();
        // An entry removed while the directory is read is skipped, as `ls` does.
        let Ok(meta) = std::fs::symlink_metadata(&entry_path) else {
            continue;
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        infos.push(describe(&entry_path, name, &meta));
    }
    infos.sort_by(|a, b| a.name.cmp(&b.name));
    send(&infos, path)
}

/// Describes `path` on stdout.
pub(super) fn stat(path: &Path, follow_symlinks: bool) -> Result {
    let meta = if follow_symlinks {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    }
    .map_err(|e| Failure::io(path, e))?;
    let name = path
        .file_name()
        .map_or_else(|| "/".into(), |n| n.to_string_lossy().into_owned());
    send(&[describe(path, name, &meta)], path)
}

fn describe(path: &Path, name: String, meta: &Metadata) -> FileInfo {
    let kind = if meta.is_symlink() {
        FileKind::Symlink
    } else if meta.is_dir() {
        FileKind::Directory
    } else if meta.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    };
    let link_target = (kind == FileKind::Symlink)
        .then(|| std::fs::read_link(path).ok())
        .flatten()
        .map(|t| t.to_string_lossy().into_owned());
    let mtime_ns = u64::try_from(meta.mtime())
        .ok()
        .and_then(|s| s.checked_mul(1_000_000_000))
        .and_then(|ns| ns.checked_add(u64::try_from(meta.mtime_nsec()).unwrap_or(0)))
        .unwrap_or(0);
    FileInfo {
        name,
        kind,
        size: meta.size(),
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime_ns,
        link_target,
    }
}

fn send(infos: &[FileInfo], path: &Path) -> Result {
    let stdout = stdout();
    let mut out = BufWriter::with_capacity(64 * 1024, &*stdout);
    for info in infos {
        let frame = encode_frame(info).map_err(|e| {
            Failure::new(
                FileFailure::Other,
                format!("{}: cannot describe: {e}", path.display()),
            )
        })?;
        out.write_all(&frame).map_err(|e| Failure::io(path, e))?;
    }
    out.flush().map_err(|e| Failure::io(path, e))
}
