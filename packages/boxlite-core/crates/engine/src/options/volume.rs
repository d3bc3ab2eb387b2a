//! Volumes: host directories shared into a box (9p, `mapped-xattr`), their limits and checks.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `(host_path, guest_path, mode)`: a host directory shared into the box at `guest_path`;
/// mode `ro` is read-only for the box (enforced by QEMU as well as by the guest's mount).
/// What the box sets (owners, modes, device nodes, symlinks) is kept in extended attributes,
/// so files the box creates are plain files owned by the user running the box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub host_path: PathBuf,
    pub guest_path: String,
    /// `ro` or `rw`.
    pub mode: String,
}

/// Whether `dir`'s file system stores `user.*` extended attributes: QEMU's `mapped-xattr` 9p
/// model keeps the guest's owners, modes, device nodes and symlinks there.
fn stores_user_xattrs(dir: &std::path::Path) -> bool {
    match xattr::get(dir, "user.boxlite.probe") {
        Err(e) => e.raw_os_error() != Some(libc::EOPNOTSUPP),
        // Set or not: the file system keeps them.
        Ok(_) => true,
    }
}

/// Most volumes one box may have: each is a virtio device, and QEMU's `microvm` machine
/// without ACPI has eight device slots, of which the console channel, the entropy source and
/// the disk take three (see `hypervisor/qemu.rs`); the network takes a fourth.
pub const MAX_VOLUMES: usize = 5;

/// Most volumes a box with (`network`) or without a network device may have.
pub fn max_volumes(network: bool) -> usize {
    MAX_VOLUMES - usize::from(network)
}

/// Checks the volumes of a box: how many, host directories, box paths, modes, xattr support.
pub(super) fn validate_volumes(volumes: &[Volume], network: bool) -> Result<()> {
    let invalid = |msg: String| Err(Error::InvalidOption(msg));
    let most = max_volumes(network);
    if volumes.len() > most {
        let hint = if network {
            format!(" (or {MAX_VOLUMES} without the network)")
        } else {
            String::new()
        };
        return invalid(format!(
            "volumes: {} given, a box has room for at most {most}{hint}: share one parent directory instead of several",
            volumes.len()
        ));
    }
    let mut guest_paths = std::collections::HashSet::new();
    for v in volumes {
        if !v.host_path.is_dir() {
            return invalid(format!(
                "volumes: {} is not a directory on the host (volumes share directories; use copy_in for files)",
                v.host_path.display()
            ));
        }
        if !v.guest_path.starts_with('/')
            || v.guest_path == "/"
            || v.guest_path.split('/').any(|c| c == "..")
        {
            return invalid(format!(
                "volumes: the box path {:?} must be absolute, not / and without '..'",
                v.guest_path
            ));
        }
        if v.mode != "ro" && v.mode != "rw" {
            return invalid(format!(
                "volumes: mode {:?} for {}: use \"ro\" or \"rw\"",
                v.mode, v.guest_path
            ));
        }
        if v.mode == "rw" && !stores_user_xattrs(&v.host_path) {
            return invalid(format!(
                "volumes: {} is on a file system without user extended attributes, where a \
                 read-write volume keeps the box's owners, modes and special files (never on \
                 the host's files): share a directory on ext4, xfs, btrfs or tmpfs, or mount \
                 this one \"ro\"",
                v.host_path.display()
            ));
        }
        if !guest_paths.insert(v.guest_path.trim_end_matches('/').to_owned()) {
            return invalid(format!("volumes: {} is mounted twice", v.guest_path));
        }
    }
    Ok(())
}
