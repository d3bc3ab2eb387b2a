//! The cgroup of each execution: created under the parent that holds the box's memory limit,
//! killed as a whole (`cgroup.kill`) so daemons and reparented descendants go too, and checked
//! for emptiness before a killed execution's exit is reported.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::log::log;
use crate::system;

/// How long a killed execution's cgroup may take to empty before its exit is reported anyway.
pub(super) const KILL_SETTLE: Duration = Duration::from_secs(2);

/// Creates the cgroup of a new execution, under the parent that holds the box's memory limit
/// (see `system::setup_cgroups`); `None` where cgroups are unavailable.
pub(super) fn create_cgroup(max_processes: Option<u64>) -> Option<(PathBuf, OwnedFd)> {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let dir = PathBuf::from(format!(
        "{}/exec-{}",
        system::EXECS_CGROUP,
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir(&dir).ok()?;
    if let Some(max) = max_processes {
        if let Err(e) = std::fs::write(dir.join("pids.max"), max.to_string()) {
            log(&format!("pids.max not set: {e}"));
        }
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))
    {
        Ok(procs) => Some((dir, procs.into())),
        Err(_) => {
            let _ = std::fs::remove_dir(&dir);
            None
        }
    }
}

pub(super) fn cgroup_is_empty(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.procs")).map_or(true, |procs| procs.trim().is_empty())
}

/// Kills every process in the cgroup at once (`cgroup.kill`), daemons and reparented
/// descendants included.
pub(super) fn kill_cgroup(dir: &Path) {
    if let Err(e) = std::fs::write(dir.join("cgroup.kill"), b"1") {
        log(&format!("cgroup.kill failed: {e}"));
    }
}
