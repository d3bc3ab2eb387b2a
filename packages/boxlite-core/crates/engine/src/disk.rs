//! Per-box disks: a qcow2 copy-on-write overlay on the image's read-only base disk, so creating
//! a box copies nothing and everything the box writes stays in its own file.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};

fn qemu_img() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("BOXLITE_QEMU_IMG") {
        return Ok(PathBuf::from(path));
    }
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs.into_iter().map(|d| d.join("qemu-img")).find(|p| p.is_file()).ok_or_else(|| {
        Error::Disk("`qemu-img` not found: install it (Debian/Ubuntu: `sudo apt-get install qemu-utils`) or set BOXLITE_QEMU_IMG".into())
    })
}

/// Creates `overlay` (qcow2) backed by the raw `base` image.
pub fn create_overlay(base: &Path, overlay: &Path) -> Result<()> {
    let base = base
        .canonicalize()
        .map_err(|e| Error::Disk(format!("base disk {}: {e}", base.display())))?;
    let out = Command::new(qemu_img()?)
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(&base)
        .arg(overlay)
        .output()
        .map_err(|e| Error::Disk(format!("run qemu-img: {e}")))?;
    if !out.status.success() {
        return Err(Error::Disk(format!(
            "qemu-img could not create {}: {}",
            overlay.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}
