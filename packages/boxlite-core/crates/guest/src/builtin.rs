//! The agent's own operations, run in a forked child already chrooted into the box (see
//! `spawn::fork_run`): tar streams for `copy_in` and `copy_out`. Their data is the child's
//! stdin or stdout; errors go to stderr and make the exit code 1.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::FromRawFd;
use std::path::Path;

use boxlite_protocol::{archive, Builtin};

/// Runs `op`; returns the exit code.
pub fn run(op: &Builtin) -> i32 {
    let result = match op {
        Builtin::Unpack { dest, name } => unpack(Path::new(dest), name),
        Builtin::Pack { path } => pack(Path::new(path)),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            // SAFETY: fd 2 is the execution's stderr; ManuallyDrop keeps it open.
            let mut stderr = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(2) });
            let _ = writeln!(stderr, "{e}");
            1
        }
    }
}

fn unpack(dest: &Path, name: &str) -> io::Result<()> {
    // As `docker cp`: into an existing directory, else as the destination itself.
    let target = if dest.is_dir() {
        dest.join(name)
    } else {
        dest.to_path_buf()
    };
    if let Some(parent) = target.parent() {
        if !parent.as_os_str().is_empty() && !parent.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: no such directory in the box", parent.display()),
            ));
        }
    }
    // SAFETY: fd 0 is the execution's stdin; ManuallyDrop keeps it open.
    let stdin = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(0) });
    // The host's archive, in the box's own tree: kept as `docker cp` keeps it.
    archive::unpack_item(&*stdin, &target, &archive::UnpackPolicy::trusted())?;
    Ok(())
}

fn pack(path: &Path) -> io::Result<()> {
    let name = path
        .file_name()
        .map_or_else(|| "root".into(), |n| n.to_os_string());
    // SAFETY: fd 1 is the execution's stdout; ManuallyDrop keeps it open.
    let stdout = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(1) });
    archive::pack_item(
        io::BufWriter::with_capacity(64 * 1024, &*stdout),
        path,
        &name,
    )?;
    Ok(())
}
