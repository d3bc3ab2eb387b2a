//! Taking a snapshot of a running box ([`LiteBox::snapshot`]): its vCPUs stopped, its VMM's
//! device and memory state saved into a file (a QEMU migration to a file, with `mapped-ram`:
//! one sparse file, each guest page at its own offset), a copy of its disk as it is at that
//! moment started, and the box resumed; QEMU then copies the disk while the box runs on
//! (`blockdev-backup`, copy-before-write: the box's writes meanwhile wait for the old data
//! to be copied first). The memory then moves to a file of its own, which restored boxes
//! share (`memory_file`). The restore is `lifecycle`'s start with a snapshot.
//!
//! The disk is copied, not frozen into a shared backing layer: the box's overlay holds only
//! what the box wrote (the copy is that layer alone, on the same backing file), and the
//! running box's disk chain stays as it was, however many snapshots are taken of it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{BoxStatus, LiteBox, Running};
use crate::error::{Error, IoContext, Result};
use crate::hypervisor::qmp::QmpError;
use crate::snapshot::{self, SnapshotInfo, DISK_FILE, METADATA_FILE, STATE_FILE};

/// How long saving the state may take (it writes the guest's touched memory).
const SAVE_TIMEOUT: Duration = Duration::from_secs(300);
/// How often a migration's progress is asked.
const POLL_EVERY: Duration = Duration::from_millis(5);

impl LiteBox {
    /// Saves the box's whole state (memory, devices, disk) as a snapshot named `name` (default:
    /// its id) under the home's `snapshots/`, recorded in `db/snapshots.db`. The box is paused
    /// meanwhile and runs on afterwards (a box paused before stays paused). A box with volumes
    /// is refused: a 9p share's state lives on the host and cannot be saved with the VM.
    pub async fn snapshot(&self, name: Option<String>) -> Result<SnapshotInfo> {
        let _lifecycle = self.lifecycle.lock().await;
        let (running, status) = self.running_or_paused("snapshot")?;
        if !self.options.volumes.is_empty() {
            return Err(Error::Snapshot(format!(
                "box {} has volumes (host directories shared over 9p), whose state lives on the host: QEMU cannot save it with the VM, so it cannot be snapshotted. Create the box without volumes and copy files in with `copy_in()`",
                self.id
            )));
        }
        let store = self.platform.snapshots.clone();
        let id = ulid::Ulid::new().to_string();
        let name = match name {
            Some(name) if name.trim().is_empty() || name.len() > 128 => {
                return Err(Error::InvalidOption(format!(
                    "snapshot name {name:?} is empty or longer than 128 bytes: pick a short name, or pass none to use its id"
                )))
            }
            Some(name) => name,
            None => id.clone(),
        };
        if store.db.find(&name)?.is_some() {
            return Err(Error::Conflict(format!(
                "a snapshot named {name:?} already exists: pick another name, or remove it with `runtime.snapshots.remove({name:?})`"
            )));
        }
        let versions = self.platform.versions()?;
        let dir = store.root.join(&id);
        std::fs::create_dir_all(&dir).context(|| format!("create {}", dir.display()))?;
        let taken = self.save(&running, status, &dir).await;
        let recorded = async {
            let took_ms = taken?;
            let saved = SnapshotInfo {
                id: id.clone(),
                name,
                source_box: self.id.clone(),
                image: self.image.reference.clone(),
                image_digest: self.image.manifest_digest.clone(),
                versions,
                kernel_release: running.kernel_release.clone(),
                cpus: self.options.cpus,
                memory_mib: self.options.memory_mib,
                network: self.options.network(),
                size_bytes: 0,
                created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                    .to_string(),
                checksum: String::new(),
                took_ms,
                dir: dir.clone(),
                options: self.options.clone(),
                prepared_image: self.image.clone(),
                fork_of: None,
                memory_checksum: None,
                boot_key: None,
            };
            let info = match self.move_memory_to_file(&saved).await {
                Ok(moved) => moved,
                Err(e) => {
                    // The state file still holds the memory: the snapshot restores all the same.
                    tracing::warn!(id = %self.id, error = %e, "the snapshot keeps its memory in its state file: the boxes restored from it will not share it");
                    let state = dir.join(STATE_FILE);
                    let checksum =
                        tokio::task::spawn_blocking(move || snapshot::state_checksum(&state))
                            .await
                            .map_err(|e| Error::Snapshot(e.to_string()))?
                            .context(|| format!("read {}", dir.join(STATE_FILE).display()))?;
                    SnapshotInfo { checksum, ..saved }
                }
            };
            write_metadata(&info)?;
            let info = SnapshotInfo {
                size_bytes: snapshot::allocated_bytes(&dir),
                ..info
            };
            write_metadata(&info)?;
            store.db.insert(&info)?;
            Ok(info)
        };
        match recorded.await {
            Ok(info) => {
                tracing::info!(id = %self.id, snapshot = %info.name, took_ms = info.took_ms, size = info.size_bytes, "snapshot taken");
                Ok(info)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// Pauses `running` (unless `status` says it is), saves its state into `dir` and starts
    /// copying its disk as it is at that moment, resumes it (on failure too), then waits for
    /// the disk's copy. Returns how long the box was paused, in milliseconds.
    async fn save(&self, running: &Running, status: BoxStatus, dir: &Path) -> Result<u64> {
        let error = |reason: String| Error::Snapshot(format!("box {}: {reason}", self.id));
        if running.qmp_socket.is_none() {
            return Err(error(
                "its VMM has no control channel: it cannot be snapshotted".into(),
            ));
        }
        // The disk's copy: an empty qcow2 on the disk's backing file, made before the pause,
        // where the VMM can open it (in its jail, if it has one).
        let confinement = self.confinement()?;
        let disk = dir.join(DISK_FILE);
        let (disk_written, disk_for_vmm) = file_for_vmm(&confinement, JAILED_DISK, &disk)?;
        let (overlay, target) = (self.disk_path(), disk_written.clone());
        tokio::task::spawn_blocking(move || crate::disk::create_sibling_overlay(&overlay, &target))
            .await
            .map_err(|e| error(e.to_string()))?
            .map_err(|e| error(format!("cannot prepare its disk's copy: {e}")))?;

        let was_paused = status == BoxStatus::Paused;
        // A guest that hands its free pages back stops doing so before its state is saved:
        // the boxes restored from the snapshot map its memory file, whose pages QEMU cannot
        // take back, and would otherwise each turn reporting off in their first moments,
        // when every code path of the guest is still cold under TCG (~50 ms of the first
        // exec). The ping returns once the agent did it. A paused guest cannot: its
        // restores turn it off.
        let reporting = !was_paused && running.reports_free_pages;
        if reporting {
            let stopped = async {
                running.agent.set_free_page_reporting(false).await?;
                running.agent.ping().await
            };
            if let Err(e) = stopped.await {
                tracing::warn!(id = %self.id, error = %e, "free page reporting not stopped before the snapshot");
            }
        }
        let paused_at = Instant::now();
        let saved = self
            .migrate_state_out(running, was_paused, dir, "snapshotted")
            .await;
        // The state is saved and the vCPUs stand still: the disk as it is now is the
        // snapshot's. QEMU copies it while the box runs on.
        let backup = match &saved {
            Ok(()) => running
                .on_qmp(async |qmp| qmp.start_disk_backup(DISK_DEVICE, &disk_for_vmm).await)
                .await
                .map_err(|e| e.to_string()),
            Err(_) => Ok(()),
        };
        // A VMM that cannot copy the disk while the box runs (QEMU before 10.0) holds it as it
        // was since the migration: it is copied here, before the box resumes.
        let copied_while_paused = match (&saved, &backup) {
            (Ok(()), Err(why)) => {
                tracing::info!(id = %self.id, why, "the disk is copied while the box is paused");
                let _ = std::fs::remove_file(&disk_written);
                let (from, to) = (self.disk_path(), disk.clone());
                Some(
                    tokio::task::spawn_blocking(move || std::fs::copy(&from, &to).map(|_| ()))
                        .await
                        .map_err(|e| error(e.to_string()))
                        .and_then(|r| r.map_err(|e| error(format!("cannot copy its disk: {e}")))),
                )
            }
            _ => None,
        };
        let resumed = if was_paused {
            Ok(())
        } else {
            resume_vcpus(running).await
        };
        let paused_ms = paused_at.elapsed().as_millis() as u64;
        if !was_paused && resumed.is_ok() {
            running.agent.set_paused(false);
            // The guest's clock stood still while its state was saved.
            if let Err(e) = running.agent.set_clock_now().await {
                tracing::warn!(id = %self.id, error = %e, "the snapshotted guest's clock was not set");
            }
        }
        if reporting {
            if let Err(e) = running.agent.set_free_page_reporting(true).await {
                tracing::warn!(id = %self.id, error = %e, "free page reporting not turned on again after the snapshot");
            }
        }
        let copied = match (&saved, copied_while_paused) {
            (_, Some(copied)) => copied,
            (Ok(()), None) => wait_for_disk_backup(running)
                .await
                .map_err(|e| error(format!("copying its disk failed: {e}")))
                .and_then(|()| {
                    if disk_written == disk {
                        return Ok(());
                    }
                    own_state_file(&disk_written, &disk)
                        .map_err(|e| error(format!("cannot keep its disk's copy: {e}")))
                }),
            _ => Ok(()),
        };
        if copied.is_err() || saved.is_err() {
            let _ = std::fs::remove_file(&disk_written);
        }
        saved?;
        copied?;
        resumed.map_err(|e| {
            error(format!(
                "the snapshot was saved, but the box could not be resumed: {e}"
            ))
        })?;
        Ok(paused_ms)
    }

    /// Stops `running`'s vCPUs (unless `was_paused`) and saves its device and memory state into
    /// `dir`'s state file (a snapshot's, or a hibernated box's); the vCPUs stay stopped. On
    /// failure nothing is left in `dir` and the caller resumes the box. `what` ends the error
    /// of a VMM without a control channel ("it cannot be {what}").
    pub(super) async fn migrate_state_out(
        &self,
        running: &Running,
        was_paused: bool,
        dir: &Path,
        what: &str,
    ) -> Result<()> {
        let error = |reason: String| Error::Snapshot(format!("box {}: {reason}", self.id));
        if running.qmp_socket.is_none() {
            return Err(error(format!(
                "its VMM has no control channel: it cannot be {what}"
            )));
        }
        // A jailed VMM sees only its jail (as its own user): it writes the state there, and the
        // file then moves into `dir` (one file system: a rename).
        let confinement = self.confinement()?;
        let target = dir.join(STATE_FILE);
        let (written, vmm_path) = file_for_vmm(&confinement, JAILED_STATE, &target)?;
        running.agent.set_paused(true);
        let saved = running
            .on_qmp(async |qmp| {
                if !was_paused {
                    qmp.stop().await?;
                }
                qmp.set_migration_capabilities(snapshot::FULL_STATE_CAPABILITIES)
                    .await?;
                qmp.migrate_to_file(&vmm_path).await?;
                qmp.wait_for_migration(SAVE_TIMEOUT, POLL_EVERY).await
            })
            .await;
        match saved {
            Ok(()) if written != target => own_state_file(&written, &target)
                .map_err(|e| error(format!("cannot keep its saved state: {e}"))),
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = std::fs::remove_file(&written);
                if let Some(exit) = running.vm.exit_watch().borrow().clone() {
                    return Err(error(format!("its VM has ended ({exit})")));
                }
                Err(error(format!("saving its state failed: {e}")))
            }
        }
    }
}

/// Runs `running`'s vCPUs again over its control channel.
async fn resume_vcpus(running: &Running) -> std::result::Result<(), QmpError> {
    running.on_qmp(async |qmp| qmp.cont().await).await
}

/// Waits (at most [`SAVE_TIMEOUT`]) for the disk backup [`LiteBox::save`] started, asking
/// its status over a channel taken for each question (pause or resume may come between),
/// then ends it; on failure it is cancelled.
async fn wait_for_disk_backup(running: &Running) -> std::result::Result<(), String> {
    let end = Instant::now() + SAVE_TIMEOUT;
    let (outcome, concluded) = loop {
        match running
            .on_qmp(async |qmp| qmp.disk_backup_status().await)
            .await
        {
            Ok(Some(outcome)) => break (outcome, true),
            Ok(None) if Instant::now() < end => tokio::time::sleep(POLL_EVERY).await,
            Ok(None) => {
                break (
                    Err(format!("not done within {} s", SAVE_TIMEOUT.as_secs())),
                    false,
                )
            }
            Err(e) => break (Err(e.to_string()), false),
        }
    };
    let ended = running
        .on_qmp(async |qmp| qmp.end_disk_backup(concluded).await)
        .await;
    outcome?;
    ended.map_err(|e| format!("the copy is done, but the VMM did not let it go: {e}"))
}

/// The VMM's name for the box's disk (`-drive id=root`).
const DISK_DEVICE: &str = "root";
/// The disk copy's name in a jailed VMM's jail, while it is written.
const JAILED_DISK: &str = "snapshot.disk.qcow2";

/// The state file's name in a jailed VMM's jail, while it is written or read.
pub(crate) const JAILED_STATE: &str = "snapshot.state";

/// Where a VMM confined by `confinement` writes a file that belongs at `outside`: in its jail
/// as `name`, created and handed to its user, when it has one (a jailed VMM sees only its
/// jail, as its own user; [`own_state_file`] then moves the file out); else `outside` itself.
/// Returns the file's path on the host and the path the VMM is given.
pub(super) fn file_for_vmm(
    confinement: &crate::hypervisor::Confinement,
    name: &str,
    outside: &Path,
) -> Result<(PathBuf, PathBuf)> {
    let Some(jail) = &confinement.chroot else {
        return Ok((outside.to_owned(), outside.to_owned()));
    };
    let file = jail.join(name);
    std::fs::File::create(&file).context(|| format!("create {}", file.display()))?;
    if let Some((uid, gid)) = confinement.run_as {
        std::os::unix::fs::chown(&file, Some(uid), Some(gid))
            .context(|| format!("hand {} to the VMM's user", file.display()))?;
    }
    Ok((file, Path::new("/").join(name)))
}

/// Moves the state file a jailed VMM wrote from its jail to `to`, owned by this process's
/// user, readable by the user a jailed VMM restoring it runs as (the home is private).
pub(super) fn own_state_file(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::rename(from, to)?;
    // SAFETY: geteuid and getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    std::os::unix::fs::chown(to, Some(uid), Some(gid))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o644))
}

/// Writes `snapshot.json` in the snapshot's directory.
pub(crate) fn write_metadata(info: &SnapshotInfo) -> Result<()> {
    let path = info.dir.join(METADATA_FILE);
    let text = serde_json::to_vec_pretty(info).expect("snapshot info serialises");
    std::fs::write(&path, text).context(|| format!("write {}", path.display()))
}
