//! Box state that outlives a process: `db/boxes.db` (SQLite), one row per box with its
//! options, its image, its last known info and who owns it (the process running its VM).
//!
//! Processes are identified by pid and start time (from `/proc/<pid>/stat`), so a recycled
//! pid is never mistaken for the owner or the VMM. Ownership changes only by compare-and-swap
//! on that pair, so two runtimes opening the same home cannot both adopt one box.
//!
//! What a box's state is ([`BoxStatus`], [`BoxInfo`], [`StartTimings`]) is defined here, next to
//! where it is stored; `litebox` re-exports it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::image::PreparedImage;
use crate::options::BoxOptions;

/// Where a box is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BoxStatus {
    Created,
    Running,
    /// The VM's vCPUs are stopped (`pause()`); `resume()` runs them again.
    Paused,
    Stopping,
    Stopped,
    /// The VM ended without being asked to.
    Crashed,
    /// Stopped and deleted (auto_remove or remove()).
    Removed,
}

impl BoxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BoxStatus::Created => "created",
            BoxStatus::Running => "running",
            BoxStatus::Paused => "paused",
            BoxStatus::Stopping => "stopping",
            BoxStatus::Stopped => "stopped",
            BoxStatus::Crashed => "crashed",
            BoxStatus::Removed => "removed",
        }
    }
}

/// Durations of the stages of the last start, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StartTimings {
    pub image_ms: u64,
    pub disk_ms: u64,
    pub spawn_ms: u64,
    /// From launching the VM to the agent's hello.
    pub boot_ms: u64,
    /// The guest's own uptime at its hello.
    pub guest_uptime_ms: u64,
}

/// A snapshot of a box for `info()` and listings (serialised to the bindings as JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BoxInfo {
    pub id: String,
    pub name: Option<String>,
    pub status: BoxStatus,
    pub image: String,
    pub image_digest: String,
    pub cpus: u32,
    pub memory_mib: u32,
    pub auto_remove: bool,
    pub accel: String,
    pub accel_reason: String,
    pub kernel_release: Option<String>,
    pub vmm_pid: Option<u32>,
    pub created_at: String,
    pub dir: PathBuf,
    pub timings: StartTimings,
    pub last_error: Option<String>,
    /// A stopped box holding the state `stop(keep_state=True)` saved: its next start resumes it.
    #[serde(default)]
    pub hibernated: bool,
}

/// A process, as pid plus its start time (clock ticks since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: u32,
    pub start: u64,
}

impl ProcessId {
    /// This process.
    pub fn current() -> ProcessId {
        let pid = std::process::id();
        ProcessId {
            pid,
            start: start_time(pid).unwrap_or(0),
        }
    }

    /// `pid` as it is now, if it runs.
    pub fn of(pid: u32) -> Option<ProcessId> {
        start_time(pid).map(|start| ProcessId { pid, start })
    }

    /// Still the same process, and not a zombie.
    pub fn alive(&self) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            Ok(stat) => {
                let fields = stat_fields(&stat);
                fields.first().is_some_and(|s| *s != "Z")
                    && fields.get(19).and_then(|s| s.parse::<u64>().ok()) == Some(self.start)
            }
            Err(_) => false,
        }
    }
}

/// The fields of `/proc/<pid>/stat` after the command name (state first).
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(") ")
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default()
}

fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_fields(&stat).get(19)?.parse().ok()
}

/// One box as stored.
#[derive(Debug, Clone)]
pub struct BoxRecord {
    pub id: String,
    pub name: Option<String>,
    pub options: BoxOptions,
    pub image: PreparedImage,
    pub info: BoxInfo,
    pub dir: PathBuf,
    pub created_at: String,
    /// The process whose runtime runs (or last ran) the box's VM.
    pub owner: Option<ProcessId>,
    /// The VMM process while the box runs.
    pub vmm: Option<ProcessId>,
}

pub struct BoxDb {
    path: PathBuf,
}

fn db_error(path: &Path, e: rusqlite::Error) -> Error {
    crate::sqlite::error("box state", path, e)
}

fn pid_pair(pid: Option<i64>, start: Option<i64>) -> Option<ProcessId> {
    Some(ProcessId {
        pid: pid? as u32,
        start: start? as u64,
    })
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS boxes (
                    id TEXT PRIMARY KEY,
                    name TEXT UNIQUE,
                    options TEXT NOT NULL,
                    image TEXT NOT NULL,
                    info TEXT NOT NULL,
                    dir TEXT NOT NULL,
                    created_at TEXT NOT NULL,
                    owner_pid INTEGER,
                    owner_start INTEGER,
                    vmm_pid INTEGER,
                    vmm_start INTEGER
                );";

impl BoxDb {
    pub fn open(path: PathBuf) -> Result<BoxDb> {
        let db = BoxDb { path };
        crate::sqlite::create(&db.path, SCHEMA).map_err(|e| db_error(&db.path, e))?;
        Ok(db)
    }

    fn connect(&self) -> Result<Connection> {
        crate::sqlite::connect(&self.path).map_err(|e| db_error(&self.path, e))
    }

    /// Inserts or updates a box's row.
    pub fn put(&self, record: &BoxRecord) -> Result<()> {
        let conn = self.connect()?;
        conn.execute(
            "INSERT INTO boxes (id, name, options, image, info, dir, created_at, owner_pid, owner_start, vmm_pid, vmm_start)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT(id) DO UPDATE SET info = ?5, owner_pid = ?8, owner_start = ?9, vmm_pid = ?10, vmm_start = ?11",
            params![
                record.id,
                record.name,
                serde_json::to_string(&record.options).expect("options serialise"),
                serde_json::to_string(&record.image).expect("image serialises"),
                serde_json::to_string(&record.info).expect("info serialises"),
                record.dir.display().to_string(),
                record.created_at,
                record.owner.map(|p| p.pid as i64),
                record.owner.map(|p| p.start as i64),
                record.vmm.map(|p| p.pid as i64),
                record.vmm.map(|p| p.start as i64),
            ],
        )
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Error::Conflict(format!(
                    "a box named {:?} already exists: pick another name, or remove that box",
                    record.name.as_deref().unwrap_or_default()
                ))
            }
            other => db_error(&self.path, other),
        })?;
        Ok(())
    }

    fn row(row: &rusqlite::Row<'_>) -> rusqlite::Result<BoxRecord> {
        let json = |i: usize| -> rusqlite::Result<String> { row.get(i) };
        let parse_err = |i: usize, e: serde_json::Error| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
        };
        Ok(BoxRecord {
            id: row.get(0)?,
            name: row.get(1)?,
            options: serde_json::from_str(&json(2)?).map_err(|e| parse_err(2, e))?,
            image: serde_json::from_str(&json(3)?).map_err(|e| parse_err(3, e))?,
            info: serde_json::from_str(&json(4)?).map_err(|e| parse_err(4, e))?,
            dir: PathBuf::from(row.get::<_, String>(5)?),
            created_at: row.get(6)?,
            owner: pid_pair(row.get(7)?, row.get(8)?),
            vmm: pid_pair(row.get(9)?, row.get(10)?),
        })
    }

    const COLUMNS: &'static str =
        "id, name, options, image, info, dir, created_at, owner_pid, owner_start, vmm_pid, vmm_start";

    pub fn list(&self) -> Result<Vec<BoxRecord>> {
        let conn = self.connect()?;
        let mut stmt = conn
            .prepare(&format!("SELECT {} FROM boxes ORDER BY id", Self::COLUMNS))
            .map_err(|e| db_error(&self.path, e))?;
        let rows = stmt
            .query_map([], Self::row)
            .map_err(|e| db_error(&self.path, e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| db_error(&self.path, e))
    }

    /// The box with this id, or else this name.
    pub fn find(&self, id_or_name: &str) -> Result<Option<BoxRecord>> {
        let conn = self.connect()?;
        conn.query_row(
            &format!(
                "SELECT {} FROM boxes WHERE id = ?1 OR name = ?1 ORDER BY id = ?1 DESC LIMIT 1",
                Self::COLUMNS
            ),
            params![id_or_name],
            Self::row,
        )
        .optional()
        .map_err(|e| db_error(&self.path, e))
    }

    pub fn remove(&self, id: &str) -> Result<()> {
        self.connect()?
            .execute("DELETE FROM boxes WHERE id = ?1", params![id])
            .map_err(|e| db_error(&self.path, e))?;
        Ok(())
    }

    /// Makes `new` the owner if the owner is still `old`; false if another process got there
    /// first.
    pub fn claim(&self, id: &str, old: Option<ProcessId>, new: ProcessId) -> Result<bool> {
        let n = self
            .connect()?
            .execute(
                "UPDATE boxes SET owner_pid = ?2, owner_start = ?3
                 WHERE id = ?1 AND owner_pid IS ?4 AND owner_start IS ?5",
                params![
                    id,
                    new.pid as i64,
                    new.start as i64,
                    old.map(|p| p.pid as i64),
                    old.map(|p| p.start as i64),
                ],
            )
            .map_err(|e| db_error(&self.path, e))?;
        Ok(n == 1)
    }
}

/// A VMM process this process did not start (a box taken over from a dead owner): its exit is
/// watched through a pidfd, and it is killed only while it is still the same process.
pub struct AdoptedVm {
    process: ProcessId,
    exit: tokio::sync::watch::Receiver<Option<crate::hypervisor::VmExit>>,
}

impl AdoptedVm {
    /// Watches `process`; must be called on the engine's tokio runtime.
    pub fn adopt(process: ProcessId) -> std::io::Result<AdoptedVm> {
        use std::os::fd::{FromRawFd, OwnedFd};
        // SAFETY: pidfd_open returns a new descriptor we own, or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, process.pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: the AsyncFd owns the pidfd, so the descriptor outlives its registration.
        let watched = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
        }?;
        let (tx, rx) = tokio::sync::watch::channel(None);
        tokio::spawn(async move {
            // A pidfd becomes readable when its process exits.
            let _ = watched.readable().await;
            let _ = tx.send(Some(crate::hypervisor::VmExit {
                code: None,
                signal: None,
            }));
        });
        Ok(AdoptedVm { process, exit: rx })
    }
}

impl crate::hypervisor::VmHandle for AdoptedVm {
    fn pid(&self) -> Option<u32> {
        Some(self.process.pid)
    }

    fn kill(&self) {
        if self.process.alive() {
            // SAFETY: signalling a process we verified by pid and start time.
            unsafe { libc::kill(self.process.pid as i32, libc::SIGKILL) };
        }
    }

    fn exit_watch(&self) -> tokio::sync::watch::Receiver<Option<crate::hypervisor::VmExit>> {
        self.exit.clone()
    }
}

/// Kills a VMM left behind by a dead owner and waits (briefly) for it to go.
pub async fn kill_orphan_vmm(process: ProcessId) {
    if !process.alive() {
        return;
    }
    // SAFETY: as above, a verified process.
    unsafe { libc::kill(process.pid as i32, libc::SIGKILL) };
    for _ in 0..200 {
        if !process.alive() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::warn!(
        pid = process.pid,
        "an orphaned VMM did not exit after SIGKILL"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_not() {
        let me = ProcessId::current();
        assert!(me.alive());
        assert!(!ProcessId {
            start: me.start + 1,
            ..me
        }
        .alive());
        assert!(!ProcessId {
            pid: u32::MAX - 1,
            start: 0
        }
        .alive());
    }
}
