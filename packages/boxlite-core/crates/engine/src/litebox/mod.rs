//! One box: its VM, its channel to the agent, its lifecycle and executions.
//!
//! This module holds the [`LiteBox`] struct and the types its parts share; each concern has a
//! file of its own, all adding `impl LiteBox` blocks: `lifecycle` (start, stop, attach, crash
//! and declared-broken handling), `record` (info, `config.json` and the `db/boxes.db` row),
//! `confinement` (the VMM's confinement from `SecurityOptions`), `exec` (starting an
//! execution), `execution` (the per-execution driver and [`Execution`]), `files`
//! (copy_in/copy_out), `file_ops` (read_file, write_file, list_dir, stat) and `metrics` ([`BoxMetrics`]), `pause` (pause and resume over the VMM's control channel), `snapshot` (saving the box's
//! whole state; its restore is part of `lifecycle`'s start), `hibernate` (`stop(keep_state=True)`:
//! the state saved into the box's own directory, resumed by the next start), `fork` (the
//! snapshot a fork starts from, and a fork's options). [`BoxInfo`] and [`BoxStatus`] live with
//! the state they describe, in [`crate::state`], and are re-exported here.

mod confinement;
mod exec;
mod execution;
mod file_ops;
mod files;
mod fork;
mod hibernate;
mod lifecycle;
mod memory_file;
mod metrics;
mod pause;
mod record;
mod snapshot;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::agent::AgentClient;
use crate::assets::GuestAssets;
use crate::hypervisor::accel::AccelChoice;
use crate::hypervisor::qmp::{QmpClient, QmpError};
use crate::hypervisor::{Hypervisor, VmHandle};
use crate::image::PreparedImage;
use crate::network::Passt;
use crate::options::BoxOptions;

pub use crate::state::{BoxInfo, BoxStatus, StartTimings};
pub use exec::ExecSpec;
pub use execution::{ExecOutput, Execution, KILL_CONFIRM_TIMEOUT, TIMEOUT_EXIT_CODE};
pub use file_ops::{WriteOptions, MAX_LIST_ENTRIES};
pub use hibernate::HIBERNATED_DIR;
pub(crate) use metrics::process_usage;
pub use metrics::BoxMetrics;

struct Running {
    vm: Box<dyn VmHandle>,
    /// The box's passt, if it has a network; killed with the box at the latest.
    _network: Option<Passt>,
    agent: Arc<AgentClient>,
    kernel_release: String,
    /// Set before a requested stop, so the exit watcher does not call it a crash.
    stopping: Arc<AtomicBool>,
    /// The VMM's control socket (QMP), connected on first use (see `pause`).
    qmp_socket: Option<PathBuf>,
    qmp: tokio::sync::Mutex<Option<QmpClient>>,
    /// Whether the guest hands the pages it frees back (its RAM is anonymous: booted, or
    /// resumed from hibernation; not mapped from a snapshot's memory file).
    reports_free_pages: bool,
}

impl Running {
    /// Runs `op` on the VMM's control channel (QMP), connecting it on first use and again
    /// after a failure, which drops it.
    async fn on_qmp<T>(
        &self,
        op: impl AsyncFnOnce(&mut QmpClient) -> std::result::Result<T, QmpError>,
    ) -> std::result::Result<T, QmpError> {
        let Some(socket) = &self.qmp_socket else {
            return Err(QmpError::Closed);
        };
        let mut qmp = self.qmp.lock().await;
        if qmp.is_none() {
            *qmp = Some(QmpClient::connect(socket).await?);
        }
        let done = op(qmp.as_mut().expect("connected")).await;
        if done.is_err() {
            *qmp = None;
        }
        done
    }
}

struct State {
    status: BoxStatus,
    running: Option<Arc<Running>>,
    timings: StartTimings,
    last_error: Option<String>,
}

/// Shared by every box of a runtime.
pub struct Platform {
    pub hypervisor: Arc<dyn Hypervisor>,
    pub assets: GuestAssets,
    pub accel: AccelChoice,
    /// The home's snapshots (taken by `LiteBox::snapshot`, restored by `LiteBox::start`).
    pub snapshots: Arc<crate::snapshot::SnapshotStore>,
}

impl Platform {
    /// The kernel, agent and VMM a snapshot taken now depends on.
    pub fn versions(&self) -> crate::error::Result<crate::snapshot::Versions> {
        use crate::error::IoContext;
        let hash = |path: &std::path::Path| {
            crate::snapshot::short_hash(path).context(|| format!("read {}", path.display()))
        };
        Ok(crate::snapshot::Versions {
            kernel: hash(&self.assets.kernel)?,
            agent: hash(&self.assets.initrd)?,
            qemu: self.hypervisor.version()?,
        })
    }
}

pub struct LiteBox {
    pub id: String,
    pub name: Option<String>,
    options: BoxOptions,
    image: PreparedImage,
    dir: PathBuf,
    platform: Arc<Platform>,
    created_at: SystemTime,
    state: Mutex<State>,
    /// Serialises start and stop.
    lifecycle: tokio::sync::Mutex<()>,
    /// Where the box's state is persisted (`db/boxes.db`), once the runtime registered it.
    db: std::sync::OnceLock<Arc<crate::state::BoxDb>>,
    execs_started: std::sync::atomic::AtomicU64,
    /// The snapshot this box is restored from at its first start (see `lifecycle`).
    restore_from: Mutex<Option<crate::snapshot::SnapshotInfo>>,
}

impl LiteBox {
    pub(crate) fn new(
        id: String,
        options: BoxOptions,
        image: PreparedImage,
        dir: PathBuf,
        platform: Arc<Platform>,
    ) -> LiteBox {
        LiteBox {
            id,
            name: options.name.clone(),
            options,
            image,
            dir,
            platform,
            created_at: SystemTime::now(),
            state: Mutex::new(State {
                status: BoxStatus::Created,
                running: None,
                timings: StartTimings::default(),
                last_error: None,
            }),
            lifecycle: tokio::sync::Mutex::new(()),
            db: std::sync::OnceLock::new(),
            execs_started: std::sync::atomic::AtomicU64::new(0),
            restore_from: Mutex::new(None),
        }
    }
}
