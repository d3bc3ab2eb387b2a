//! The runtime: one home directory (`BOXLITE_HOME`), its image store and its boxes.
//!
//! Layout of the home (as the reference documentation describes it):
//! `images/` (image cache and base disks), `boxes/<id>/` (config.json, disk.qcow2, logs,
//! agent socket), `db/`, `logs/`, `lock`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::OnceCell;

use crate::assets::GuestAssets;
use crate::error::{Error, IoContext, Result};
use crate::hypervisor::accel::{self, AccelChoice};
use crate::hypervisor::qemu::QemuBackend;
use crate::hypervisor::Hypervisor;
use crate::image::ImageStore;
use crate::litebox::{BoxInfo, BoxStatus, LiteBox, Platform};
use crate::options::{BoxOptions, RuntimeOptions};

pub struct Runtime {
    home: PathBuf,
    guest_dir: Option<PathBuf>,
    images: Arc<ImageStore>,
    hypervisor: Arc<dyn Hypervisor>,
    platform: OnceCell<Arc<Platform>>,
    boxes: Mutex<HashMap<String, Arc<LiteBox>>>,
    boxes_created: std::sync::atomic::AtomicU64,
}

/// `BOXLITE_HOME`, else `~/.boxlite`.
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

pub fn default_home() -> PathBuf {
    if let Some(home) = std::env::var_os("BOXLITE_HOME") {
        return PathBuf::from(home);
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join(".boxlite")
}

impl Runtime {
    pub fn new(options: RuntimeOptions) -> Result<Runtime> {
        let home = options.home_dir.clone().unwrap_or_else(default_home);
        for sub in ["images", "boxes", "db", "logs", "tmp"] {
            let dir = home.join(sub);
            std::fs::create_dir_all(&dir).context(|| format!("create {}", dir.display()))?;
        }
        let lock = home.join("lock");
        if !lock.exists() {
            std::fs::write(&lock, b"").context(|| format!("create {}", lock.display()))?;
        }
        Ok(Runtime {
            images: Arc::new(ImageStore::new(home.join("images"))?),
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
            reason,
        })
    }

    /// Creates a box from `options` and starts it. On failure nothing is left behind.
    pub async fn create(&self, options: BoxOptions) -> Result<Arc<LiteBox>> {
        options.validate()?;
        if let Some(name) = &options.name {
            if self.lookup(name).is_some() {
                return Err(Error::InvalidOption(format!(
                    "a box named {name:?} already exists"
                )));
            }
        }
        let platform = self.platform().await?;
        let image_started = Instant::now();
        let images = self.images.clone();
        let (image, rootfs_path) = (options.image.clone(), options.rootfs_path.clone());
        let prepared = tokio::task::spawn_blocking(move || {
            images.prepare(image.as_deref(), rootfs_path.as_deref())
        })
        .await
        .map_err(|e| Error::Image {
            image: "?".into(),
            reason: e.to_string(),
        })??;
        let image_ms = image_started.elapsed().as_millis() as u64;

        let id = ulid::Ulid::new().to_string();
        let dir = self.home.join("boxes").join(&id);
        std::fs::create_dir_all(&dir).context(|| format!("create {}", dir.display()))?;
        let litebox = Arc::new(LiteBox::new(id.clone(), options, prepared, dir, platform));
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

    /// The box with this id or name.
    pub fn get(&self, id_or_name: &str) -> Result<Arc<LiteBox>> {
        self.lookup(id_or_name)
            .ok_or_else(|| Error::BoxNotFound(id_or_name.to_owned()))
    }

    pub fn list_info(&self) -> Vec<BoxInfo> {
        let boxes = self.boxes.lock().expect("boxes lock");
        let mut infos: Vec<BoxInfo> = boxes
            .values()
            .map(|b| b.info())
            .filter(|i| i.status != BoxStatus::Removed)
            .collect();
        infos.sort_by(|a, b| a.id.cmp(&b.id));
        infos
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
        let litebox = self.get(id_or_name)?;
        match litebox.status() {
            BoxStatus::Running | BoxStatus::Stopping if !force => {
                return Err(Error::InvalidOption(format!(
                    "box {} is running: stop it first, or remove it with force=True",
                    litebox.id
                )))
            }
            BoxStatus::Running | BoxStatus::Stopping | BoxStatus::Created => litebox.stop().await?,
            _ => {}
        }
        litebox.delete_files()?;
        self.boxes.lock().expect("boxes lock").remove(&litebox.id);
        Ok(())
    }

    /// Stops every running box (at interpreter exit, for example).
    pub async fn shutdown(&self) {
        let boxes = self.all_boxes();
        let stops = boxes
            .iter()
            .filter(|b| b.status() == BoxStatus::Running)
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
