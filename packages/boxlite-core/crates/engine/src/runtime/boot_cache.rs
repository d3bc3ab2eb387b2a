//! Cached post-boot snapshots: a box created without a snapshot of its own, on an image and
//! VM shape booted before, is restored from a snapshot of such a box taken right after it
//! booted (before anything ran in it) instead of booting.
//!
//! An entry is keyed by everything the booted state depends on: the image (manifest digest
//! and base disk), the guest kernel, agent and QEMU, the accelerator and the guest's clock, the
//! vCPUs and memory, and whether the VM has a network device and how the guest's network is
//! configured. The first cold boot of a key only records that the key was seen; the second is
//! snapshotted once it booted (a one-off box pays nothing); every later one restores. Entries
//! are snapshots marked with their key ([`SnapshotInfo::boot_key`]), left out of
//! `snapshots.list()`. An entry that can no longer be restored (another kernel, agent or QEMU,
//! its image gone, damaged) is removed when a create meets it, and one no create used for a
//! week when any create looks in the cache, unless a box restored from it remains.
//! `BOXLITE_BOOT_CACHE=0` turns the cache off.
//!
//! Invariant: a box restored from an entry is as fresh as a booted one: the entry holds no
//! execution's trace (taken inside `create`, before the box is returned), and every restore
//! gets fresh kernel randomness, the host's clock and its own hostname.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::Runtime;
use crate::image::PreparedImage;
use crate::litebox::{LiteBox, Platform};
use crate::options::BoxOptions;
use crate::snapshot::SnapshotInfo;

/// How long a key's marker or entry is kept unused: a shape not booted again within it is a
/// one-off, whose next box starts over as a first boot; an entry no create restored within it
/// is of a shape no longer used, or of a key an older engine made.
const UNUSED_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Whether `path` was last modified more than [`UNUSED_TTL`] before `now`.
fn unused_for_long(path: &Path, now: SystemTime) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|modified| now.duration_since(modified).ok())
        .is_some_and(|age| age > UNUSED_TTL)
}

/// Removes the markers in `dir` unused for [`UNUSED_TTL`] at `now`, so that one-off shapes do
/// not pile up a file each for ever.
fn prune_seen_markers(dir: &Path, now: SystemTime) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if unused_for_long(&entry.path(), now) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The environment variable that turns the boot cache off (`0`).
pub const BOOT_CACHE_ENV: &str = "BOXLITE_BOOT_CACHE";

/// What a booted guest's state depends on (hashed into the key).
#[derive(Serialize)]
struct BootShape<'a> {
    image_digest: &'a str,
    base_disk: &'a PathBuf,
    versions: &'a crate::snapshot::Versions,
    accel: &'a str,
    clock: Option<&'static str>,
    cpus: u32,
    memory_mib: u32,
    network: bool,
    guest_network: Option<String>,
}

/// Whether the boot cache is on (`BOXLITE_BOOT_CACHE` is not `0`, `false` or `off`).
fn enabled() -> bool {
    !matches!(
        std::env::var(BOOT_CACHE_ENV).as_deref().map(str::trim),
        Ok("0" | "false" | "off")
    )
}

impl Runtime {
    /// The boot cache key of a box of `options` on `image`, or `None` when such a box does
    /// not use the cache (it has volumes, which a snapshot cannot hold, or the cache is off).
    pub(super) fn boot_cache_key(
        options: &BoxOptions,
        image: &PreparedImage,
        platform: &Platform,
    ) -> Option<String> {
        if !enabled() || !options.volumes.is_empty() || options.snapshot.is_some() {
            return None;
        }
        let versions = platform.versions().ok()?;
        let network = options.network();
        let shape = BootShape {
            image_digest: &image.manifest_digest,
            base_disk: &image.base_disk,
            versions: &versions,
            accel: platform.accel.accel.as_str(),
            clock: crate::boot::clock_flags(platform.accel.accel),
            cpus: options.cpus,
            memory_mib: options.memory_mib,
            network,
            guest_network: network
                .then(crate::network::guest_config)
                .flatten()
                .map(|net| net.cmdline()),
        };
        let text = serde_json::to_vec(&shape).expect("boot shape serialises");
        Some(hex::encode(&Sha256::digest(&text)[..16]))
    }

    /// The cached post-boot snapshot for `key`, checked restorable; a broken entry is removed
    /// (when no box uses it) and `None` returned.
    pub(super) async fn cached_boot(&self, key: &str, platform: &Platform) -> Option<SnapshotInfo> {
        let entries: Vec<SnapshotInfo> = self
            .snapshots
            .db
            .list()
            .ok()?
            .into_iter()
            .filter(|s| s.boot_key.is_some())
            .collect();
        let versions = platform.versions().ok()?;
        // Entries of another kernel, agent or QEMU are never met again (their keys differ), and
        // those of other keys no create restored for a week likely not either: removed here
        // once no box restored from them remains (an entry's directory is touched when used).
        let now = SystemTime::now();
        for stale in &entries {
            let reason = match stale.versions.mismatch(&versions) {
                Some(_) => "of other versions",
                None if stale.boot_key.as_deref() != Some(key)
                    && unused_for_long(&stale.dir, now) =>
                {
                    "unused for a week"
                }
                None => continue,
            };
            if self.remove_snapshot(&stale.id).is_ok() {
                tracing::info!(snapshot = %stale.id, reason, "removed a cached post-boot snapshot");
            }
        }
        let entry = entries
            .into_iter()
            .find(|s| s.boot_key.as_deref() == Some(key))?;
        let checked = entry.clone();
        let restorable = tokio::task::spawn_blocking(move || {
            checked.check_restorable(&versions)?;
            super::snapshot_image(checked).map(|_| ())
        })
        .await;
        match restorable {
            Ok(Ok(())) => {
                let touched = std::fs::File::open(&entry.dir).and_then(|d| d.set_modified(now));
                if let Err(e) = touched {
                    tracing::debug!(snapshot = %entry.id, error = %e, "boot cache entry not marked used");
                }
                Some(entry)
            }
            Ok(Err(e)) => {
                tracing::info!(snapshot = %entry.id, reason = %e, "a cached post-boot snapshot cannot be restored: removed");
                let _ = self.remove_snapshot(&entry.id);
                None
            }
            Err(_) => None,
        }
    }

    /// After the cold boot of `litebox` (nothing has run in it yet): snapshots it as the
    /// entry of `key` if a box of that key was booted before, or records that one was. A
    /// failure is logged, never the create's: the box runs either way.
    pub(super) async fn cache_boot(&self, litebox: &Arc<LiteBox>, key: &str) {
        let seen_dir = self.home.join("snapshots").join(".boot-keys-seen");
        let seen = seen_dir.join(key);
        if !seen.exists() {
            let _ = std::fs::create_dir_all(&seen_dir);
            prune_seen_markers(&seen_dir, SystemTime::now());
            let _ = std::fs::write(&seen, b"");
            return;
        }
        match litebox.snapshot_for_boot_cache(key).await {
            Ok(info) => {
                tracing::info!(snapshot = %info.id, key, "post-boot snapshot cached");
                let _ = std::fs::remove_file(&seen);
            }
            Err(e) => tracing::debug!(key, error = %e, "post-boot snapshot not cached"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_of_shapes_not_booted_again_within_a_week_are_pruned() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (old, recent) = (dir.path().join("old"), dir.path().join("recent"));
        for marker in [&old, &recent] {
            std::fs::write(marker, b"").expect("marker");
        }
        let eight_days_ago = SystemTime::now() - Duration::from_secs(8 * 24 * 3600);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .and_then(|f| f.set_modified(eight_days_ago))
            .expect("age the marker");
        prune_seen_markers(dir.path(), SystemTime::now());
        assert!(!old.exists(), "a week-old marker is removed");
        assert!(recent.exists(), "a recent one stays");
    }
}
