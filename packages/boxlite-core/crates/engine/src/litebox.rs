//! One box: its VM, its channel to the agent, its lifecycle and executions.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use std::collections::VecDeque;

use boxlite_protocol::{
    archive, Builtin, ExecRequest, ExitStatus, GuestMetrics, OutputStream, OUTPUT_CHUNK_LEN,
    OUTPUT_WINDOW,
};
use serde::Serialize;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;

use crate::agent::{AgentClient, ConnectError, ExecEvent};
use crate::agent_socket;
use crate::assets::GuestAssets;
use crate::boot;
use crate::disk;
use crate::error::{Error, IoContext, Result};
use crate::hypervisor::accel::AccelChoice;
use crate::hypervisor::{Confinement, Hypervisor, VmHandle, VmSpec};
use crate::image::PreparedImage;
use crate::logs::tail;
use crate::network::{self, Passt};
use crate::options::BoxOptions;

pub use crate::state::{BoxInfo, BoxStatus, StartTimings};

struct Running {
    vm: Box<dyn VmHandle>,
    /// The box's passt, if it has a network; killed with the box at the latest.
    _network: Option<Passt>,
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

/// Lower-case hex, for paths on the kernel command line (which splits on spaces).
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The unprivileged uid and gid a jailed VMM runs as.
const NOBODY: u32 = 65534;

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
    execs_started: std::sync::atomic::AtomicU64,
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

    /// How the VMM is confined, from the box's `SecurityOptions`.
    fn confinement(&self) -> Result<Confinement> {
        let security = &self.options.security;
        // SAFETY: geteuid has no preconditions.
        let privileged = unsafe { libc::geteuid() } == 0;
        // QEMU's 9p server reaches shared directories by path, with its own identity: a box
        // with volumes keeps the VMM out of the jail (seccomp and the rest still apply).
        let (chroot, run_as) =
            if security.jailer_enabled && privileged && self.options.volumes.is_empty() {
                // Everything the VMM needs is open before it enters the jail: an empty directory.
                let jail = self.dir.join("jail");
                std::fs::create_dir_all(&jail).context(|| format!("create {}", jail.display()))?;
                (Some(jail), Some((NOBODY, NOBODY)))
            } else {
                (None, None)
            };
        Ok(Confinement {
            seccomp: security.seccomp_enabled,
            chroot,
            run_as,
            close_fds: security.close_fds,
        })
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

        let socket = agent_socket::for_launch(&self.dir)?;
        let _ = std::fs::remove_file(&socket);
        let accel = self.platform.accel.accel;
        let mut cmdline = boot::kernel_cmdline(
            &self.id[..12.min(self.id.len())].to_ascii_lowercase(),
            Some("/dev/vda"),
        );
        // Each volume is a 9p device (its tag) and a mount the agent makes from the command line.
        let mut shares: Vec<(String, PathBuf, bool)> = Vec::new();
        let mut mounts: Vec<String> = Vec::new();
        for (i, v) in self.options.volumes.iter().enumerate() {
            let tag = format!("vol{i}");
            mounts.push(format!("{tag}:{}:{}", v.mode, hex(v.guest_path.as_bytes())));
            shares.push((tag, v.host_path.clone(), v.mode == "ro"));
        }
        if !mounts.is_empty() {
            cmdline.push_str(&format!(" boxlite.volumes={}", mounts.join(",")));
        }
        let mut passt = if self.options.network() {
            let mut name_servers = Vec::new();
            if let Some(net) = network::guest_config() {
                cmdline.push(' ');
                cmdline.push_str(&net.cmdline());
                name_servers.extend(net.dns.iter().copied().map(std::net::IpAddr::V4));
            } else {
                tracing::warn!(id = %self.id, "the host has no IPv4 default route: the box's network interface stays unconfigured");
            }
            let policy = crate::egress::Policy::new(&self.options.network.allow_net, name_servers)
                .map_err(Error::InvalidOption)?;
            Some(Passt::start(
                &self.options.ports,
                &self.dir.join("passt.log"),
                policy,
                &self.id,
            )?)
        } else {
            None
        };
        let spec = VmSpec {
            name: self.id.clone(),
            accel,
            kernel: self.platform.assets.kernel.clone(),
            initrd: self.platform.assets.initrd.clone(),
            cmdline,
            cpus: self.options.cpus,
            memory_mib: self.options.memory_mib,
            root_disk: Some(self.disk_path()),
            agent_socket: socket.clone(),
            console_log: self.dir.join("console.log"),
            vmm_log: self.dir.join("vmm.log"),
            confinement: self.confinement()?,
            network_fd: passt.as_ref().and_then(Passt::qemu_fd),
            shares,
        };
        let launched = Instant::now();
        let vm = self.platform.hypervisor.launch(&spec)?;
        if let Some(passt) = &mut passt {
            // QEMU has its copy; passt sees the end of the stream when QEMU exits.
            passt.close_qemu_end();
        }
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
            _network: passt,
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
        self.kill_when_broken(&running);
        self.watch_for_exit(running);
        let _ = self.write_config();
        Ok(())
    }

    /// A broken channel (the guest broke the protocol or stopped answering) kills the VM.
    fn kill_when_broken(self: &Arc<Self>, running: &Arc<Running>) {
        let this = Arc::downgrade(self);
        let weak = Arc::downgrade(running);
        running.agent.set_on_broken(move |why| {
            if let (Some(this), Some(running)) = (this.upgrade(), weak.upgrade()) {
                this.mark_broken(&running, why);
            }
        });
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
        agent_socket::remove(&self.dir);
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
        let socket = agent_socket::for_attach(&self.dir)?;
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
            // The dead owner's passt (if any) serves the VM until QEMU exits.
            _network: None,
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
        self.kill_when_broken(&running);
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
        // Names are resolved by the agent in the box's own /etc/passwd; the agent also sets
        // HOME from it when the environment has none.
        let user = spec
            .user
            .or_else(|| self.image.user.clone())
            .filter(|u| !u.is_empty());
        let working_dir = spec
            .working_dir
            .or_else(|| self.options.working_dir.clone())
            .or_else(|| self.image.working_dir.clone())
            .unwrap_or_else(|| "/".into());
        let timeout = spec.timeout;
        let output_limit = spec
            .max_output_bytes
            .unwrap_or(self.options.max_output_bytes)
            .min(usize::MAX as u64) as usize;
        let stdin_open = spec.stdin || spec.tty.is_some();
        let tty = spec.tty.is_some();
        let request = ExecRequest {
            exec_id: 0,
            program: spec.program,
            args: spec.args,
            env,
            working_dir,
            stdin: stdin_open,
            user,
            tty: spec.tty,
            limits: self.options.security.exec_limits(),
            builtin: spec.builtin,
        };
        let (exec_id, events) = running
            .agent
            .exec(request)
            .await
            .map_err(|e| self.channel_error(e))?;
        self.execs_started.fetch_add(1, Ordering::Relaxed);
        let (changed, _) = watch::channel(0u64);
        let shared = Arc::new(ExecShared {
            state: Mutex::new(ExecState::default()),
            changed,
            stdin_credit: Semaphore::new(OUTPUT_WINDOW as usize),
            kill_sent: tokio::sync::Notify::new(),
        });
        tokio::spawn(drive_execution(
            shared.clone(),
            events,
            running.agent.clone(),
            exec_id,
            timeout.map(|t| Instant::now() + t),
        ));
        Ok(Execution {
            litebox: self.clone(),
            agent: running.agent.clone(),
            exec_id,
            tty,
            stdin_open,
            stdin_claimed: AtomicBool::new(false),
            stdin_closed: AtomicBool::new(false),
            output_limit,
            shared,
            result: tokio::sync::OnceCell::new(),
        })
    }

    /// The guest broke its channel or stopped answering: kill `running`'s VM so nothing keeps
    /// running unobserved and, if it is still this box's, mark the box crashed with why.
    /// Idempotent: the first reason is kept.
    fn mark_broken(&self, running: &Arc<Running>, why: &str) -> Error {
        let reason = format!("{why}; the box was declared broken and its VM killed");
        // Before the kill, so the exit watcher does not report the exit as a crash of its own.
        running.stopping.store(true, Ordering::SeqCst);
        running.vm.kill();
        let mut state = self.state.lock().expect("state lock");
        if state
            .running
            .as_ref()
            .is_some_and(|r| Arc::ptr_eq(r, running))
        {
            tracing::warn!(id = %self.id, %reason, "box broken");
            state.running = None;
            state.status = BoxStatus::Crashed;
            state.last_error = Some(reason.clone());
            drop(state);
            let _ = self.persist();
            return Error::BoxDied {
                id: self.id.clone(),
                reason,
            };
        }
        drop(state);
        self.channel_error(reason)
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

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct ExecSpec {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    /// Keep stdin open for [`Execution::write_stdin`]; otherwise the process reads `/dev/null`.
    pub stdin: bool,
    /// Kill the execution (every process it started) when it runs longer than this.
    pub timeout: Option<Duration>,
    /// Run on a pseudo-terminal of this size (rows, columns).
    pub tty: Option<(u16, u16)>,
    /// One of the agent's own operations instead of `program` (copying files).
    pub builtin: Option<Builtin>,
    /// Bytes of each stream kept in the result of `wait` (default: the box's
    /// `max_output_bytes`); the rest is read and dropped.
    pub max_output_bytes: Option<u64>,
}

/// The end of an execution.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    pub exit_code: i32,
    /// The signal that killed the process, if one did.
    pub signal: Option<i32>,
    /// Output that was not consumed as a stream, up to the execution's output limit.
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Bytes of each stream dropped beyond the output limit (read from the box, not kept).
    pub stdout_dropped: u64,
    pub stderr_dropped: u64,
    /// Why the process never started (exit code 126 or 127), if it did not.
    pub error: Option<String>,
    /// The timeout fired: every process of the execution was killed, and `exit_code` is 124.
    pub timed_out: bool,
}

impl ExecOutput {
    /// Part of the output was dropped (more than the output limit per stream).
    pub fn truncated(&self) -> bool {
        self.stdout_dropped > 0 || self.stderr_dropped > 0
    }
}

/// Exit code of an execution killed by its timeout (as `timeout(1)` reports it).
pub const TIMEOUT_EXIT_CODE: i32 = 124;

/// How long the agent may take to confirm a kill (`kill()` or a timeout's) before the box is
/// declared broken.
const KILL_CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Consumed output is acknowledged to the agent in batches of this many bytes (well below
/// the window, so the agent never stalls while the host keeps reading).
const ACK_BATCH: u64 = OUTPUT_WINDOW / 4;

/// Largest stdin chunk sent in one frame.
const STDIN_CHUNK: usize = 64 * 1024;

fn stream_index(stream: OutputStream) -> usize {
    match stream {
        OutputStream::Stdout => 0,
        OutputStream::Stderr => 1,
    }
}

/// What the execution's driver task and its consumers share.
#[derive(Default)]
struct ExecState {
    /// Output received and not yet consumed, per stream (stdout, stderr).
    queues: [VecDeque<Vec<u8>>; 2],
    /// The stream is read by `read_output`; `wait` leaves it alone.
    streamed: [bool; 2],
    /// Output gathered by `wait`, per stream (at most the execution's output limit).
    collected: [Vec<u8>; 2],
    /// Bytes `wait` read beyond the output limit and dropped, per stream.
    dropped: [u64; 2],
    /// Consumed bytes not yet acknowledged to the agent.
    unacked: u64,
    timed_out: bool,
    /// How it ended: the exit status, or why the channel was lost.
    end: Option<std::result::Result<ExitStatus, String>>,
    /// Nobody holds the execution any more: output is acknowledged and dropped.
    abandoned: bool,
}

impl ExecState {
    /// Records consumed bytes; returns a batch to acknowledge when one is due.
    fn consumed(&mut self, bytes: u64) -> Option<u64> {
        self.unacked += bytes;
        if self.unacked >= ACK_BATCH && self.end.is_none() {
            return Some(std::mem::take(&mut self.unacked));
        }
        None
    }
}

/// Queues `data`, appended to the last queued chunk while that stays small, so a guest
/// sending many tiny frames costs no more host memory than a few large ones.
fn push_output(queue: &mut VecDeque<Vec<u8>>, data: Vec<u8>) {
    match queue.back_mut() {
        Some(last) if last.len() + data.len() <= OUTPUT_CHUNK_LEN => last.extend_from_slice(&data),
        _ => queue.push_back(data),
    }
}

struct ExecShared {
    state: Mutex<ExecState>,
    changed: watch::Sender<u64>,
    /// Bytes of stdin that may still be sent before the agent acknowledges earlier ones.
    stdin_credit: Semaphore,
    /// A kill was sent: its confirmation (the exit) is due within [`KILL_CONFIRM_TIMEOUT`].
    kill_sent: tokio::sync::Notify,
}

impl ExecShared {
    fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// A running (or finished) process in a box.
pub struct Execution {
    litebox: Arc<LiteBox>,
    agent: Arc<AgentClient>,
    exec_id: u32,
    tty: bool,
    stdin_open: bool,
    /// Somebody took the stdin handle; otherwise `wait` closes stdin first.
    stdin_claimed: AtomicBool,
    stdin_closed: AtomicBool,
    /// Bytes of each stream `wait` keeps.
    output_limit: usize,
    shared: Arc<ExecShared>,
    result: tokio::sync::OnceCell<std::result::Result<ExecOutput, String>>,
}

/// Routes one execution's events into its shared state, and enforces its timeout and the
/// confirmation of its kill even when nobody waits for it. It never waits on the channel
/// itself (acknowledgements and kills are sent by tasks of their own), so it keeps up with the
/// guest whatever the guest does.
async fn drive_execution(
    shared: Arc<ExecShared>,
    mut events: mpsc::UnboundedReceiver<ExecEvent>,
    agent: Arc<AgentClient>,
    exec_id: u32,
    deadline: Option<Instant>,
) {
    let mut kill_deadline: Option<Instant> = None;
    loop {
        let alarm = kill_deadline.or(deadline);
        let event = tokio::select! {
            event = events.recv() => event.unwrap_or_else(|| {
                ExecEvent::Lost(agent.closed_reason().unwrap_or_else(|| "the channel closed".into()))
            }),
            _ = shared.kill_sent.notified(), if kill_deadline.is_none() => {
                kill_deadline = Some(Instant::now() + KILL_CONFIRM_TIMEOUT);
                continue;
            }
            _ = tokio::time::sleep_until(alarm.unwrap_or_else(Instant::now)), if alarm.is_some() => {
                if kill_deadline.is_some() {
                    agent.fail(format!(
                        "the guest agent did not confirm a kill within {} s",
                        KILL_CONFIRM_TIMEOUT.as_secs()
                    ));
                    ExecEvent::Lost(agent.closed_reason().unwrap_or_default())
                } else {
                    // The timeout contract: every process of the execution is dead before the
                    // result is reported; the agent reports the exit once its cgroup is empty.
                    shared.state.lock().expect("exec state").timed_out = true;
                    kill_deadline = Some(Instant::now() + KILL_CONFIRM_TIMEOUT);
                    let agent = agent.clone();
                    // A failed send closes the channel, which ends this execution as lost.
                    tokio::spawn(async move { agent.kill_tree(exec_id).await });
                    continue;
                }
            }
        };
        let mut ack = None;
        let mut over = false;
        {
            let mut state = shared.state.lock().expect("exec state");
            match event {
                ExecEvent::Started { .. } => {}
                ExecEvent::Output { stream, data } => {
                    if state.abandoned {
                        ack = state.consumed(data.len() as u64);
                    } else {
                        push_output(&mut state.queues[stream_index(stream)], data);
                    }
                }
                // The agent client checked that no more is acknowledged than was sent.
                ExecEvent::StdinAck(bytes) => shared
                    .stdin_credit
                    .add_permits(bytes.min(OUTPUT_WINDOW) as usize),
                ExecEvent::Exited(status) => {
                    state.end = Some(Ok(status));
                    over = true;
                }
                ExecEvent::Lost(reason) => {
                    state.end = Some(Err(reason));
                    over = true;
                }
            }
        }
        if over {
            shared.stdin_credit.close();
        }
        shared.notify();
        if let Some(bytes) = ack {
            let agent = agent.clone();
            tokio::spawn(async move { agent.ack_output(exec_id, bytes).await });
        }
        if over {
            return;
        }
    }
}

impl Execution {
    pub fn id(&self) -> u32 {
        self.exec_id
    }

    pub fn is_tty(&self) -> bool {
        self.tty
    }

    async fn send_ack(&self, bytes: Option<u64>) {
        if let Some(bytes) = bytes {
            // A lost channel shows in the execution's end; nothing to report here.
            let _ = self.agent.ack_output(self.exec_id, bytes).await;
        }
    }

    fn lost(&self, reason: String) -> Error {
        self.litebox.channel_error(reason)
    }

    /// The next chunk of `stream` as it arrives; `None` once the execution ended and all of
    /// it was read. Output read this way is not part of [`Execution::wait`]'s result.
    pub async fn read_output(&self, stream: OutputStream) -> Result<Option<Vec<u8>>> {
        let i = stream_index(stream);
        loop {
            let mut changed = self.shared.changed.subscribe();
            let (chunk, ack, end) = {
                let mut state = self.shared.state.lock().expect("exec state");
                state.streamed[i] = true;
                // Output gathered by an earlier wait() comes first.
                let chunk = if !state.collected[i].is_empty() {
                    Some(std::mem::take(&mut state.collected[i]))
                } else {
                    state.queues[i].pop_front()
                };
                let ack = chunk.as_ref().and_then(|c| state.consumed(c.len() as u64));
                (chunk, ack, state.end.clone())
            };
            self.send_ack(ack).await;
            if let Some(chunk) = chunk {
                return Ok(Some(chunk));
            }
            match end {
                Some(Ok(_)) => return Ok(None),
                Some(Err(reason)) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    return Err(self.lost(reason));
                }
                None => {
                    let _ = changed.changed().await;
                }
            }
        }
    }

    /// Waits for the process to end; returns its exit status and the output not read as a
    /// stream. Waiting again returns the same result. Stdin that nobody took is closed first,
    /// so a program reading it sees end-of-file.
    pub async fn wait(&self) -> Result<ExecOutput> {
        if self.stdin_open && !self.stdin_claimed.load(Ordering::SeqCst) {
            let _ = self.close_stdin().await;
        }
        let result = self
            .result
            .get_or_init(|| async {
                loop {
                    let mut changed = self.shared.changed.subscribe();
                    let (ack, done) = {
                        let mut state = self.shared.state.lock().expect("exec state");
                        let mut moved = 0u64;
                        for i in 0..2 {
                            if state.streamed[i] {
                                continue;
                            }
                            // Beyond the limit, output is still read (so the process is never
                            // held up) but dropped.
                            while let Some(chunk) = state.queues[i].pop_front() {
                                moved += chunk.len() as u64;
                                let room =
                                    self.output_limit.saturating_sub(state.collected[i].len());
                                let keep = room.min(chunk.len());
                                state.collected[i].extend_from_slice(&chunk[..keep]);
                                state.dropped[i] += (chunk.len() - keep) as u64;
                            }
                        }
                        let ack = state.consumed(moved);
                        let done = state.end.clone().map(|end| {
                            end.map(|status| {
                                let (signal, error) = match &status {
                                    ExitStatus::Signal(s) => (Some(*s), None),
                                    ExitStatus::SpawnFailed { message, .. } => {
                                        (None, Some(message.clone()))
                                    }
                                    ExitStatus::Code(_) => (None, None),
                                };
                                ExecOutput {
                                    exit_code: if state.timed_out {
                                        TIMEOUT_EXIT_CODE
                                    } else {
                                        status.code()
                                    },
                                    timed_out: state.timed_out,
                                    signal,
                                    stdout: std::mem::take(&mut state.collected[0]),
                                    stderr: std::mem::take(&mut state.collected[1]),
                                    stdout_dropped: state.dropped[0],
                                    stderr_dropped: state.dropped[1],
                                    error,
                                }
                            })
                        });
                        (ack, done)
                    };
                    self.send_ack(ack).await;
                    if let Some(done) = done {
                        return done;
                    }
                    let _ = changed.changed().await;
                }
            })
            .await;
        match result.clone() {
            Ok(output) => Ok(output),
            Err(reason) => {
                // Give the exit watcher a moment to record a crash, so the error says "died".
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err(self.lost(reason))
            }
        }
    }

    /// Sends `signal` to the execution's process group.
    pub async fn signal(&self, signal: i32) -> Result<()> {
        self.agent
            .signal(self.exec_id, signal)
            .await
            .map_err(|e| self.lost(e))
    }

    /// Kills every process the execution started (its cgroup in the guest), descendants that
    /// left its process group included. An agent that does not confirm the kill in time gets
    /// its box declared broken.
    pub async fn kill(&self) -> Result<()> {
        self.agent
            .kill_tree(self.exec_id)
            .await
            .map_err(|e| self.lost(e))?;
        self.shared.kill_sent.notify_one();
        Ok(())
    }

    /// Marks stdin as taken by the caller: `wait` no longer closes it by itself.
    pub fn claim_stdin(&self) -> Result<()> {
        if !self.stdin_open {
            return Err(Error::InvalidOption(
                "this execution has no stdin: it was started to run to completion".into(),
            ));
        }
        self.stdin_claimed.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Sends `data` to the process's stdin, waiting while the agent has a window's worth of
    /// earlier input not yet delivered.
    pub async fn write_stdin(&self, data: Vec<u8>) -> Result<()> {
        if !self.stdin_open || self.stdin_closed.load(Ordering::SeqCst) {
            return Err(Error::StdinClosed(
                "stdin of this execution is closed".into(),
            ));
        }
        for chunk in data.chunks(STDIN_CHUNK) {
            let permit = self
                .shared
                .stdin_credit
                .acquire_many(chunk.len() as u32)
                .await
                .map_err(|_| {
                    let end = self.shared.state.lock().expect("exec state").end.clone();
                    match end {
                        Some(Err(reason)) => self.lost(reason),
                        _ => Error::StdinClosed(
                            "the execution has ended; its stdin is closed".into(),
                        ),
                    }
                })?;
            permit.forget();
            self.agent
                .stdin(self.exec_id, chunk.to_vec())
                .await
                .map_err(|e| self.lost(e))?;
        }
        Ok(())
    }

    /// Closes stdin (end-of-file for the process; ^D on a terminal).
    pub async fn close_stdin(&self) -> Result<()> {
        if !self.stdin_open || self.stdin_closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.agent
            .close_stdin(self.exec_id)
            .await
            .map_err(|e| self.lost(e))
    }

    /// Sets the terminal size of a TTY execution.
    pub async fn resize_tty(&self, rows: u16, cols: u16) -> Result<()> {
        if !self.tty {
            return Err(Error::InvalidOption(
                "resize_tty() needs an execution started with tty=True".into(),
            ));
        }
        if rows == 0 || cols == 0 {
            return Err(Error::InvalidOption(format!(
                "resize_tty({rows}, {cols}): rows and columns must be at least 1"
            )));
        }
        self.agent
            .resize_tty(self.exec_id, rows, cols)
            .await
            .map_err(|e| self.lost(e))
    }
}

impl Drop for Execution {
    fn drop(&mut self) {
        // Nobody reads this execution any more: let the agent go on sending (and us dropping)
        // its output, so a process writing a lot is never stuck on a full window.
        let pending = {
            let mut state = self.shared.state.lock().expect("exec state");
            if state.end.is_some() {
                return;
            }
            state.abandoned = true;
            let queued: u64 = state
                .queues
                .iter_mut()
                .flat_map(|q| q.drain(..))
                .map(|c| c.len() as u64)
                .sum();
            queued + std::mem::take(&mut state.unacked)
        };
        if pending > 0 {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                let (agent, id) = (self.agent.clone(), self.exec_id);
                handle.spawn(async move {
                    let _ = agent.ack_output(id, pending).await;
                });
            }
        }
    }
}

/// A box's resource use: the guest's view, the VMM process on the host, executions and the
/// stages of its last start.
#[derive(Debug, Clone, Serialize)]
pub struct BoxMetrics {
    pub guest: GuestMetrics,
    /// Resident memory of the VMM process on the host, in bytes.
    pub vmm_rss_bytes: u64,
    /// CPU time the VMM process used on the host (user + system), in milliseconds.
    pub vmm_cpu_ms: u64,
    /// Executions started through this handle's runtime since the box started.
    pub execs_started: u64,
    pub timings: StartTimings,
}

/// RSS (bytes) and CPU time (ms) of a host process, from /proc.
pub(crate) fn process_usage(pid: u32) -> (u64, u64) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024);
    // Fields after the command name (which may hold spaces): utime is the 14th, stime the 15th.
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            // SAFETY: sysconf has no preconditions.
            let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
            Some((utime + stime) * 1000 / ticks)
        })
        .unwrap_or(0);
    (rss, cpu)
}

impl LiteBox {
    /// Executions started since the box was created.
    pub fn execs_started(&self) -> u64 {
        self.execs_started.load(Ordering::Relaxed)
    }

    /// Resource use of the running box.
    pub async fn metrics(&self) -> Result<BoxMetrics> {
        let running = self.running("read metrics of")?;
        let guest = running
            .agent
            .metrics()
            .await
            .map_err(|e| self.channel_error(e))?;
        let (vmm_rss_bytes, vmm_cpu_ms) = running.vm.pid().map_or((0, 0), process_usage);
        Ok(BoxMetrics {
            guest,
            vmm_rss_bytes,
            vmm_cpu_ms,
            execs_started: self.execs_started.load(Ordering::Relaxed),
            timings: self.state.lock().expect("state lock").timings.clone(),
        })
    }

    /// Copies a host file or directory tree into the box, keeping modes (and owners when
    /// the caller may set them): to `guest_path/<name>` when `guest_path` is an existing
    /// directory, else to `guest_path` itself.
    pub async fn copy_in(self: &Arc<Self>, host_path: &Path, guest_path: &str) -> Result<()> {
        if !guest_path.starts_with('/') {
            return Err(Error::InvalidOption(format!(
                "copy_in: the box path {guest_path:?} must be absolute"
            )));
        }
        // A missing source fails here, before anything starts in the box.
        std::fs::symlink_metadata(host_path)
            .context(|| format!("copy_in: {}", host_path.display()))?;
        let name = host_path
            .file_name()
            .ok_or_else(|| {
                Error::InvalidOption(format!(
                    "copy_in: {} has no file name to copy",
                    host_path.display()
                ))
            })?
            .to_string_lossy()
            .into_owned();
        let execution = self
            .exec(ExecSpec {
                program: "boxlite:unpack".into(),
                stdin: true,
                builtin: Some(Builtin::Unpack {
                    dest: guest_path.to_owned(),
                    name: name.clone(),
                }),
                ..Default::default()
            })
            .await?;
        execution.claim_stdin()?;
        // The archive is written on a blocking thread into a bounded channel, so a large tree
        // streams into the box without being held in memory.
        let (tx, mut rx) = mpsc::channel::<std::io::Result<Vec<u8>>>(4);
        let source = host_path.to_path_buf();
        let writer = tokio::task::spawn_blocking(move || {
            let sink = ChannelWriter { tx: tx.clone() };
            let built = archive::pack_item(
                std::io::BufWriter::with_capacity(STDIN_CHUNK, sink),
                &source,
                std::ffi::OsStr::new(&name),
            );
            if let Err(e) = built {
                let _ = tx.blocking_send(Err(e));
            }
        });
        let mut failure = None;
        let mut ended_early = false;
        while let Some(chunk) = rx.recv().await {
            match chunk {
                Ok(chunk) => {
                    if let Err(e) = execution.write_stdin(chunk).await {
                        // The unpacking side gave up; its stderr says why (below).
                        if matches!(e, Error::StdinClosed(_)) {
                            ended_early = true;
                            break;
                        }
                        return Err(e);
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        drop(rx);
        let _ = writer.await;
        if let Some(e) = failure {
            let _ = execution.kill().await;
            let _ = execution.wait().await;
            return Err(Error::Copy(format!(
                "copy_in: reading {}: {e}",
                host_path.display()
            )));
        }
        if !ended_early {
            execution.close_stdin().await?;
        }
        let output = execution.wait().await?;
        if output.exit_code != 0 || ended_early {
            return Err(Error::Copy(format!(
                "copy_in of {} to {guest_path} failed in the box: {}",
                host_path.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Copies a file or directory tree out of the box: to `host_path/<name>` when `host_path`
    /// is an existing directory, else to `host_path` itself.
    ///
    /// The box's tar stream is untrusted: it is unpacked confined to that destination
    /// ([`archive::UnpackPolicy::confined`]: nothing written through a symlink, hard links only
    /// within the copy, no special files, permission bits only), at most
    /// [`BoxOptions::copy_out_max_bytes`] of it and never beyond the destination's free space.
    pub async fn copy_out(self: &Arc<Self>, guest_path: &str, host_path: &Path) -> Result<()> {
        if !guest_path.starts_with('/') {
            return Err(Error::InvalidOption(format!(
                "copy_out: the box path {guest_path:?} must be absolute"
            )));
        }
        let target = if host_path.is_dir() {
            let name = Path::new(guest_path)
                .file_name()
                .map_or_else(|| "root".into(), |n| n.to_os_string());
            host_path.join(name)
        } else {
            host_path.to_path_buf()
        };
        let execution = Arc::new(
            self.exec(ExecSpec {
                program: "boxlite:pack".into(),
                builtin: Some(Builtin::Pack {
                    path: guest_path.to_owned(),
                }),
                ..Default::default()
            })
            .await?,
        );
        // Unpack on a blocking thread as the stream arrives.
        let (tx, rx) = mpsc::channel::<Vec<u8>>(4);
        let unpack_target = target.clone();
        let limit = self.options.copy_out_max_bytes;
        let unpacker = tokio::task::spawn_blocking(move || {
            let reader = ChannelReader {
                rx,
                current: std::io::Cursor::new(Vec::new()),
            };
            archive::unpack_item(
                reader,
                &unpack_target,
                &archive::UnpackPolicy::confined(limit),
            )
        });
        // Until the stream ends, or the unpacker stops taking it (the archive ended, or it
        // was refused).
        // A box that stops sending (while still answering probes) is given up on.
        let mut unpacker_stopped = false;
        let mut stalled = false;
        loop {
            let next =
                tokio::time::timeout(COPY_OUT_IDLE, execution.read_output(OutputStream::Stdout))
                    .await;
            let Ok(next) = next else {
                stalled = true;
                break;
            };
            let Some(chunk) = next? else { break };
            if tx.send(chunk).await.is_err() {
                unpacker_stopped = true;
                break;
            }
        }
        drop(tx);
        let unpacked = unpacker
            .await
            .map_err(|e| Error::Copy(format!("copy_out: {e}")))?;
        if stalled {
            let _ = execution.kill().await;
            let _ = tokio::time::timeout(COPY_OUT_FINISH, execution.wait()).await;
            return Err(Error::Copy(format!(
                "copy_out of {guest_path} to {}: the box sent nothing for {} s; the copy was stopped",
                target.display(),
                COPY_OUT_IDLE.as_secs()
            )));
        }
        // What the box does after its archive cannot change the copy: it gets a moment and a
        // little output to finish, then it is killed.
        let finished = if unpacked.is_err() && unpacker_stopped {
            None
        } else {
            tokio::time::timeout(COPY_OUT_FINISH, finish_copy_out(&execution))
                .await
                .ok()
                .flatten()
        };
        if finished.is_none() {
            let _ = execution.kill().await;
            let _ = tokio::time::timeout(COPY_OUT_FINISH, execution.wait()).await;
        }
        let where_to = |e: &dyn std::fmt::Display| {
            format!("copy_out of {guest_path} to {}: {e}", target.display())
        };
        if let Some(output) = &finished {
            if output.exit_code != 0 {
                let stderr = String::from_utf8_lossy(&output.stderr);
                let stderr: String = stderr.trim().chars().take(4096).collect();
                return Err(Error::Copy(format!("copy_out of {guest_path}: {stderr}")));
            }
        }
        match unpacked {
            Err(e @ archive::UnpackError::TooLarge { .. }) => Err(Error::Copy(format!(
                "{}; raise BoxOptions.copy_out_max_bytes (now {limit}) to copy more",
                where_to(&e)
            ))),
            Err(e) => Err(Error::Copy(where_to(&e))),
            Ok(_) if finished.is_none() => Err(Error::Copy(where_to(&format!(
                "the box did not end the copy within {} s of its archive's end",
                COPY_OUT_FINISH.as_secs()
            )))),
            Ok(report) => {
                for skipped in &report.skipped {
                    tracing::warn!(id = %self.id, entry = %skipped, "copy_out: special file not copied to the host");
                }
                Ok(())
            }
        }
    }
}

/// How long the box has to end a copy_out once its archive ended (or was refused).
const COPY_OUT_FINISH: Duration = Duration::from_secs(10);

/// How long a copy_out waits for the box's next bytes: a packer reading a file that never
/// ends (`/proc/kmsg`), or a hostile agent holding the stream, must not hold the caller.
const COPY_OUT_IDLE: Duration = Duration::from_secs(30);

/// Output a box may send after its archive's end (the end-of-archive blocks and padding).
const COPY_OUT_TRAILER_BYTES: usize = 64 * 1024;

/// Reads what follows the archive and waits for the pack to exit; `None` when the box sends
/// more than a trailer or the channel fails.
async fn finish_copy_out(execution: &Execution) -> Option<ExecOutput> {
    let mut trailer = 0;
    while let Some(chunk) = execution.read_output(OutputStream::Stdout).await.ok()? {
        trailer += chunk.len();
        if trailer > COPY_OUT_TRAILER_BYTES {
            return None;
        }
    }
    execution.wait().await.ok()
}

/// `Write` into a bounded channel of chunks (a blocking producer feeding async code).
struct ChannelWriter {
    tx: mpsc::Sender<std::io::Result<Vec<u8>>>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(buf.to_vec()))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "copy cancelled"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `Read` from a channel of chunks (async code feeding a blocking consumer).
struct ChannelReader {
    rx: mpsc::Receiver<Vec<u8>>,
    current: std::io::Cursor<Vec<u8>>,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.current.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = std::io::Cursor::new(chunk),
                None => return Ok(0),
            }
        }
    }
}
