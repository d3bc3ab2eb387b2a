//! Hibernation: [`LiteBox::hibernate`] (`stop(keep_state=True)`) saves a kept box's whole
//! state into its own directory and ends its VMM; the next `start` (in any process of the
//! home) restores that state instead of booting, through the snapshot restore of `lifecycle`.
//!
//! The saved state lives in `<box dir>/hibernated/`: `state` (the VMM's device and memory
//! state, a QEMU migration to a file as a snapshot's is) and `snapshot.json` (a
//! [`SnapshotInfo`] describing it, never recorded in `db/snapshots.db`). The disk is the box's
//! own `disk.qcow2`, left as the VMM flushed it when the migration completed.
//!
//! Invariants: the state is never loaded unless its checksum and versions match (otherwise
//! `start` fails naming `start(discard_state=True)`); it is deleted as soon as the resumed
//! guest runs (its disk moves on from then, so the state would no longer match it, even if
//! the resume then fails to reach the agent: the next start boots from the disk), by
//! [`LiteBox::discard_hibernated_state`], and with the box's directory when the box is removed.
//! [`BoxInfo::hibernated`](super::BoxInfo) says whether a box holds one.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::{BoxStatus, LiteBox};
use crate::error::{Error, IoContext, Result};
use crate::snapshot::{self, SnapshotInfo, METADATA_FILE, STATE_FILE};

/// The folder of a box's directory that holds its hibernated state.
pub const HIBERNATED_DIR: &str = "hibernated";

impl LiteBox {
    fn hibernated_dir(&self) -> PathBuf {
        self.dir.join(HIBERNATED_DIR)
    }

    /// Whether the box holds a hibernated state that its next start resumes.
    pub fn is_hibernated(&self) -> bool {
        self.hibernated_dir().join(METADATA_FILE).is_file()
    }

    /// `stop(keep_state=True)`: saves the box's whole state (memory, devices; its disk stays
    /// its own) into its directory and ends its VMM. The box is then `stopped` with
    /// `hibernated` set, and its next start resumes it where it was. Refused, before anything
    /// stops, for a box removed when it stops (`auto_remove`) and a box with volumes. A paused
    /// box is saved as it is and runs again when resumed. A hibernated box is left as it is.
    pub async fn hibernate(&self) -> Result<()> {
        let _lifecycle = self.lifecycle.lock().await;
        if self.options.auto_remove {
            return Err(Error::InvalidOption(format!(
                "box {} is removed when it stops (auto_remove=True), its saved state with it: create it with auto_remove=False to stop it with keep_state=True",
                self.id
            )));
        }
        if !self.options.volumes.is_empty() {
            return Err(Error::Snapshot(format!(
                "box {} has volumes (host directories shared over 9p), whose state lives on the host: QEMU cannot save it with the VM, so it cannot be stopped with keep_state=True (nothing was stopped). Stop it without keep_state, or create it without volumes and copy files in with `copy_in()`",
                self.id
            )));
        }
        if self.status() == BoxStatus::Stopped && self.is_hibernated() {
            return Ok(()); // Already saved and stopped.
        }
        let (running, status) = self.running_or_paused("stop(keep_state=True)")?;
        let versions = self.platform.versions()?;
        let dir = self.hibernated_dir();
        remove_dir(&dir)?;
        std::fs::create_dir_all(&dir).context(|| format!("create {}", dir.display()))?;
        let was_paused = status == BoxStatus::Paused;
        let started = Instant::now();
        let saved = async {
            self.migrate_state_out(&running, was_paused, &dir, "stopped with keep_state=True")
                .await?;
            let took_ms = started.elapsed().as_millis() as u64;
            let state = dir.join(STATE_FILE);
            let checksum = tokio::task::spawn_blocking(move || snapshot::state_checksum(&state))
                .await
                .map_err(|e| Error::Snapshot(e.to_string()))?
                .context(|| format!("read {}", dir.join(STATE_FILE).display()))?;
            let info = SnapshotInfo {
                id: self.id.clone(),
                name: format!("hibernated state of box {}", self.id),
                source_box: self.id.clone(),
                image: self.image.reference.clone(),
                image_digest: self.image.manifest_digest.clone(),
                versions,
                kernel_release: running.kernel_release.clone(),
                cpus: self.options.cpus,
                memory_mib: self.options.memory_mib,
                network: self.options.network(),
                size_bytes: snapshot::allocated_bytes(&dir),
                created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                    .to_string(),
                checksum,
                took_ms,
                dir: dir.clone(),
                options: self.options.clone(),
                prepared_image: self.image.clone(),
                fork_of: None,
                memory_checksum: None,
                boot_key: None,
            };
            let path = dir.join(METADATA_FILE);
            let text = serde_json::to_vec_pretty(&info).expect("snapshot info serialises");
            std::fs::write(&path, text).context(|| format!("write {}", path.display()))?;
            Ok::<SnapshotInfo, Error>(info)
        }
        .await;
        let info = match saved {
            Ok(info) => info,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                if !was_paused {
                    // The box runs on as it was; a failure to resume is the box's, reported.
                    if let Err(resume) = self.control(&running, "cont").await {
                        tracing::warn!(id = %self.id, error = %resume, "could not resume the box after a failed hibernation");
                    } else {
                        running.agent.set_paused(false);
                    }
                }
                return Err(e);
            }
        };
        // The state is saved and the vCPUs are stopped: the VMM has nothing left to do.
        {
            let mut state = self.state.lock().expect("state lock");
            state.status = BoxStatus::Stopping;
            state.running = None;
        }
        running.stopping.store(true, Ordering::SeqCst);
        running.vm.kill();
        let _ = running.vm.exit_watch().wait_for(|e| e.is_some()).await;
        drop(running);
        self.state.lock().expect("state lock").status = BoxStatus::Stopped;
        tracing::info!(id = %self.id, took_ms = info.took_ms, size = info.size_bytes, "box hibernated");
        self.write_config()
    }

    /// Deletes the box's hibernated state, so that its next start boots from its disk (what
    /// ran in memory is lost; the disk is as it was when the state was saved, as after a power
    /// cut). Nothing to do for a box without one; refused while the box runs.
    pub async fn discard_hibernated_state(&self) -> Result<()> {
        let _lifecycle = self.lifecycle.lock().await;
        let status = self.status();
        if matches!(
            status,
            BoxStatus::Running | BoxStatus::Paused | BoxStatus::Stopping
        ) {
            return Err(Error::InvalidOption(format!(
                "box {} is {}: its saved state can be discarded only while it is stopped",
                self.id,
                status.as_str()
            )));
        }
        remove_dir(&self.hibernated_dir())?;
        let _ = self.write_config();
        Ok(())
    }

    /// The hibernated state the next start resumes, checked: `None` when there is none, an
    /// error naming the way out when it must not run (unreadable, damaged, other versions).
    pub(super) fn hibernated_state(&self) -> Result<Option<SnapshotInfo>> {
        let path = self.hibernated_dir().join(METADATA_FILE);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::Io {
                    context: format!("read {}", path.display()),
                    source: e,
                })
            }
        };
        let refuse = |why: String| {
            Error::Snapshot(format!(
                "box {} was stopped with keep_state=True, and its saved state {why}; it was not run. Start it with `start(discard_state=True)` (`boxlite start --discard-state`) to boot it from its disk instead (what ran in memory is lost), or remove the box",
                self.id
            ))
        };
        let info: SnapshotInfo = serde_json::from_slice(&text)
            .map_err(|e| refuse(format!("is unreadable ({}: {e})", path.display())))?;
        // The record names its own directory: the box's, wherever the box is now.
        let info = SnapshotInfo {
            dir: self.hibernated_dir(),
            ..info
        };
        if let Some(why) = info.versions.mismatch(&self.platform.versions()?) {
            return Err(refuse(format!("cannot be restored: {why}")));
        }
        let actual = snapshot::state_checksum(&info.state_file())
            .map_err(|e| refuse(format!("cannot be read ({e})")))?;
        if actual != info.checksum {
            return Err(refuse(format!(
                "is damaged: {} has sha256 {actual}, not the {} recorded when it was saved (truncated or modified)",
                info.state_file().display(),
                info.checksum
            )));
        }
        Ok(Some(info))
    }

    /// [`LiteBox::hibernated_state`] off the async threads (it hashes the state file).
    pub(super) async fn checked_hibernated_state(self: &Arc<Self>) -> Result<Option<SnapshotInfo>> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.hibernated_state())
            .await
            .map_err(|e| {
                Error::Snapshot(format!("checking the saved state of box {}: {e}", self.id))
            })?
    }

    /// Once the guest resumed from the hibernated state runs: delete it (the disk moves on).
    pub(super) fn forget_hibernated_state(&self) {
        if let Err(e) = remove_dir(&self.hibernated_dir()) {
            tracing::warn!(id = %self.id, error = %e, "could not delete the resumed box's saved state");
        }
    }
}

/// Removes `dir` and what it holds; nothing to do when it does not exist.
fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Io {
            context: format!("remove {}", dir.display()),
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    //! The refusals and the checks of a saved state, on a box that never boots (its platform
    //! launches no VM): what must hold before any VMM is launched.

    use super::*;
    use crate::assets::GuestAssets;
    use crate::hypervisor::accel::AccelChoice;
    use crate::hypervisor::{Accel, Hypervisor, VmHandle, VmSpec};
    use crate::image::PreparedImage;
    use crate::litebox::Platform;
    use crate::options::{BoxOptions, Volume};

    struct NoHypervisor;

    impl Hypervisor for NoHypervisor {
        fn name(&self) -> &'static str {
            "none"
        }

        fn check_available(&self) -> Result<()> {
            Ok(())
        }

        fn launch(&self, _spec: &VmSpec) -> Result<Box<dyn VmHandle>> {
            Err(Error::InvalidOption("unit tests boot no VM".into()))
        }
    }

    fn image(dir: &Path) -> PreparedImage {
        PreparedImage {
            reference: "test".into(),
            manifest_digest: "sha256:0".into(),
            base_disk: dir.join("base.raw"),
            env: Vec::new(),
            working_dir: None,
            user: None,
            entrypoint: Vec::new(),
            cmd: Vec::new(),
        }
    }

    /// A stopped box in `home`, with `options`, whose disk exists (as a kept box's does).
    fn stopped_box(home: &Path, options: BoxOptions) -> Arc<LiteBox> {
        for (name, text) in [("vmlinux", "kernel"), ("initramfs.cpio", "agent")] {
            std::fs::write(home.join(name), text).unwrap();
        }
        let platform = Arc::new(Platform {
            hypervisor: Arc::new(NoHypervisor),
            assets: GuestAssets {
                kernel: home.join("vmlinux"),
                initrd: home.join("initramfs.cpio"),
            },
            accel: AccelChoice {
                accel: Accel::Tcg,
                reason: "unit test".into(),
            },
            snapshots: Arc::new(crate::snapshot::SnapshotStore::open(home).unwrap()),
        });
        let dir = home.join("boxes").join("b1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("disk.qcow2"), b"").unwrap();
        let litebox = LiteBox::new("b1".into(), options, image(home), dir, platform);
        litebox.state.lock().unwrap().status = BoxStatus::Stopped;
        Arc::new(litebox)
    }

    fn kept() -> BoxOptions {
        BoxOptions {
            auto_remove: false,
            network_enabled: false,
            ..BoxOptions::default()
        }
    }

    /// Saves a state as `hibernate` leaves it: the state file and its record.
    fn save_state(litebox: &LiteBox, state: &[u8]) -> PathBuf {
        let dir = litebox.hibernated_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(STATE_FILE), state).unwrap();
        let info = SnapshotInfo {
            id: litebox.id.clone(),
            name: "hibernated".into(),
            source_box: litebox.id.clone(),
            image: "test".into(),
            image_digest: "sha256:0".into(),
            versions: litebox.platform.versions().unwrap(),
            kernel_release: "6.1".into(),
            cpus: 1,
            memory_mib: 256,
            network: false,
            size_bytes: 0,
            created_at: "2026-01-01T00:00:00Z".into(),
            checksum: snapshot::state_checksum(&dir.join(STATE_FILE)).unwrap(),
            took_ms: 0,
            // Recorded elsewhere (a moved home): the box's own directory counts.
            dir: PathBuf::from("/elsewhere"),
            options: litebox.options.clone(),
            prepared_image: litebox.image.clone(),
            fork_of: None,
            memory_checksum: None,
            boot_key: None,
        };
        std::fs::write(dir.join(METADATA_FILE), serde_json::to_vec(&info).unwrap()).unwrap();
        dir
    }

    #[tokio::test]
    async fn keep_state_is_refused_for_auto_remove_volumes_and_a_stopped_box() {
        let home = tempfile::tempdir().unwrap();
        let err = stopped_box(home.path(), BoxOptions::default())
            .hibernate()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidOption(_)), "{err:?}");
        assert!(err.to_string().contains("auto_remove=False"), "{err}");

        let home = tempfile::tempdir().unwrap();
        let with_volume = BoxOptions {
            volumes: vec![Volume {
                host_path: home.path().to_owned(),
                guest_path: "/shared".into(),
                mode: "rw".into(),
            }],
            ..kept()
        };
        let err = stopped_box(home.path(), with_volume)
            .hibernate()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Snapshot(_)), "{err:?}");
        assert!(err.to_string().contains("nothing was stopped"), "{err}");

        let home = tempfile::tempdir().unwrap();
        let err = stopped_box(home.path(), kept())
            .hibernate()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::BoxNotRunning { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_saved_state_is_checked_before_any_launch_and_discarded_on_request() {
        let home = tempfile::tempdir().unwrap();
        let litebox = stopped_box(home.path(), kept());
        assert!(!litebox.is_hibernated());
        assert!(litebox.hibernated_state().unwrap().is_none());

        let dir = save_state(&litebox, b"saved state");
        assert!(litebox.is_hibernated() && litebox.info().hibernated);
        let found = litebox.hibernated_state().unwrap().unwrap();
        assert_eq!(found.dir, dir);
        // Hibernating it again leaves it as it is.
        litebox.hibernate().await.unwrap();
        assert!(litebox.is_hibernated());

        // Modified: refused by start, before the VMM would be launched (this one cannot be).
        std::fs::write(dir.join(STATE_FILE), b"saved stat").unwrap();
        let err = litebox.start().await.unwrap_err().to_string();
        assert!(
            err.contains("is damaged") && err.contains("not run"),
            "{err}"
        );
        assert!(err.contains("start(discard_state=True)"), "{err}");
        assert_eq!(litebox.status(), BoxStatus::Stopped);

        // Saved with another VMM: refused with the versions.
        let dir = save_state(&litebox, b"saved state");
        let path = dir.join(METADATA_FILE);
        let mut record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        record["versions"]["qemu"] = "1.0.0".into();
        std::fs::write(&path, record.to_string()).unwrap();
        let err = litebox.hibernated_state().unwrap_err().to_string();
        assert!(err.contains("taken with QEMU 1.0.0"), "{err}");

        // Unreadable: refused, naming the file.
        std::fs::write(&path, b"{").unwrap();
        let err = litebox.hibernated_state().unwrap_err().to_string();
        assert!(err.contains("is unreadable"), "{err}");

        // The way out: discarded, the next start boots (here: the launch is reached).
        litebox.discard_hibernated_state().await.unwrap();
        assert!(!litebox.is_hibernated() && !dir.exists());
        let err = litebox.start().await.unwrap_err().to_string();
        assert!(err.contains("unit tests boot no VM"), "{err}");
    }
}
