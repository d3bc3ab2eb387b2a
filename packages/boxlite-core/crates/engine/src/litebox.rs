//! One box: its VM, its channel to the agent, its lifecycle and executions.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use boxlite_protocol::{ExecRequest, ExitStatus, OutputStream};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::agent::{AgentClient, ConnectError, ExecEvent};
use crate::assets::GuestAssets;
use crate::boot;
use crate::disk;
use crate::error::{Error, IoContext, Result};
use crate::hypervisor::accel::AccelChoice;
use crate::hypervisor::{Hypervisor, VmHandle, VmSpec};
use crate::image::PreparedImage;
use crate::options::BoxOptions;

/// Where a box is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BoxStatus {
    Created,
    Running,
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
}

struct Running {
    vm: Box<dyn VmHandle>,
    agent: Arc<AgentClient>,
    kernel_release: String,
    /// Set before a requested stop, so the exit watcher does not call it a crash.
    stopping: Arc<AtomicBool>,
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
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Unix sockets paths are limited to 107 bytes; deep homes fall back to a private runtime dir.
fn agent_socket_path(dir: &Path, id: &str) -> Result<PathBuf> {
    let preferred = dir.join("agent.sock");
    if preferred.as_os_str().len() < 100 {
        return Ok(preferred);
    }
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_dir())
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/boxlite-{}", unsafe { libc::getuid() })));
    let sockets = base.join("boxlite-sockets");
    std::fs::create_dir_all(&sockets).context(|| format!("create {}", sockets.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sockets, std::fs::Permissions::from_mode(0o700))
        .context(|| format!("chmod {}", sockets.display()))?;
    Ok(sockets.join(format!("{id}.sock")))
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
        }
    }

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
    fn check_not_running_elsewhere(&self) -> Result<()> {
        let Some(db) = self.db.get() else {
            return Ok(());
        };
        let me = crate::state::ProcessId::current();
        match db.find(&self.id)?.and_then(|r| r.owner) {
            Some(owner) if owner != me && owner.alive() => Err(Error::InvalidOption(format!(
                "box {} was started by process {} meanwhile: a box runs in one process at a time",
                self.id, owner.pid
            ))),
            _ => Ok(()),
        }
    }

    pub(crate) fn set_db(&self, db: Arc<crate::state::BoxDb>) {
        let _ = self.db.set(db);
    }

    /// Records the box in `db/boxes.db`: this process owns it while its VM runs.
    fn persist(&self) -> Result<()> {
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
            "volumes": [],
            "ports": [],
            "created_at": info.created_at,
            "status": info.status,
        });
        let path = self.dir.join("config.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&config).expect("json"))
            .context(|| format!("write {}", path.display()))?;
        self.persist()
    }

    fn disk_path(&self) -> PathBuf {
        self.dir.join("disk.qcow2")
    }

    /// Boots the VM (creating the box's disk on first start) and waits for the agent.
    pub async fn start(self: &Arc<Self>) -> Result<()> {
        let _lifecycle = self.lifecycle.lock().await;
        match self.status() {
            BoxStatus::Running => return Ok(()),
            BoxStatus::Removed => {
                return Err(Error::BoxNotRunning {
                    id: self.id.clone(),
                    state: "removed".into(),
                    action: "start".into(),
                })
            }
            _ => {}
        }
        self.check_not_running_elsewhere()?;
        let disk_started = Instant::now();
        if !self.disk_path().exists() {
            let (base, overlay) = (self.image.base_disk.clone(), self.disk_path());
            tokio::task::spawn_blocking(move || disk::create_overlay(&base, &overlay))
                .await
                .map_err(|e| Error::Disk(e.to_string()))??;
        }
        let disk_ms = disk_started.elapsed().as_millis() as u64;

        let socket = agent_socket_path(&self.dir, &self.id)?;
        let _ = std::fs::remove_file(&socket);
        let accel = self.platform.accel.accel;
        let spec = VmSpec {
            name: self.id.clone(),
            accel,
            kernel: self.platform.assets.kernel.clone(),
            initrd: self.platform.assets.initrd.clone(),
            cmdline: boot::kernel_cmdline(
                &self.id[..12.min(self.id.len())].to_ascii_lowercase(),
                Some("/dev/vda"),
            ),
            cpus: self.options.cpus,
            memory_mib: self.options.memory_mib,
            root_disk: Some(self.disk_path()),
            agent_socket: socket.clone(),
            console_log: self.dir.join("console.log"),
            vmm_log: self.dir.join("vmm.log"),
        };
        let launched = Instant::now();
        let vm = self.platform.hypervisor.launch(&spec)?;
        let spawn_ms = launched.elapsed().as_millis() as u64;
        let deadline = launched + boot::boot_timeout(accel);
        let (agent, hello) = match AgentClient::connect(&socket, deadline, vm.exit_watch()).await {
            Ok(ok) => ok,
            Err(err) => {
                vm.kill();
                let _ = vm.exit_watch().wait_for(|e| e.is_some()).await;
                let why = match err {
                    ConnectError::VmExited(exit) => format!("the VM exited ({exit}) before the guest agent answered"),
                    ConnectError::TimedOut => format!(
                        "the guest agent did not answer within {} s on {accel} (set BOXLITE_BOOT_TIMEOUT to wait longer)",
                        boot::boot_timeout(accel).as_secs()
                    ),
                    ConnectError::Protocol(p) => p,
                };
                let reason = format!(
                    "{why}\n--- VMM log ({}) ---\n{}\n--- console ({}) ---\n{}",
                    spec.vmm_log.display(),
                    tail(&spec.vmm_log, 10),
                    spec.console_log.display(),
                    tail(&spec.console_log, 20)
                );
                let mut state = self.state.lock().expect("state lock");
                state.status = BoxStatus::Crashed;
                state.last_error = Some(reason.clone());
                return Err(Error::BootFailed {
                    id: self.id.clone(),
                    reason,
                });
            }
        };
        let boot_ms = launched.elapsed().as_millis() as u64;
        tracing::info!(id = %self.id, boot_ms, guest_uptime_ms = hello.uptime_ms, %accel, "box started");

        let stopping = Arc::new(AtomicBool::new(false));
        let running = Arc::new(Running {
            vm,
            agent: Arc::new(agent),
            kernel_release: hello.kernel_release,
            stopping: stopping.clone(),
        });
        {
            let mut state = self.state.lock().expect("state lock");
            state.status = BoxStatus::Running;
            state.running = Some(running.clone());
            state.last_error = None;
            let image_ms = state.timings.image_ms;
            state.timings = StartTimings {
                image_ms,
                disk_ms,
                spawn_ms,
                boot_ms,
                guest_uptime_ms: hello.uptime_ms,
            };
        }
        self.watch_for_exit(running);
        let _ = self.write_config();
        Ok(())
    }

    /// Marks the box crashed when its VM ends without a stop request.
    fn watch_for_exit(self: &Arc<Self>, running: Arc<Running>) {
        let this = Arc::downgrade(self);
        let mut exit = running.vm.exit_watch();
        tokio::spawn(async move {
            let Ok(exit) = exit
                .wait_for(|e| e.is_some())
                .await
                .map(|e| e.clone().expect("exited"))
            else {
                return;
            };
            if running.stopping.load(Ordering::SeqCst) {
                return;
            }
            let Some(this) = this.upgrade() else { return };
            let reason = format!(
                "the VM process exited unexpectedly ({exit}); console: {}",
                tail(&this.dir.join("console.log"), 5)
            );
            tracing::warn!(id = %this.id, %reason, "box crashed");
            let mut state = this.state.lock().expect("state lock");
            if state
                .running
                .as_ref()
                .is_some_and(|r| Arc::ptr_eq(r, &running))
            {
                state.status = BoxStatus::Crashed;
                state.running = None;
                state.last_error = Some(reason);
                drop(state);
                let _ = this.persist();
            }
        });
    }

    fn running(&self, action: &str) -> Result<Arc<Running>> {
        let state = self.state.lock().expect("state lock");
        match (&state.running, state.status) {
            (Some(r), BoxStatus::Running) => Ok(r.clone()),
            (_, BoxStatus::Crashed) => Err(Error::BoxDied {
                id: self.id.clone(),
                reason: state
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "the VM ended".into()),
            }),
            (_, status) => Err(Error::BoxNotRunning {
                id: self.id.clone(),
                state: status.as_str().into(),
                action: action.into(),
            }),
        }
    }

    /// Shuts the guest down cleanly (kills the VM if it does not end in time), then deletes the
    /// box's files when `auto_remove` is set.
    pub async fn stop(&self) -> Result<()> {
        let _lifecycle = self.lifecycle.lock().await;
        let running = {
            let mut state = self.state.lock().expect("state lock");
            match state.status {
                BoxStatus::Removed | BoxStatus::Stopped => return Ok(()),
                _ => {}
            }
            state.status = BoxStatus::Stopping;
            state.running.take()
        };
        if let Some(running) = running {
            running.stopping.store(true, Ordering::SeqCst);
            let mut exit = running.vm.exit_watch();
            let clean = running.agent.shutdown().await.is_ok()
                && tokio::time::timeout(Duration::from_secs(10), exit.wait_for(|e| e.is_some()))
                    .await
                    .is_ok();
            if !clean {
                tracing::warn!(id = %self.id, "guest did not power off in time; killing its VM");
                running.vm.kill();
                let _ = exit.wait_for(|e| e.is_some()).await;
            }
        }
        self.state.lock().expect("state lock").status = BoxStatus::Stopped;
        if self.options.auto_remove {
            self.delete_files()?;
        } else {
            let _ = self.write_config();
        }
        Ok(())
    }

    /// Deletes the box's directory (its disk included). The box must be stopped.
    pub(crate) fn delete_files(&self) -> Result<()> {
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::Io {
                    context: format!("remove {}", self.dir.display()),
                    source: e,
                })
            }
        }
        self.state.lock().expect("state lock").status = BoxStatus::Removed;
        if let Some(db) = self.db.get() {
            db.remove(&self.id)?;
        }
        Ok(())
    }

    /// Takes over the running VM `vm` of this box (its previous owner died): connects to its
    /// agent as [`LiteBox::start`] does after a launch.
    pub(crate) async fn attach(self: &Arc<Self>, vm: Box<dyn VmHandle>) -> Result<()> {
        let _lifecycle = self.lifecycle.lock().await;
        let socket = agent_socket_path(&self.dir, &self.id)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let (agent, hello) = match AgentClient::connect(&socket, deadline, vm.exit_watch()).await {
            Ok(ok) => ok,
            Err(e) => {
                let why = match e {
                    ConnectError::VmExited(exit) => format!("its VM exited ({exit})"),
                    ConnectError::TimedOut => "its guest agent did not answer within 10 s".into(),
                    ConnectError::Protocol(p) => p,
                };
                return Err(Error::Channel {
                    id: self.id.clone(),
                    reason: format!("cannot reattach: {why}"),
                });
            }
        };
        let running = Arc::new(Running {
            vm,
            agent: Arc::new(agent),
            kernel_release: hello.kernel_release,
            stopping: Arc::new(AtomicBool::new(false)),
        });
        {
            let mut state = self.state.lock().expect("state lock");
            state.status = BoxStatus::Running;
            state.running = Some(running.clone());
            state.last_error = None;
        }
        self.watch_for_exit(running);
        tracing::info!(id = %self.id, "reattached to a running box");
        self.write_config()
    }

    /// Kills the VM at once (no clean shutdown), e.g. at interpreter exit.
    pub fn kill_vm(&self) {
        if let Some(running) = self.state.lock().expect("state lock").running.as_ref() {
            running.stopping.store(true, Ordering::SeqCst);
            running.vm.kill();
        }
    }

    /// Starts `program` with `args` in the box.
    pub async fn exec(self: &Arc<Self>, spec: ExecSpec) -> Result<Execution> {
        let running = self.running("exec")?;
        let mut env = self.image.env.clone();
        for (k, v) in self.options.env.iter().chain(spec.env.iter()) {
            env.retain(|(existing, _)| existing != k);
            env.push((k.clone(), v.clone()));
        }
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.push((
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ));
        }
        let user = spec
            .user
            .as_deref()
            .or(self.image.user.as_deref())
            .map(parse_numeric_user)
            .transpose()?
            .flatten();
        if !env.iter().any(|(k, _)| k == "HOME") {
            env.push((
                "HOME".into(),
                if user.is_some_and(|(uid, _)| uid != 0) {
                    "/".into()
                } else {
                    "/root".into()
                },
            ));
        }
        let working_dir = spec
            .working_dir
            .or_else(|| self.options.working_dir.clone())
            .or_else(|| self.image.working_dir.clone())
            .unwrap_or_else(|| "/".into());
        let timeout = spec.timeout;
        let request = ExecRequest {
            exec_id: 0,
            program: spec.program,
            args: spec.args,
            env,
            working_dir,
            stdin: spec.stdin,
            user,
        };
        let (exec_id, events) = running
            .agent
            .exec(request)
            .await
            .map_err(|e| self.channel_error(e))?;
        Ok(Execution {
            litebox: self.clone(),
            agent: running.agent.clone(),
            exec_id,
            deadline: timeout.map(|t| Instant::now() + t),
            events: tokio::sync::Mutex::new(Collector::new(events)),
        })
    }

    /// The guest stopped answering: kill its VM so nothing keeps running unobserved, and say so.
    pub(crate) fn declare_broken(&self, why: &str) -> Error {
        let reason = format!("{why}; the box was declared broken and its VM killed");
        tracing::warn!(id = %self.id, %reason, "box broken");
        let mut state = self.state.lock().expect("state lock");
        if let Some(running) = state.running.take() {
            running.stopping.store(true, Ordering::SeqCst);
            running.vm.kill();
        }
        state.status = BoxStatus::Crashed;
        state.last_error = Some(reason.clone());
        Error::BoxDied {
            id: self.id.clone(),
            reason,
        }
    }

    /// A channel failure: the box died if its VM is gone, otherwise a channel error.
    fn channel_error(&self, reason: String) -> Error {
        let state = self.state.lock().expect("state lock");
        if state.status == BoxStatus::Crashed {
            return Error::BoxDied {
                id: self.id.clone(),
                reason: state.last_error.clone().unwrap_or(reason),
            };
        }
        Error::Channel {
            id: self.id.clone(),
            reason,
        }
    }
}

/// `uid[:gid]` in numbers; user names need the image's /etc/passwd, which comes later.
fn parse_numeric_user(user: &str) -> Result<Option<(u32, u32)>> {
    let (u, g) = user.split_once(':').unwrap_or((user, ""));
    if u == "root" || u == "0" && (g.is_empty() || g == "0") {
        return Ok(None);
    }
    let uid = u.parse::<u32>().map_err(|_| {
        Error::InvalidOption(format!(
            "user {user:?}: only numeric uid[:gid] is supported so far"
        ))
    })?;
    let gid = if g.is_empty() {
        uid
    } else {
        g.parse::<u32>()
            .map_err(|_| Error::InvalidOption(format!("user {user:?}: gid must be numeric")))?
    };
    Ok(Some((uid, gid)))
}

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct ExecSpec {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub stdin: bool,
    /// Kill the execution (every process it started) when it runs longer than this.
    pub timeout: Option<Duration>,
}

/// The end of an execution.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    pub exit_code: i32,
    /// The signal that killed the process, if one did.
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Why the process never started (exit code 126 or 127), if it did not.
    pub error: Option<String>,
    /// The timeout fired: every process of the execution was killed, and `exit_code` is 124.
    pub timed_out: bool,
}

/// Exit code of an execution killed by its timeout (as `timeout(1)` reports it).
pub const TIMEOUT_EXIT_CODE: i32 = 124;

/// How long the agent may take to confirm a kill before the box is declared broken.
const KILL_CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

struct Collector {
    events: mpsc::UnboundedReceiver<ExecEvent>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    pid: Option<u32>,
    result: Option<std::result::Result<ExecOutput, String>>,
    /// The timeout fired and the kill was sent; the next exit is a timeout.
    timed_out: bool,
}

impl Collector {
    fn new(events: mpsc::UnboundedReceiver<ExecEvent>) -> Self {
        Collector {
            events,
            stdout: Vec::new(),
            stderr: Vec::new(),
            pid: None,
            result: None,
            timed_out: false,
        }
    }
}

/// A running (or finished) process in a box.
pub struct Execution {
    litebox: Arc<LiteBox>,
    agent: Arc<AgentClient>,
    exec_id: u32,
    /// When the execution's timeout fires, if it has one.
    deadline: Option<Instant>,
    events: tokio::sync::Mutex<Collector>,
}

impl Execution {
    pub fn id(&self) -> u32 {
        self.exec_id
    }

    /// Waits for the process to end; returns its exit status and all of its output.
    /// Waiting again returns the same result.
    pub async fn wait(&self) -> Result<ExecOutput> {
        let mut c = self.events.lock().await;
        while c.result.is_none() {
            let event = match (self.deadline, c.timed_out) {
                (Some(deadline), false) => {
                    match tokio::time::timeout_at(deadline, c.events.recv()).await {
                        Ok(event) => event,
                        Err(_) => {
                            // The timeout contract: every process of the execution is dead before
                            // wait() returns; the agent reports the exit once its cgroup is empty.
                            c.timed_out = true;
                            self.agent
                                .kill_tree(self.exec_id)
                                .await
                                .map_err(|e| self.litebox.channel_error(e))?;
                            continue;
                        }
                    }
                }
                (_, true) => {
                    match tokio::time::timeout(KILL_CONFIRM_TIMEOUT, c.events.recv()).await {
                        Ok(event) => event,
                        Err(_) => {
                            return Err(self
                                .litebox
                                .declare_broken("the guest agent did not confirm a kill"))
                        }
                    }
                }
                (None, false) => c.events.recv().await,
            }
            .unwrap_or_else(|| ExecEvent::Lost("the channel closed".into()));
            match event {
                ExecEvent::Started { pid } => c.pid = Some(pid),
                ExecEvent::Output {
                    stream: OutputStream::Stdout,
                    data,
                } => c.stdout.extend_from_slice(&data),
                ExecEvent::Output {
                    stream: OutputStream::Stderr,
                    data,
                } => c.stderr.extend_from_slice(&data),
                ExecEvent::Exited(status) => {
                    let (signal, error) = match &status {
                        ExitStatus::Signal(s) => (Some(*s), None),
                        ExitStatus::SpawnFailed { message, .. } => (None, Some(message.clone())),
                        ExitStatus::Code(_) => (None, None),
                    };
                    let timed_out = c.timed_out;
                    let output = ExecOutput {
                        exit_code: if timed_out {
                            TIMEOUT_EXIT_CODE
                        } else {
                            status.code()
                        },
                        timed_out,
                        signal,
                        stdout: std::mem::take(&mut c.stdout),
                        stderr: std::mem::take(&mut c.stderr),
                        error,
                    };
                    c.result = Some(Ok(output));
                }
                ExecEvent::Lost(reason) => c.result = Some(Err(reason)),
            }
        }
        match c.result.clone().expect("result set") {
            Ok(output) => Ok(output),
            Err(reason) => {
                // Give the exit watcher a moment to record a crash, so the error says "died".
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err(self.litebox.channel_error(reason))
            }
        }
    }

    /// Sends `signal` to the execution's process group.
    pub async fn signal(&self, signal: i32) -> Result<()> {
        self.agent
            .signal(self.exec_id, signal)
            .await
            .map_err(|e| self.litebox.channel_error(e))
    }

    /// Kills every process the execution started (its cgroup in the guest), descendants that
    /// left its process group included.
    pub async fn kill(&self) -> Result<()> {
        self.agent
            .kill_tree(self.exec_id)
            .await
            .map_err(|e| self.litebox.channel_error(e))
    }

    pub async fn write_stdin(&self, data: Vec<u8>) -> Result<()> {
        self.agent
            .stdin(self.exec_id, data)
            .await
            .map_err(|e| self.litebox.channel_error(e))
    }

    pub async fn close_stdin(&self) -> Result<()> {
        self.agent
            .close_stdin(self.exec_id)
            .await
            .map_err(|e| self.litebox.channel_error(e))
    }
}
