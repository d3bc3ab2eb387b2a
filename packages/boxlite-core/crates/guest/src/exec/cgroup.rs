//! The cgroup of each execution: created under the parent that holds the box's memory limit
//! (with the pids controller only; see `system::setup_limits`), killed as a whole
//! (`cgroup.kill`) so daemons and reparented descendants go too, and checked for emptiness
//! before a killed execution's exit is reported.

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

/// Empty cgroups for the next executions: made ahead of time (after an execution ended), or
/// kept from an ended execution ([`release_cgroup`]). Under emulation making a cgroup and
/// removing it after use cost each exec round trip of `true` about 1.3 ms of ~13 ms; the
/// work ran after the exit was reported, but on the single vCPU it delayed the next execution.
static SPARES: Mutex<Vec<ExecCgroup>> = Mutex::new(Vec::new());

/// How many empty cgroups are kept, for executions that start together.
const MAX_SPARES: usize = 4;

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

/// Makes a spare cgroup for the next execution, unless there is one.
pub(super) fn prepare_spare_cgroup() {
    let mut spares = SPARES.lock().expect("spare cgroups lock");
    if spares.is_empty() {
        spares.extend(make_cgroup());
    }
}

/// The cgroup of a new execution: a spare one when there is one (nothing runs in it), else a
/// new one; `None` where cgroups are unavailable.
pub(super) fn create_cgroup(max_processes: Option<u64>) -> Option<ExecCgroup> {
    let taken = SPARES.lock().expect("spare cgroups lock").pop();
    let (dir, procs) = taken.or_else(make_cgroup)?;
    if let Some(max) = max_processes {
        if let Err(e) = std::fs::write(dir.join("pids.max"), max.to_string()) {
            log(&format!("pids.max not set: {e}"));
        }
    }
    Some((dir, procs))
}

/// The settings an execution may have changed on its own cgroup, and their values in a new one.
const RESET_ON_REUSE: [(&str, &str); 4] = [
    ("pids.max", "max"),
    ("cgroup.max.descendants", "max"),
    ("cgroup.max.depth", "max"),
    ("cgroup.freeze", "0"),
];

/// Whether an ended execution's cgroup can serve another execution as a new one would: nothing
/// runs in it, it is a plain domain with no groups under it and no controllers enabled for
/// any, and its settings are back to their defaults (the execution may have changed them, as
/// root in the box). Only its cumulative counters (`cpu.stat`, `pids.peak`, `pids.events`) go
/// on from where they were.
fn reusable(dir: &Path) -> bool {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    read("cgroup.events").lines().any(|l| l == "populated 0")
        && read("cgroup.type").trim() == "domain"
        && read("cgroup.subtree_control").trim().is_empty()
        && read("cgroup.stat").lines().any(|l| l == "nr_descendants 0")
        && RESET_ON_REUSE
            .iter()
            .all(|(name, value)| std::fs::write(dir.join(name), value).is_ok())
}

/// Ends an execution's use of its cgroup: keeps it as a spare when it is [`reusable`] and
/// fewer than [`MAX_SPARES`] are kept, else removes it (which fails while daemons the
/// execution left run in it: they keep their group).
pub(super) fn release_cgroup(dir: PathBuf) {
    let room = SPARES.lock().expect("spare cgroups lock").len() < MAX_SPARES;
    if room && reusable(&dir) {
        if let Ok(procs) = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))
        {
            let mut spares = SPARES.lock().expect("spare cgroups lock");
            if spares.len() < MAX_SPARES {
                spares.push((dir, procs.into()));
                return;
            }
        }
    }
    let _ = std::fs::remove_dir(&dir);
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
