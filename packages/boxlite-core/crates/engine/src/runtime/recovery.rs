//! Boxes whose owning process died without stopping them, dealt with when a runtime opens
//! its home: [`Runtime::recover_orphans`].

use super::*;

impl Runtime {
    /// Deals with boxes whose owning process died without stopping them (run once when a
    /// runtime opens its home, before it is used): ephemeral boxes are stopped and deleted;
    /// kept boxes (`auto_remove=False`) whose VM still runs are reattached by this runtime
    /// (resumed first if they were paused), the others are marked stopped. Serialised across
    /// processes by the home's `lock` file.
    pub async fn recover_orphans(&self) -> Result<()> {
        let lock_path = self.home.join("lock");
        let _lock = tokio::task::spawn_blocking(move || -> Result<std::fs::File> {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .context(|| format!("open {}", lock_path.display()))?;
            file.lock()
                .context(|| format!("lock {}", lock_path.display()))?;
            Ok(file)
        })
        .await
        .map_err(|e| Error::Io {
            context: "lock the home".into(),
            source: std::io::Error::other(e),
        })??;
        let me = ProcessId::current();
        for record in self.state.list()? {
            if record.owner.is_some_and(|o| o.alive()) {
                continue;
            }
            // Stopped kept boxes are fine as they are; anything else whose owner died is an
            // orphan (a crashed ephemeral box included: its owner never removed it).
            if record.info.status == BoxStatus::Stopped && !record.options.auto_remove {
                continue;
            }
            let vmm = record.vmm.filter(|v| v.alive());
            if record.options.auto_remove || vmm.is_none() {
                if let Some(vmm) = vmm {
                    crate::state::kill_orphan_vmm(vmm).await;
                }
                if record.options.auto_remove {
                    tracing::warn!(id = %record.id, "removing an ephemeral box whose owning process died");
                    let _ = std::fs::remove_dir_all(&record.dir);
                    self.state.remove(&record.id)?;
                } else {
                    tracing::warn!(id = %record.id, "a kept box's owning process and VM died; marking it stopped");
                    let mut stopped = record.clone();
                    stopped.info.status = BoxStatus::Stopped;
                    stopped.info.vmm_pid = None;
                    stopped.owner = None;
                    stopped.vmm = None;
                    self.state.put(&stopped)?;
                }
                continue;
            }
            let vmm = vmm.expect("checked above");
            if !self.state.claim(&record.id, record.owner, me)? {
                continue; // another runtime adopted it first
            }
            let litebox = Arc::new(LiteBox::restore(
                &record,
                self.platform().await?,
                self.state.clone(),
            ));
            let adopted = AdoptedVm::adopt(vmm).context(|| format!("watch VMM {}", vmm.pid))?;
            let paused = record.info.status == BoxStatus::Paused;
            match litebox.attach(Box::new(adopted), paused).await {
                Ok(()) => {
                    // The usual case of a detached box (`boxlite run -d`, then any later command): not a warning.
                    tracing::info!(id = %record.id, "reattached a kept box whose owning process exited");
                    self.boxes
                        .lock()
                        .expect("boxes lock")
                        .insert(record.id.clone(), litebox);
                }
                Err(e) => {
                    tracing::warn!(id = %record.id, error = %e, "could not reattach an orphaned box; stopping it");
                    crate::state::kill_orphan_vmm(vmm).await;
                    let _ = litebox.write_config();
                }
            }
        }
        Ok(())
    }
}
