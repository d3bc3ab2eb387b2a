//! What a box says about itself and keeps: [`LiteBox::info`], its `config.json`, and its row
//! in `db/boxes.db` (restoring a box from it, recording it, refusing a box another process runs).

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use super::{BoxInfo, BoxStatus, LiteBox, Platform};
use crate::error::{Error, IoContext, Result};

impl LiteBox {
    /// A box restored from `db/boxes.db` (stopped until started or attached).
    pub(crate) fn restore(
        record: &crate::state::BoxRecord,
        platform: Arc<Platform>,
        db: Arc<crate::state::BoxDb>,
    ) -> LiteBox {
        let created_at = humantime::parse_rfc3339(&record.created_at).unwrap_or(SystemTime::now());
        let litebox = LiteBox {
            created_at,
            ..LiteBox::new(
                record.id.clone(),
                record.options.clone(),
                record.image.clone(),
                record.dir.clone(),
                platform,
            )
        };
        {
            let mut state = litebox.state.lock().expect("state lock");
            state.status = BoxStatus::Stopped;
            state.timings = record.info.timings.clone();
        }
        let _ = litebox.db.set(db);
        litebox
    }

    /// Refuses to start a box another live process has started meanwhile (a stopped kept box
    /// can be picked up by any process of its home).
    pub(super) fn check_not_running_elsewhere(&self) -> Result<()> {
        let Some(db) = self.db.get() else {
            return Ok(());
        };
        let me = crate::state::ProcessId::current();
        match db.find(&self.id)?.and_then(|r| r.owner) {
            Some(owner) if owner != me && owner.alive() => Err(Error::Conflict(format!(
                "box {} was started by process {} meanwhile: a box runs in one process at a time",
                self.id, owner.pid
            ))),
            _ => Ok(()),
        }
    }

    /// Makes the box's first start a restore of `snapshot` (see `lifecycle`).
    pub(crate) fn restore_from(&self, snapshot: crate::snapshot::SnapshotInfo) {
        *self.restore_from.lock().expect("restore lock") = Some(snapshot);
    }

    pub(crate) fn set_db(&self, db: Arc<crate::state::BoxDb>) {
        let _ = self.db.set(db);
    }

    /// Records the box in `db/boxes.db`: this process owns it while its VM runs.
    pub(super) fn persist(&self) -> Result<()> {
        let Some(db) = self.db.get() else {
            return Ok(());
        };
        let info = self.info();
        // A stopped box belongs to no process; any runtime of the home may start it.
        let active = !matches!(info.status, BoxStatus::Stopped | BoxStatus::Removed);
        db.put(&crate::state::BoxRecord {
            id: self.id.clone(),
            name: self.name.clone(),
            options: self.options.clone(),
            image: self.image.clone(),
            created_at: info.created_at.clone(),
            dir: self.dir.clone(),
            owner: active.then(crate::state::ProcessId::current),
            vmm: info.vmm_pid.and_then(crate::state::ProcessId::of),
            info,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn status(&self) -> BoxStatus {
        self.state.lock().expect("state lock").status
    }

    pub(crate) fn set_image_ms(&self, ms: u64) {
        self.state.lock().expect("state lock").timings.image_ms = ms;
    }

    pub fn info(&self) -> BoxInfo {
        let state = self.state.lock().expect("state lock");
        BoxInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            status: state.status,
            image: self.image.reference.clone(),
            image_digest: self.image.manifest_digest.clone(),
            cpus: self.options.cpus,
            memory_mib: self.options.memory_mib,
            auto_remove: self.options.auto_remove,
            accel: self.platform.accel.accel.to_string(),
            accel_reason: self.platform.accel.reason.clone(),
            kernel_release: state.running.as_ref().map(|r| r.kernel_release.clone()),
            vmm_pid: state.running.as_ref().and_then(|r| r.vm.pid()),
            created_at: humantime::format_rfc3339_seconds(self.created_at).to_string(),
            dir: self.dir.clone(),
            timings: state.timings.clone(),
            last_error: state.last_error.clone(),
            hibernated: self.is_hibernated(),
        }
    }

    /// Writes `config.json` (the box's recorded configuration, as the reference docs show it).
    pub(crate) fn write_config(&self) -> Result<()> {
        let info = self.info();
        let config = serde_json::json!({
            "id": info.id,
            "name": info.name,
            "image": info.image,
            "image_digest": info.image_digest,
            "cpus": info.cpus,
            "memory_mib": info.memory_mib,
            "working_dir": self.options.working_dir,
            "env": self.options.env,
            "auto_remove": info.auto_remove,
            "volumes": self.options.volumes,
            "ports": self.options.ports,
            "network": self.options.network(),
            "created_at": info.created_at,
            "status": info.status,
        });
        let path = self.dir.join("config.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&config).expect("json"))
            .context(|| format!("write {}", path.display()))?;
        self.persist()
    }
}
