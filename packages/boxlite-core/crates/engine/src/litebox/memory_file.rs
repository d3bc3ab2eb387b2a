//! A snapshot's guest memory moved into a file of its own ([`MEMORY_FILE`]), which the VMs
//! restored from it map copy-on-write ([`GuestMemory::CopyOnWrite`]): N restores of one
//! snapshot share, through the page cache, every page none of them wrote, where each used to
//! load a private copy (VM templating, as in Kata Containers).
//!
//! It is made right after a snapshot is saved: a second VMM, which never runs the guest,
//! loads the saved state into RAM backed by the new memory file (mapped shared, so every page
//! lands in the file), then saves the device state again without that RAM (`x-ignore-shared`).
//! That state replaces the snapshot's state file only once both files are complete: a failure
//! leaves the snapshot as it was saved, whole in its state file.

use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use super::lifecycle::{connect_control, load_state};
use super::snapshot::{file_for_vmm, own_state_file};
use super::LiteBox;
use crate::agent_socket;
use crate::boot;
use crate::disk;
use crate::error::{Error, IoContext, Result};
use crate::hypervisor::{GuestMemory, VmSpec};
use crate::snapshot::{self, SnapshotInfo, DEVICE_STATE_CAPABILITIES, DISK_FILE, MEMORY_FILE};

/// How long loading and saving again may take (it writes the guest's touched memory once).
const MOVE_TIMEOUT: Duration = Duration::from_secs(120);
/// The device state's name in a jailed VMM's jail while it is written.
const JAILED_DEVICE_STATE: &str = "snapshot.devices";

impl LiteBox {
    /// Moves the guest memory of `saved` (a snapshot of this box just saved in its directory,
    /// whole in its state file) into the snapshot's memory file, and returns `saved` with
    /// that file's checksum and the new state file's. On failure nothing of it is left and
    /// the snapshot is as it was.
    pub(super) async fn move_memory_to_file(&self, saved: &SnapshotInfo) -> Result<SnapshotInfo> {
        let scratch = saved.dir.join("memory-move");
        std::fs::create_dir_all(&scratch).context(|| format!("create {}", scratch.display()))?;
        let started = std::time::Instant::now();
        let moved = self.write_memory_file(saved, &scratch).await;
        let write_ms = started.elapsed().as_millis() as u64;
        agent_socket::remove(&scratch);
        let _ = std::fs::remove_dir_all(&scratch);
        let moved = match moved {
            Ok(()) => {
                let dir = saved.dir.clone();
                tokio::task::spawn_blocking(move || {
                    let state = snapshot::state_checksum(&dir.join(snapshot::STATE_FILE))?;
                    let memory = snapshot::state_checksum(&dir.join(MEMORY_FILE))?;
                    Ok::<_, std::io::Error>((state, memory))
                })
                .await
                .map_err(|e| Error::Snapshot(e.to_string()))?
                .context(|| format!("read the snapshot in {}", saved.dir.display()))
            }
            Err(e) => Err(e),
        };
        match moved {
            Ok((checksum, memory)) => {
                tracing::info!(id = %self.id, write_ms, checksum_ms = started.elapsed().as_millis() as u64 - write_ms, "snapshot's memory moved to a file of its own");
                Ok(SnapshotInfo {
                    checksum,
                    memory_checksum: Some(memory),
                    ..saved.clone()
                })
            }
            Err(e) => {
                let _ = std::fs::remove_file(saved.dir.join(MEMORY_FILE));
                Err(e)
            }
        }
    }

    /// Writes the memory file with a VMM working in `scratch`, and replaces the state file
    /// with the device state alone once both are complete.
    async fn write_memory_file(&self, saved: &SnapshotInfo, scratch: &Path) -> Result<()> {
        let error = |reason: String| {
            Error::Snapshot(format!(
                "box {}: its snapshot's memory could not be moved to a file of its own: {reason}",
                self.id
            ))
        };
        // The VMM opens its disk read-write: it gets an overlay of its own on the frozen disk.
        let overlay = scratch.join("disk.qcow2");
        {
            let (frozen, overlay) = (saved.dir.join(DISK_FILE), overlay.clone());
            tokio::task::spawn_blocking(move || disk::create_overlay_on_qcow2(&frozen, &overlay))
                .await
                .map_err(|e| Error::Disk(e.to_string()))??;
        }
        // The network device needs a backend to exist; the guest never runs, so none is used.
        let network = if saved.network {
            Some(
                std::os::unix::net::UnixStream::pair()
                    .context(|| "create a socket pair for the VM's network device".to_owned())?,
            )
        } else {
            None
        };
        let socket = agent_socket::for_launch(scratch)?;
        let confinement = self.confinement()?;
        let spec = VmSpec {
            name: format!("{}-memory", self.id),
            accel: self.platform.accel.accel,
            kernel: self.platform.assets.kernel.clone(),
            initrd: self.platform.assets.initrd.clone(),
            cmdline: boot::kernel_cmdline(self.platform.accel.accel, "memory", Some("/dev/vda")),
            cpus: saved.cpus,
            memory_mib: saved.memory_mib,
            root_disk: Some(overlay),
            agent_socket: socket.clone(),
            qmp_socket: Some(agent_socket::qmp_socket(&socket)),
            console_log: scratch.join("console.log"),
            vmm_log: scratch.join("vmm.log"),
            confinement: confinement.clone(),
            network_fd: network.as_ref().map(|(ours, _)| {
                use std::os::fd::AsRawFd;
                ours.as_raw_fd()
            }),
            shares: Vec::new(),
            incoming: true,
            guest_memory: GuestMemory::WrittenToFile(saved.dir.join(MEMORY_FILE)),
        };
        // A jailed VMM writes the device state in its jail; it then moves beside the memory.
        let (written, vmm_path) =
            file_for_vmm(&confinement, JAILED_DEVICE_STATE, &scratch.join("devices"))?;
        let vm = match self.platform.hypervisor.launch(&spec) {
            Ok(vm) => vm,
            Err(e) => {
                let _ = std::fs::remove_file(&written);
                return Err(e);
            }
        };
        let launched = Instant::now();
        let deadline = launched + MOVE_TIMEOUT;
        let moved = async {
            let mut qmp = connect_control(&spec, &*vm, deadline, "load the snapshot").await?;
            load_state(&mut qmp, &spec, saved, deadline).await?;
            tracing::debug!(id = %self.id, ms = launched.elapsed().as_millis() as u64, "snapshot loaded for its memory file");
            let saved_again = async {
                qmp.set_migration_capabilities(DEVICE_STATE_CAPABILITIES)
                    .await?;
                qmp.migrate_to_file(&vmm_path).await?;
                qmp.wait_for_migration(
                    deadline.saturating_duration_since(Instant::now()),
                    Duration::from_millis(2),
                )
                .await
            };
            saved_again.await.map_err(|e| e.to_string())
        }
        .await;
        vm.kill();
        let _ = vm.exit_watch().wait_for(|e| e.is_some()).await;
        drop(network);
        let replaced = moved.and_then(|()| {
            own_state_file(&written, &saved.state_file())
                .map_err(|e| format!("cannot replace the state file: {e}"))
        });
        if replaced.is_err() {
            let _ = std::fs::remove_file(&written);
        }
        replaced.map_err(|reason| {
            error(format!(
                "{reason}\n--- VMM log ({}) ---\n{}",
                spec.vmm_log.display(),
                crate::logs::tail(&spec.vmm_log, 10)
            ))
        })
    }
}
