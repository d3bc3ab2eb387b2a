//! The guest kernel and initramfs shipped with the package.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub const KERNEL_FILE: &str = "vmlinux";
pub const INITRD_FILE: &str = "initramfs.cpio";

#[derive(Debug, Clone)]
pub struct GuestAssets {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

impl GuestAssets {
    /// `BOXLITE_GUEST_DIR` if set, else `dir` (the Python package passes its `_guest` folder).
    pub fn locate(dir: Option<&Path>) -> Result<GuestAssets> {
        let dir = std::env::var_os("BOXLITE_GUEST_DIR")
            .map(PathBuf::from)
            .or_else(|| dir.map(Path::to_owned))
            .ok_or_else(|| Error::GuestAssets("no guest directory configured".into()))?;
        let assets = GuestAssets {
            kernel: dir.join(KERNEL_FILE),
            initrd: dir.join(INITRD_FILE),
        };
        for file in [&assets.kernel, &assets.initrd] {
            if !file.is_file() {
                return Err(Error::GuestAssets(format!(
                    "{} does not exist",
                    file.display()
                )));
            }
        }
        Ok(assets)
    }

    /// Identifies this build of the guest files (for caches keyed by them).
    pub fn fingerprint(&self) -> String {
        [&self.kernel, &self.initrd]
            .iter()
            .map(|p| {
                let m = std::fs::metadata(p).ok();
                let mtime = m
                    .as_ref()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
                format!(
                    "{}:{}",
                    m.map_or(0, |m| m.len()),
                    mtime.map_or(0, |d| d.as_secs())
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}
