//! The agent's own operations, run in a forked child already chrooted into the box (see
//! `spawn::fork_run`): tar streams for `copy_in` and `copy_out`. Their data is the child's
//! stdin or stdout; errors go to stderr and make the exit code 1.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::FromRawFd;
use std::path::{Component, Path, PathBuf};

use boxlite_protocol::Builtin;

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

/// A path inside the archive, relative and without `..`.
fn checked_relative(path: &Path) -> io::Result<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("archive entry {path:?} leaves its directory"),
                ))
            }
        }
    }
    Ok(out)
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
    let mut archive = tar::Archive::new(&*stdin);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    let mut directories = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let inside = checked_relative(&entry.path()?)?;
        // The first component is the copied item's own name; it becomes `target`.
        let rest: PathBuf = inside.components().skip(1).collect();
        // (Joining an empty path would add a trailing slash.)
        let path = if rest.as_os_str().is_empty() {
            target.clone()
        } else {
            target.join(&rest)
        };
        if entry.header().entry_type().is_dir() {
            std::fs::create_dir_all(&path)?;
            // Modes of directories are set at the end, so a read-only one can still be filled.
            directories.push((path, entry));
            continue;
        }
        entry
            .unpack(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    }
    for (path, mut entry) in directories.into_iter().rev() {
        entry.unpack(&path)?;
    }
    Ok(())
}

fn pack(path: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let name = path
        .file_name()
        .map_or_else(|| "root".into(), |n| n.to_os_string());
    // SAFETY: fd 1 is the execution's stdout; ManuallyDrop keeps it open.
    let stdout = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(1) });
    let mut builder = tar::Builder::new(io::BufWriter::with_capacity(64 * 1024, &*stdout));
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Complete);
    if meta.is_dir() {
        builder.append_dir_all(&name, path)?;
    } else {
        builder.append_path_with_name(path, &name)?;
    }
    let mut out = builder.into_inner()?;
    out.flush()?;
    Ok(())
}
