//! Per-box disks: a qcow2 copy-on-write overlay on the image's read-only base disk, so creating
//! a box copies nothing and everything the box writes stays in its own file.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::Error;

/// Why a box's disk could not be created.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("`qemu-img` not found: install it (Debian/Ubuntu: `sudo apt-get install qemu-utils`) or set BOXLITE_QEMU_IMG")]
    QemuImgNotFound,
    /// The base disk cannot be resolved (it is missing, or a path component is).
    #[error("base disk {}: {source}", .path.display())]
    BaseDisk {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("run qemu-img: {0}")]
    Run(#[source] std::io::Error),
    /// qemu-img ran and refused: its message.
    #[error("qemu-img could not create {}: {stderr}", .overlay.display())]
    Create { overlay: PathBuf, stderr: String },
}

impl From<DiskError> for Error {
    fn from(err: DiskError) -> Self {
        Error::Disk(err.to_string())
    }
}

fn qemu_img() -> Result<PathBuf, DiskError> {
    if let Some(path) = std::env::var_os("BOXLITE_QEMU_IMG") {
        return Ok(PathBuf::from(path));
    }
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .map(|d| d.join("qemu-img"))
        .find(|p| p.is_file())
        .ok_or(DiskError::QemuImgNotFound)
}

/// Creates `overlay` (qcow2) backed by the raw `base` image.
pub fn create_overlay(base: &Path, overlay: &Path) -> Result<(), DiskError> {
    create_overlay_on(base, "raw", overlay)
}

/// Creates `overlay` (qcow2) backed by the qcow2 disk `frozen` (a snapshot's disk, itself an
/// overlay on an image's base disk), which it never writes.
pub fn create_overlay_on_qcow2(frozen: &Path, overlay: &Path) -> Result<(), DiskError> {
    create_overlay_on(frozen, "qcow2", overlay)
}

/// Creates `target`, an empty qcow2 on the backing file of the qcow2 `overlay` (a box's disk,
/// which its VMM may hold open: read without taking its lock).
pub fn create_sibling_overlay(overlay: &Path, target: &Path) -> Result<(), DiskError> {
    let out = Command::new(qemu_img()?)
        .args(["info", "-U", "--output=json"])
        .arg(overlay)
        .output()
        .map_err(DiskError::Run)?;
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let text = |key: &str| info.get(key).and_then(serde_json::Value::as_str);
    let (Some(backing), Some(format)) = (
        text("full-backing-filename"),
        text("backing-filename-format"),
    ) else {
        return Err(DiskError::Create {
            overlay: target.to_owned(),
            stderr: format!(
                "{} has no backing file ({})",
                overlay.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    };
    create_overlay_on(Path::new(backing), format, target)
}

fn create_overlay_on(base: &Path, format: &str, overlay: &Path) -> Result<(), DiskError> {
    let base = base.canonicalize().map_err(|source| DiskError::BaseDisk {
        path: base.to_owned(),
        source,
    })?;
    let out = Command::new(qemu_img()?)
        .args(["create", "-q", "-f", "qcow2", "-F", format, "-b"])
        .arg(&base)
        .arg(overlay)
        .output()
        .map_err(DiskError::Run)?;
    if !out.status.success() {
        return Err(DiskError::Create {
            overlay: overlay.to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_base_disk_names_it_in_the_disk_error() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("missing.raw");
        let err = create_overlay(&base, &dir.path().join("disk.qcow2")).unwrap_err();
        assert!(matches!(err, DiskError::BaseDisk { .. }), "{err:?}");
        let message = Error::from(err).to_string();
        assert!(
            message.starts_with(&format!("disk error: base disk {}: ", base.display())),
            "{message}"
        );
    }
}
