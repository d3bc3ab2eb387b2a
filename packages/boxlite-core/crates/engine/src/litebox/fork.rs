//! What a fork of a running box starts from: a snapshot of the box marked as a fork's
//! ([`SnapshotInfo::fork_of`]), and each fork's options. `Runtime::fork` restores the forks.
//! The boot cache's snapshots are marked the same way ([`SnapshotInfo::boot_key`]).

use super::LiteBox;
use crate::error::Result;
use crate::options::BoxOptions;
use crate::snapshot::SnapshotInfo;

impl LiteBox {
    /// Snapshots the box for `fork()`: named by its id and marked with this box's id, so that
    /// it is told apart from a user's snapshot and removed once no fork uses it. The box runs
    /// on (a paused box stays paused); refusals are those of [`LiteBox::snapshot`].
    pub(crate) async fn snapshot_for_fork(&self) -> Result<SnapshotInfo> {
        self.snapshot_marked(None, |info| info.fork_of = Some(self.id.clone()))
            .await
    }

    /// Snapshots the box as the boot cache's entry for `key` (see `runtime/boot_cache.rs`),
    /// named after the key so that two processes caching one key make one entry.
    pub(crate) async fn snapshot_for_boot_cache(&self, key: &str) -> Result<SnapshotInfo> {
        self.snapshot_marked(Some(format!("boot-cache-{key}")), |info| {
            info.boot_key = Some(key.to_owned())
        })
        .await
    }

    /// Takes a snapshot named `name` and records it changed by `mark`; on failure nothing of
    /// it is left.
    async fn snapshot_marked(
        &self,
        name: Option<String>,
        mark: impl FnOnce(&mut SnapshotInfo),
    ) -> Result<SnapshotInfo> {
        let mut info = self.snapshot(name).await?;
        mark(&mut info);
        let store = &self.platform.snapshots;
        let marked = super::snapshot::write_metadata(&info).and_then(|()| store.db.update(&info));
        if let Err(e) = marked {
            let _ = store.db.remove(&info.id);
            let _ = std::fs::remove_dir_all(&info.dir);
            return Err(e);
        }
        Ok(info)
    }

    /// The options of a fork restored from `snapshot`: this box's, without its name (names
    /// are unique) and without its port forwards (this box keeps those host ports: a fork
    /// that needs one is restored from a snapshot with `ports=` of its own instead).
    pub(crate) fn fork_options(&self, snapshot: &SnapshotInfo) -> BoxOptions {
        BoxOptions {
            name: None,
            ports: Vec::new(),
            snapshot: Some(snapshot.id.clone()),
            ..self.options.clone()
        }
    }
}
