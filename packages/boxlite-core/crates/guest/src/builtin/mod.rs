//! The agent's own operations, run in a forked child already chrooted into the box (see
//! `spawn::fork_run`), as the execution's user: tar streams for `copy_in` and `copy_out`, and
//! the file operations (read, write, list, stat). Their data is the child's stdin or stdout;
//! errors go to stderr, and the exit code says what failed (1 for the archives, a
//! [`FileFailure`](boxlite_protocol::files::FileFailure) code for the file operations).

mod archive;
mod files;

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::path::Path;

use boxlite_protocol::Builtin;

/// Runs `op`; returns the exit code.
pub fn run(op: &Builtin) -> i32 {
    let result = match op {
        Builtin::Unpack { dest, name } => {
            archive::unpack(Path::new(dest), name).map_err(files::Failure::archive)
        }
        Builtin::Pack { path } => archive::pack(Path::new(path)).map_err(files::Failure::archive),
        Builtin::ReadFile {
            path,
            offset,
            length,
            max_bytes,
        } => files::read(Path::new(path), *offset, *length, *max_bytes),
        Builtin::WriteFile {
            path,
            mode,
            parents,
            exclusive,
        } => files::write(Path::new(path), *mode, *parents, *exclusive),
        Builtin::ListDir { path, max_entries } => files::list(Path::new(path), *max_entries),
        Builtin::Stat {
            path,
            follow_symlinks,
        } => files::stat(Path::new(path), *follow_symlinks),
    };
    match result {
        Ok(()) => 0,
        Err(failure) => {
            // SAFETY: fd 2 is the execution's stderr; ManuallyDrop keeps it open.
            let mut stderr = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(2) });
            let _ = writeln!(stderr, "{}", failure.message);
            failure.exit_code
        }
    }
}
