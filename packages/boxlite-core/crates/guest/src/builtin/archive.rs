//! Tar streams for `copy_in` (unpack stdin) and `copy_out` (pack to stdout).

use std::fs::File;
use std::io;
use std::os::fd::FromRawFd;
use std::path::Path;

use boxlite_protocol::archive;

pub(super) fn unpack(dest: &Path, name: &str) -> io::Result<()> {
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

pub(super) fn pack(path: &Path) -> io::Result<()> {
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
