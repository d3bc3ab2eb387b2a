//! The cgroup of each execution: created under the parent that holds the box's memory limit,
//! killed as a whole (`cgroup.kill`) so daemons and reparented descendants go too, and checked
//! for emptiness before a killed execution's exit is reported.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::log::log;
use crate::system;

/// How long a killed execution's cgroup may take to empty before its exit is reported anyway.
pub(super) const KILL_SETTLE: Duration = Duration::from_secs(2);

/// An execution's cgroup: its directory and its `cgroup.procs`, open for the child to move
/// itself in.
type ExecCgroup = (PathBuf, OwnedFd);

/// A cgroup made ahead of time (after the previous execution ended), so that creating one is
/// off the exec round trip: under emulation `mkdir` in the cgroup file system costs about a
/// millisecond.
static SPARE: Mutex<Option<ExecCgroup>> = Mutex::new(None);

/// Makes a new, empty execution cgroup under the parent that holds the box's memory limit
/// (see `system::setup_cgroups`); `None` where cgroups are unavailable.
fn make_cgroup() -> Option<ExecCgroup> {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let dir = PathBuf::from(format!(
        "{}/exec-{}",
        system::EXECS_CGROUP,
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir(&dir).ok()?;
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

/// Makes the spare cgroup the next execution takes, unless there is one.
pub(super) fn prepare_spare_cgroup() {
    let mut spare = SPARE.lock().expect("spare cgroup lock");
    if spare.is_none() {
        *spare = make_cgroup();
    }
}

/// The cgroup of a new execution: the spare one when there is one (nothing ever ran in it),
/// else a new one; `None` where cgroups are unavailable.
pub(super) fn create_cgroup(max_processes: Option<u64>) -> Option<ExecCgroup> {
    let taken = SPARE.lock().expect("spare cgroup lock").take();
    let (dir, procs) = taken.or_else(make_cgroup)?;
    if let Some(max) = max_processes {
        if let Err(e) = std::fs::write(dir.join("pids.max"), max.to_string()) {
            log(&format!("pids.max not set: {e}"));
        }
    }
    Some((dir, procs))
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
