//! Forking a running box ([`Runtime::fork`]): one snapshot of it (marked as a fork's, see
//! [`SnapshotInfo::fork_of`]), restored into `count` new boxes. Each fork continues from the
//! parent's state with its own disk overlay (on the snapshot's disk), its own network (its own
//! passt, no port forwards), a new id, and fresh kernel randomness (every agent connection's
//! hello carries the host's). The parent runs on.
//!
//! The snapshot stays while a fork uses it (their disks build on it) and is removed by the
//! next `fork()` or `remove()` of this home once none does ([`Runtime::remove_unused_fork_snapshots`]).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;

use super::Runtime;
use crate::error::{Error, Result};
use crate::litebox::LiteBox;
use crate::snapshot::SnapshotInfo;

/// The most forks one `fork()` makes.
pub const MAX_FORKS: u32 = 64;

/// Forks restored at the same time.
const PARALLEL_RESTORES: usize = 4;

/// A fork's snapshot of a box another live process owns is not collected while younger than
/// this: that process's `fork()` may be between taking it and recording the boxes restored
/// from it. (This process's own `fork()` calls are known: [`FORKING`].)
const FORK_SNAPSHOT_GRACE: Duration = Duration::from_secs(120);

/// The snapshots this process's `fork()` calls are restoring now: never collected.
static FORKING: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Marks a snapshot as being forked from while it lives.
struct Forking(String);

impl Forking {
    fn new(id: &str) -> Forking {
        FORKING.lock().expect("forking lock").insert(id.to_owned());
        Forking(id.to_owned())
    }
}

impl Drop for Forking {
    fn drop(&mut self) {
        FORKING.lock().expect("forking lock").remove(&self.0);
    }
}

/// Refuses a fork count outside `1..=MAX_FORKS`.
pub fn check_fork_count(count: u32) -> Result<()> {
    if (1..=MAX_FORKS).contains(&count) {
        return Ok(());
    }
    Err(Error::InvalidOption(format!(
        "fork count {count} is out of range: ask for 1 to {MAX_FORKS} forks at a time (call fork() again for more)"
    )))
}

impl Runtime {
    /// Forks the running (or paused) box `id_or_name` into `count` new running boxes (1 to
    /// [`MAX_FORKS`]), in order. On failure, the forks already started are removed and the
    /// error returned. Refused, as a snapshot is, for a box with volumes.
    pub async fn fork(&self, id_or_name: &str, count: u32) -> Result<Vec<Arc<LiteBox>>> {
        check_fork_count(count)?;
        let parent = self.get(id_or_name).await?;
        self.remove_unused_fork_snapshots();
        let snapshot = parent.snapshot_for_fork().await?;
        let forking = Forking::new(&snapshot.id);
        let options = parent.fork_options(&snapshot);
        let results: Vec<Result<Arc<LiteBox>>> = futures::stream::iter(0..count)
            .map(|_| self.create(options.clone()))
            .buffered(PARALLEL_RESTORES)
            .collect()
            .await;
        let mut forks = Vec::with_capacity(results.len());
        let mut failed = None;
        for result in results {
            match result {
                Ok(fork) => forks.push(fork),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        drop(forking);
        let Some(error) = failed else {
            tracing::info!(parent = %parent.id, count, snapshot = %snapshot.id, "box forked");
            return Ok(forks);
        };
        for fork in forks {
            if let Err(e) = self.remove(&fork.id, true).await {
                tracing::warn!(id = %fork.id, error = %e, "could not remove a fork after a failed fork()");
            }
        }
        if let Err(e) = self.remove_snapshot(&snapshot.id) {
            tracing::warn!(snapshot = %snapshot.id, error = %e, "could not remove the snapshot of a failed fork()");
        }
        Err(error)
    }

    /// Removes the snapshots `fork()` took that no box (nor snapshot) uses any more, except
    /// those a `fork()` may still be restoring, until none is left to remove (removing a
    /// fork's fork's snapshot frees its parent's). Failures are logged: the next call tries
    /// again.
    pub(crate) fn remove_unused_fork_snapshots(&self) {
        while self.remove_unused_fork_snapshots_once() {}
    }

    /// One pass of [`Runtime::remove_unused_fork_snapshots`]: whether it removed any.
    fn remove_unused_fork_snapshots_once(&self) -> bool {
        let snapshots = match self.snapshots.db.list() {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list snapshots to remove unused fork snapshots");
                return false;
            }
        };
        let now = SystemTime::now();
        let mut removed = false;
        for snapshot in snapshots.iter().filter(|s| s.fork_of.is_some()) {
            if FORKING.lock().expect("forking lock").contains(&snapshot.id) {
                continue;
            }
            let parent_elsewhere = snapshot.fork_of.as_deref().is_some_and(|parent| {
                self.state.find(parent).ok().flatten().is_some_and(|r| {
                    r.owner
                        .is_some_and(|o| o.alive() && o != crate::state::ProcessId::current())
                })
            });
            if parent_elsewhere && !past_grace(snapshot, now) {
                continue;
            }
            match self.remove_snapshot(&snapshot.id) {
                Ok(()) => {
                    removed = true;
                    tracing::debug!(snapshot = %snapshot.id, "removed a fork snapshot no box uses");
                }
                // In use by a fork (or a snapshot of one): kept.
                Err(Error::Snapshot(_)) => {}
                Err(e) => {
                    tracing::warn!(snapshot = %snapshot.id, error = %e, "could not remove an unused fork snapshot")
                }
            }
        }
        removed
    }
}

/// Whether `snapshot` was taken at least [`FORK_SNAPSHOT_GRACE`] before `now`.
fn past_grace(snapshot: &SnapshotInfo, now: SystemTime) -> bool {
    humantime::parse_rfc3339_weak(&snapshot.created_at)
        .is_ok_and(|created| now.duration_since(created).unwrap_or_default() >= FORK_SNAPSHOT_GRACE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fork_counts_outside_one_to_sixty_four_are_refused_with_the_range() {
        assert!(check_fork_count(1).is_ok());
        assert!(check_fork_count(MAX_FORKS).is_ok());
        for bad in [0, MAX_FORKS + 1] {
            let err = check_fork_count(bad).unwrap_err().to_string();
            assert!(err.contains("1 to 64"), "{err}");
        }
    }

    #[test]
    fn the_grace_period_counts_from_the_snapshots_creation() {
        let created = humantime::parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
        let json = serde_json::json!({
            "id": "s", "name": "s", "source_box": "b", "image": "i", "image_digest": "d",
            "versions": {"kernel": "k", "agent": "a", "qemu": "q"}, "kernel_release": "r",
            "cpus": 1, "memory_mib": 256, "network": false, "size_bytes": 0,
            "created_at": "2026-01-01T00:00:00Z", "checksum": "", "took_ms": 0, "dir": "/x",
            "options": {}, "prepared_image": {"reference": "i", "manifest_digest": "d",
                "base_disk": "/b", "env": [], "working_dir": null, "user": null,
                "entrypoint": [], "cmd": []},
        });
        let snapshot: SnapshotInfo = serde_json::from_value(json).unwrap();
        // A snapshot recorded before forks existed has no marker: a user's.
        assert_eq!(snapshot.fork_of, None);
        let later = created + FORK_SNAPSHOT_GRACE;
        assert!(past_grace(&snapshot, later));
        assert!(!past_grace(&snapshot, later - Duration::from_secs(1)));
    }
}
