//! The runtime: one home directory (`BOXLITE_HOME`), its image store and its boxes.
//!
//! Layout of the home (as the reference documentation describes it):
//! `images/` (image cache and base disks), `boxes/<id>/` (config.json, disk.qcow2, logs,
//! agent socket), `snapshots/<id>/` (see [`crate::snapshot`]), `db/`, `logs/`, `lock`.
//! `home.rs` finds and creates it; `recovery.rs` deals with the boxes of processes that died;
//! `fork.rs` forks a running box (a snapshot restored into new boxes).

mod boot_cache;
mod fork;
mod home;
mod recovery;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::OnceCell;

pub use fork::{check_fork_count, MAX_FORKS};
use home::create_home;
pub use home::default_home;

use crate::assets::GuestAssets;
use crate::error::{Error, IoContext, Result};
use crate::hypervisor::accel::{self, AccelChoice};
use crate::hypervisor::qemu::QemuBackend;
use crate::hypervisor::Hypervisor;
use crate::image::ImageStore;
use crate::litebox::{BoxInfo, BoxStatus, LiteBox, Platform};
use crate::options::{BoxOptions, RuntimeOptions};
use crate::snapshot::{SnapshotInfo, SnapshotStore};
use crate::state::{AdoptedVm, BoxDb, BoxRecord, ProcessId};

pub struct Runtime {
    home: PathBuf,
    guest_dir: Option<PathBuf>,
    images: Arc<ImageStore>,
    hypervisor: Arc<dyn Hypervisor>,
    platform: OnceCell<Arc<Platform>>,
    boxes: Mutex<HashMap<String, Arc<LiteBox>>>,
    /// `db/boxes.db`: every box of this home, whichever process runs it.
    state: Arc<BoxDb>,
    /// `snapshots/` and `db/snapshots.db`.
    snapshots: Arc<SnapshotStore>,
    boxes_created: std::sync::atomic::AtomicU64,
}

/// Totals over a runtime's boxes.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RuntimeMetrics {
    /// Boxes this runtime knows (not removed), and how many of them run.
    pub boxes_total: u64,
    pub boxes_running: u64,
    /// Boxes created by this runtime since it opened.
    pub boxes_created: u64,
    /// Executions started in this runtime's boxes.
    pub execs_started: u64,
    /// Resident memory of all running VMM processes, in bytes.
    pub vmm_rss_bytes: u64,
}

impl Runtime {
    pub fn new(options: RuntimeOptions) -> Result<Runtime> {
        let home = options.home_dir.clone().unwrap_or_else(default_home);
        create_home(&home)?;
        for sub in ["images", "boxes", "db", "logs", "tmp"] {
            let dir = home.join(sub);
            std::fs::create_dir_all(&dir).context(|| format!("create {}", dir.display()))?;
        }
        let lock = home.join("lock");
        if !lock.exists() {
            std::fs::write(&lock, b"").context(|| format!("create {}", lock.display()))?;
        }
        let state = Arc::new(BoxDb::open(home.join("db").join("boxes.db"))?);
        let snapshots = Arc::new(SnapshotStore::open(&home)?);
        crate::tsc::measure_in_background();
        Ok(Runtime {
            state,
            snapshots,
            images: Arc::new(ImageStore::new(
                home.join("images"),
                home.join("db").join("images.db"),
                options.registry_with_env()?,
                options.image_limits()?,
            )?),
            home,
            guest_dir: options.guest_dir,
            hypervisor: Arc::new(QemuBackend::default()),
            platform: OnceCell::new(),
            boxes: Mutex::new(HashMap::new()),
            boxes_created: Default::default(),
        })
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The image cache (pull, list, remove, garbage collection).
    pub fn images(&self) -> &Arc<ImageStore> {
        &self.images
    }

    /// Manifest digests of the base disks boxes of this home use (kept by garbage collection).
    pub fn disks_in_use(&self) -> std::collections::HashSet<String> {
        let mut digests = std::collections::HashSet::new();
        let Ok(entries) = std::fs::read_dir(self.home.join("boxes")) else {
            return digests;
        };
        for entry in entries.flatten() {
            let config = std::fs::read(entry.path().join("config.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
            if let Some(d) = config.as_ref().and_then(|c| c["image_digest"].as_str()) {
                digests.insert(d.to_owned());
            }
        }
        // A snapshot's disk is an overlay on its image's base disk. The boot cache's entries
        // do not keep an image: one whose base disk is gone is removed when next met.
        for snapshot in self.snapshots.db.list().unwrap_or_default() {
            if snapshot.boot_key.is_none() {
                digests.insert(snapshot.image_digest);
            }
        }
        digests
    }

    /// The hypervisor, guest files and accelerator, settled on first use.
    async fn platform(&self) -> Result<Arc<Platform>> {
        self.platform
            .get_or_try_init(|| async {
                self.hypervisor.check_available()?;
                let assets = GuestAssets::locate(self.guest_dir.as_deref())?;
                let scratch = tempfile::Builder::new()
                    .prefix("probe-")
                    .tempdir_in(self.home.join("tmp"))
                    .context(|| "create the probe directory".into())?;
                let accel = accel::choose(
                    &*self.hypervisor,
                    &assets,
                    scratch.path(),
                    &self.home.join("accel.json"),
                )
                .await?;
                Ok(Arc::new(Platform {
                    hypervisor: self.hypervisor.clone(),
                    assets,
                    accel,
                    snapshots: self.snapshots.clone(),
                }))
            })
            .await
            .cloned()
    }

    /// The accelerator boxes of this runtime use, probing if needed.
    pub async fn accelerator(&self) -> Result<AccelChoice> {
        Ok(self.platform().await?.accel.clone())
    }

    /// Boots the guest kernel and agent alone, without a disk, and returns the time from launch
    /// to the agent's hello (the baseline of the start-up benchmark).
    pub async fn bare_boot(&self) -> Result<std::time::Duration> {
        let platform = self.platform().await?;
        let scratch = tempfile::Builder::new()
            .prefix("bare-")
            .tempdir_in(self.home.join("tmp"))
            .context(|| "create a scratch directory".into())?;
        accel::boot_agent_only(
            &*platform.hypervisor,
            &platform.assets,
            scratch.path(),
            platform.accel.accel,
        )
        .await
        .map_err(|reason| Error::BootFailed {
            id: "bare-boot".into(),
            reason: reason.to_string(),
        })
    }

    /// Creates a box from `options` and starts it. On failure nothing is left behind. With
    /// `options.snapshot`, the box is restored from that snapshot instead of booted (see
    /// [`Runtime::restore_options`]).
    pub async fn create(&self, options: BoxOptions) -> Result<Arc<LiteBox>> {
        let mut restoring = match &options.snapshot {
            Some(name) => Some(self.snapshots.db.get(name)?),
            None => None,
        };
        let mut options = match &restoring {
            Some(snapshot) => restore_options(options, snapshot)?,
            None => options,
        };
        options.validate()?;
        if let Some(name) = &options.name {
            if self.lookup(name).is_some()
                || self
                    .state
                    .find(name)?
                    .is_some_and(|r| r.name.as_deref() == Some(name))
            {
                return Err(Error::Conflict(format!(
                    "a box named {name:?} already exists"
                )));
            }
        }
        let platform = self.platform().await?;
        let image_started = Instant::now();
        let mut prepared = match &restoring {
            Some(snapshot) => {
                // Never run a snapshot whose versions or checksum do not match.
                let (checked, versions) = (snapshot.clone(), platform.versions()?);
                tokio::task::spawn_blocking(move || checked.check_restorable(&versions))
                    .await
                    .map_err(|e| Error::Snapshot(e.to_string()))??;
                snapshot_image(snapshot.clone())?
            }
            None => {
                self.images
                    .ensure(options.image.as_deref(), options.rootfs_path.as_deref())
                    .await?;
                let images = self.images.clone();
                let (image, rootfs_path) = (options.image.clone(), options.rootfs_path.clone());
                let disk_size_gb = options.disk_size_gb;
                tokio::task::spawn_blocking(move || {
                    images.prepare(image.as_deref(), rootfs_path.as_deref(), disk_size_gb)
                })
                .await
                .map_err(|e| Error::Image {
                    image: "?".into(),
                    reason: e.to_string(),
                })??
            }
        };
        // A cold box of an image and shape booted before is restored from the boot cache.
        let boot_key = match &restoring {
            None => Self::boot_cache_key(&options, &prepared, &platform),
            Some(_) => None,
        };
        let mut cache_this_boot = None;
        if let Some(key) = boot_key {
            match self.cached_boot(&key, &platform).await {
                Some(cached) => {
                    options = restore_options(options, &cached)?;
                    prepared = cached.prepared_image.clone();
                    restoring = Some(cached);
                }
                None => cache_this_boot = Some(key),
            }
        }
        let image_ms = image_started.elapsed().as_millis() as u64;

        let id = ulid::Ulid::new().to_string();
        let dir = self.home.join("boxes").join(&id);
        std::fs::create_dir_all(&dir).context(|| format!("create {}", dir.display()))?;
        let litebox = Arc::new(LiteBox::new(id.clone(), options, prepared, dir, platform));
        if let Some(snapshot) = restoring {
            litebox.restore_from(snapshot);
        }
        litebox.set_db(self.state.clone());
        litebox.set_image_ms(image_ms);
        self.boxes_created
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let started = async {
            litebox.write_config()?;
            litebox.start().await
        };
        if let Err(e) = started.await {
            let _ = litebox.delete_files();
            return Err(e);
        }
        if let Some(key) = cache_this_boot {
            self.cache_boot(&litebox, &key).await;
        }
        self.boxes
            .lock()
            .expect("boxes lock")
            .insert(id, litebox.clone());
        Ok(litebox)
    }

    fn lookup(&self, id_or_name: &str) -> Option<Arc<LiteBox>> {
        let boxes = self.boxes.lock().expect("boxes lock");
        boxes.get(id_or_name).cloned().or_else(|| {
            boxes
                .values()
                .find(|b| b.name.as_deref() == Some(id_or_name))
                .cloned()
        })
    }

    /// The box with this id or name: one of this runtime's, or one stored in `db/boxes.db`
    /// (created by another process, or before this one started), which this runtime then
    /// manages. A box running in another live process stays that process's.
    pub async fn get(&self, id_or_name: &str) -> Result<Arc<LiteBox>> {
        if let Some(b) = self.lookup(id_or_name) {
            return Ok(b);
        }
        let record = self
            .state
            .find(id_or_name)?
            .ok_or_else(|| Error::BoxNotFound(id_or_name.to_owned()))?;
        if let Some(owner) = record
            .owner
            .filter(|o| o.alive() && *o != ProcessId::current())
        {
            return Err(Error::Conflict(format!(
                "box {} is running in process {} (its owner): a running box is used by one process at a time; stop it there, or end that process, then get() it again",
                record.id, owner.pid
            )));
        }
        let litebox = Arc::new(LiteBox::restore(
            &record,
            self.platform().await?,
            self.state.clone(),
        ));
        let mut boxes = self.boxes.lock().expect("boxes lock");
        Ok(boxes.entry(record.id.clone()).or_insert(litebox).clone())
    }

    /// Infos of every box of this home: this runtime's and those stored by other processes.
    pub fn list_info(&self) -> Result<Vec<BoxInfo>> {
        let mut infos: Vec<BoxInfo> = {
            let boxes = self.boxes.lock().expect("boxes lock");
            boxes
                .values()
                .map(|b| b.info())
                .filter(|i| i.status != BoxStatus::Removed)
                .collect()
        };
        for record in self.state.list()? {
            if !infos.iter().any(|i| i.id == record.id) {
                infos.push(stored_info(record));
            }
        }
        infos.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(infos)
    }

    /// The info of one box (this runtime's or a stored one), without taking it over.
    pub fn get_info(&self, id_or_name: &str) -> Result<BoxInfo> {
        if let Some(b) = self.lookup(id_or_name) {
            return Ok(b.info());
        }
        self.state
            .find(id_or_name)?
            .map(stored_info)
            .ok_or_else(|| Error::BoxNotFound(id_or_name.to_owned()))
    }

    /// Every box of this runtime, outside the lock.
    fn all_boxes(&self) -> Vec<Arc<LiteBox>> {
        self.boxes
            .lock()
            .expect("boxes lock")
            .values()
            .cloned()
            .collect()
    }

    /// Totals over the boxes of this runtime.
    pub fn metrics(&self) -> RuntimeMetrics {
        let boxes = self.all_boxes();
        let mut metrics = RuntimeMetrics::default();
        for b in &boxes {
            let info = b.info();
            match info.status {
                BoxStatus::Removed => continue,
                BoxStatus::Running => {
                    metrics.boxes_running += 1;
                    metrics.vmm_rss_bytes += info
                        .vmm_pid
                        .map_or(0, |p| crate::litebox::process_usage(p).0);
                }
                _ => {}
            }
            metrics.boxes_total += 1;
            metrics.execs_started += b.execs_started();
        }
        metrics.boxes_created = self
            .boxes_created
            .load(std::sync::atomic::Ordering::Relaxed);
        metrics
    }

    /// Deletes a box and its files. A running box is refused unless `force`, which stops it
    /// first. Removing a box that auto_remove already deleted is not an error.
    pub async fn remove(&self, id_or_name: &str, force: bool) -> Result<()> {
        if self.lookup(id_or_name).is_none() {
            if let Some(record) = self.state.find(id_or_name)? {
                if let Some(owner) = record
                    .owner
                    .filter(|o| o.alive() && *o != ProcessId::current())
                {
                    if !force {
                        return Err(Error::Conflict(format!(
                            "box {} is running in process {}: stop it there, or remove it with force=True",
                            record.id, owner.pid
                        )));
                    }
                    if let Some(vmm) = record.vmm {
                        crate::state::kill_orphan_vmm(vmm).await;
                    }
                    let _ = std::fs::remove_dir_all(&record.dir);
                    return self.state.remove(&record.id);
                }
            }
        }
        let litebox = self.get(id_or_name).await?;
        match litebox.status() {
            BoxStatus::Running | BoxStatus::Paused | BoxStatus::Stopping if !force => {
                return Err(Error::InvalidOption(format!(
                    "box {} is running: stop it first, or remove it with force=True",
                    litebox.id
                )))
            }
            BoxStatus::Running | BoxStatus::Paused | BoxStatus::Stopping | BoxStatus::Created => {
                litebox.stop().await?
            }
            _ => {}
        }
        litebox.delete_files()?;
        self.boxes.lock().expect("boxes lock").remove(&litebox.id);
        self.remove_unused_fork_snapshots();
        Ok(())
    }

    /// Creates a box restored from the snapshot `name_or_id` (the shortcut for
    /// `create(BoxOptions { snapshot, .. })`), with `options` for everything else.
    pub async fn restore(&self, name_or_id: &str, options: BoxOptions) -> Result<Arc<LiteBox>> {
        self.create(BoxOptions {
            snapshot: Some(name_or_id.to_owned()),
            ..options
        })
        .await
    }

    /// Every snapshot of this home, oldest first.
    pub fn list_snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        // The boot cache's entries are the runtime's own (see `boot_cache.rs`).
        Ok(self
            .snapshots
            .db
            .list()?
            .into_iter()
            .filter(|s| s.boot_key.is_none())
            .collect())
    }

    /// The snapshot with this name or id.
    pub fn get_snapshot(&self, name_or_id: &str) -> Result<SnapshotInfo> {
        self.snapshots.db.get(name_or_id)
    }

    /// Deletes a snapshot and its files; refused while a box (running or kept) was restored
    /// from it, since that box's disk is an overlay on the snapshot's, and while a snapshot
    /// of such a box exists (its disk copies that overlay: a fork's fork, for one).
    pub fn remove_snapshot(&self, name_or_id: &str) -> Result<()> {
        let snapshot = self.snapshots.db.get(name_or_id)?;
        let restored_from =
            |options: &BoxOptions| options.snapshot.as_deref() == Some(snapshot.id.as_str());
        let mut users: Vec<String> = self
            .state
            .list()?
            .into_iter()
            .filter(|r| restored_from(&r.options))
            .map(|r| r.name.unwrap_or(r.id))
            .collect();
        users.extend(
            self.snapshots
                .db
                .list()?
                .into_iter()
                .filter(|s| s.id != snapshot.id && restored_from(&s.options))
                .map(|s| format!("snapshot {}", s.name)),
        );
        if !users.is_empty() {
            return Err(Error::Snapshot(format!(
                "snapshot {:?} is in use by box(es) {}, restored from it (their disks build on its disk): remove those first",
                snapshot.name,
                users.join(", ")
            )));
        }
        self.snapshots.db.remove(&snapshot.id)?;
        match std::fs::remove_dir_all(&snapshot.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
                context: format!("remove {}", snapshot.dir.display()),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// Stops every running box (at interpreter exit, for example).
    pub async fn shutdown(&self) {
        let boxes = self.all_boxes();
        let stops = boxes
            .iter()
            .filter(|b| matches!(b.status(), BoxStatus::Running | BoxStatus::Paused))
            .map(|b| b.stop());
        for result in futures::future::join_all(stops).await {
            if let Err(e) = result {
                tracing::warn!(error = %e, "stopping a box at shutdown failed");
            }
        }
    }

    /// Kills every VM at once, without a clean shutdown (last resort at process exit).
    pub fn kill_all(&self) {
        for b in self.boxes.lock().expect("boxes lock").values() {
            b.kill_vm();
        }
    }
}

/// A stored box's last info; a box whose owner died is shown as stopped (until a runtime
/// recovers it).
fn stored_info(record: BoxRecord) -> BoxInfo {
    let mut info = record.info;
    let owner_alive = record.owner.is_some_and(|o| o.alive());
    if !owner_alive
        && matches!(
            info.status,
            BoxStatus::Running | BoxStatus::Paused | BoxStatus::Created | BoxStatus::Stopping
        )
    {
        info.status = BoxStatus::Stopped;
        info.vmm_pid = None;
    }
    info
}

/// The options of a box restored from `snapshot`: the snapshot's VM shape (image, cpus,
/// memory, network device, disk size) over the caller's `options`, and the snapshot's id.
/// Volumes are refused (a snapshot cannot hold their state; nor can its restore).
fn restore_options(options: BoxOptions, snapshot: &SnapshotInfo) -> Result<BoxOptions> {
    if !options.volumes.is_empty() {
        return Err(Error::Snapshot(format!(
            "a box restored from snapshot {:?} cannot have volumes: its guest was saved without those 9p devices. Copy files in with `copy_in()` instead",
            snapshot.name
        )));
    }
    let shape = &snapshot.options;
    let mut security = options.security;
    security.network_enabled = shape.security.network_enabled;
    let mut network = options.network;
    network.mode = shape.network.mode.clone();
    Ok(BoxOptions {
        image: shape.image.clone(),
        rootfs_path: shape.rootfs_path.clone(),
        cpus: shape.cpus,
        memory_mib: shape.memory_mib,
        disk_size_gb: shape.disk_size_gb,
        network_enabled: shape.network_enabled,
        security,
        network,
        snapshot: Some(snapshot.id.clone()),
        ..options
    })
}

/// The image of a snapshot's box, whose base disk its disk builds on (kept by the image
/// store's garbage collection while the snapshot exists).
fn snapshot_image(snapshot: SnapshotInfo) -> Result<crate::image::PreparedImage> {
    let image = snapshot.prepared_image;
    if !image.base_disk.exists() || !snapshot.dir.join(crate::snapshot::DISK_FILE).exists() {
        return Err(Error::Snapshot(format!(
            "snapshot {:?} cannot be restored: its disk or its image's base disk {} is gone. Remove it with `runtime.snapshots.remove({:?})`",
            snapshot.name,
            image.base_disk.display(),
            snapshot.name
        )));
    }
    Ok(image)
}
