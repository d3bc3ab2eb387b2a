//! A box's lifecycle: start (disk, network, VM launch, the agent's hello), stop, attach to a
//! VM left by a dead owner, and what happens when the VM ends unasked (crashed) or the guest
//! breaks its channel (declared broken, VM killed).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{BoxStatus, LiteBox, Running, StartTimings};
use crate::agent::{AgentClient, ConnectError};
use crate::agent_socket;
use crate::boot;
use crate::disk;
use crate::error::{Error, Result};
use crate::hypervisor::{GuestMemory, VmHandle, VmSpec};
use crate::logs::tail;
use crate::network::{self, Passt};

/// How long a resumed guest gets for its hello before the host hangs up and connects again
/// (see `attach`), and how long it gets to see that hangup.
const HELLO_RETRY: Duration = Duration::from_secs(2);
const HANGUP_SEEN: Duration = Duration::from_millis(500);
/// The same for a guest restored from a snapshot, which is running and quick to answer.
const RESTORED_HELLO_RETRY: Duration = Duration::from_millis(200);
const RESTORED_HANGUP_SEEN: Duration = Duration::from_millis(20);

/// Connects to the agent of a guest that was running before (restored from a snapshot): its
/// agent may still be reading the connection it had when the snapshot was taken, and would
/// see this one only after a hangup. The host therefore speaks first (`HelloAgain`, which the
/// agent answers with its hello on whichever connection it reads). Should no hello come soon
/// all the same, hang up, give the guest time to see it, and connect again.
async fn connect_resumed(
    socket: &std::path::Path,
    deadline: Instant,
    vm: &dyn VmHandle,
) -> std::result::Result<(AgentClient, crate::agent::GuestHello), ConnectError> {
    while Instant::now() + RESTORED_HELLO_RETRY < deadline {
        let soon = Instant::now() + RESTORED_HELLO_RETRY;
        match AgentClient::connect_restored(socket, soon, vm.exit_watch()).await {
            Err(ConnectError::TimedOut) => {
                tracing::debug!("no hello from the restored guest yet; connecting again");
                tokio::time::sleep(RESTORED_HANGUP_SEEN).await;
            }
            other => return other,
        }
    }
    AgentClient::connect_restored(socket, deadline, vm.exit_watch()).await
}

/// Lower-case hex, for paths on the kernel command line (which splits on spaces).
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl LiteBox {
    pub(super) fn disk_path(&self) -> PathBuf {
        self.dir.join("disk.qcow2")
    }

    /// Boots the VM (creating the box's disk on first start) and waits for the agent.
    pub async fn start(self: &Arc<Self>) -> Result<()> {
        let _lifecycle = self.lifecycle.lock().await;
        match self.status() {
            BoxStatus::Running => return Ok(()),
            BoxStatus::Paused => {
                return Err(Error::InvalidOption(format!(
                    "box {} is paused, not stopped: run it again with `resume()`",
                    self.id
                )))
            }
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
        // A box created from a snapshot is restored at its first start (its disk does not
        // exist yet), and boots from its disk at any later start unless it was hibernated.
        let restore = if self.disk_path().exists() {
            // A box stopped with keep_state=True resumes its saved state (see `hibernate`).
            self.checked_hibernated_state().await?
        } else {
            self.restore_from.lock().expect("restore lock").clone()
        };
        if !self.disk_path().exists() {
            let overlay = self.disk_path();
            let base = self.image.base_disk.clone();
            let frozen = restore.as_ref().map(|s| s.disk_file());
            tokio::task::spawn_blocking(move || match frozen {
                Some(frozen) => disk::create_overlay_on_qcow2(&frozen, &overlay),
                None => disk::create_overlay(&base, &overlay),
            })
            .await
            .map_err(|e| Error::Disk(e.to_string()))??;
        }
        let disk_ms = disk_started.elapsed().as_millis() as u64;

        let socket = agent_socket::for_launch(&self.dir)?;
        let _ = std::fs::remove_file(&socket);
        let accel = self.platform.accel.accel;
        let hostname = self.id[..12.min(self.id.len())].to_ascii_lowercase();
        let mut cmdline = boot::kernel_cmdline(accel, &hostname, Some("/dev/vda"));
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
            let spec = crate::egress::detached::SupervisorSpec {
                id: self.id.clone(),
                allow_net: self.options.network.allow_net.clone(),
                name_servers,
            };
            let policy = spec.policy().map_err(Error::InvalidOption)?;
            // A kept box may outlive this process; so must the supervisor of its network.
            let detached = (!self.options.auto_remove).then_some(&spec);
            Some(Passt::start(
                &self.options.ports,
                &self.dir.join("passt.log"),
                policy,
                &self.id,
                detached,
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
            qmp_socket: Some(agent_socket::qmp_socket(&socket)),
            console_log: self.dir.join("console.log"),
            vmm_log: self.dir.join("vmm.log"),
            confinement: self.confinement()?,
            network_fd: passt.as_ref().and_then(Passt::qemu_fd),
            shares,
            incoming: restore.is_some(),
            // A snapshot with a memory file is mapped from it, copy-on-write: the VMs restored
            // from one snapshot share the pages none of them wrote.
            guest_memory: match restore.as_ref().and_then(|s| s.memory_file()) {
                Some(file) => GuestMemory::CopyOnWrite(file),
                None => GuestMemory::Anonymous,
            },
        };
        let launched = Instant::now();
        let vm = self.platform.hypervisor.launch(&spec)?;
        if let Some(passt) = &mut passt {
            // QEMU has its copy; passt sees the end of the stream when QEMU exits.
            passt.close_qemu_end();
        }
        let spawn_ms = launched.elapsed().as_millis() as u64;
        let deadline = launched + boot::boot_timeout(accel);
        let connected = match &restore {
            None => AgentClient::connect(&socket, deadline, vm.exit_watch()).await,
            Some(snapshot) => match self.load_snapshot(&spec, &*vm, snapshot, deadline).await {
                Ok(()) => connect_resumed(&socket, deadline, &*vm).await,
                Err(reason) => Err(ConnectError::StateNotLoaded(reason)),
            },
        };
        let (agent, hello) = match connected {
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
                    ConnectError::Protocol(p) | ConnectError::StateNotLoaded(p) => p,
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
        let reporting = matches!(spec.guest_memory, GuestMemory::Anonymous);
        if let Some(snapshot) = &restore {
            // A new box (not this box resumed from hibernation) is a new boot.
            if snapshot.source_box != self.id {
                if let Err(e) = agent.new_boot_id().await {
                    tracing::warn!(id = %self.id, error = %e, "the restored guest keeps its snapshot's boot id");
                }
            }
            // The guest still has the hostname of the box its snapshot was taken of.
            if let Err(e) = agent.set_hostname(&hostname).await {
                tracing::warn!(id = %self.id, error = %e, "the restored guest keeps its snapshot's hostname");
            }
            // RAM mapped from a memory file cannot give pages back (QEMU refuses, and logs
            // every refusal); anonymous RAM can. A running box's snapshot was saved with
            // reporting off (a no-op here, then); a paused or hibernated box's may have it on.
            if let Err(e) = agent.set_free_page_reporting(reporting).await {
                tracing::warn!(id = %self.id, error = %e, reporting, "free page reporting of the restored guest unchanged");
            }
        }
        let boot_ms = launched.elapsed().as_millis() as u64;
        tracing::info!(id = %self.id, boot_ms, guest_uptime_ms = hello.uptime_ms, %accel, restored = restore.is_some(), "box started");
        if restore.is_some() {
            *self.restore_from.lock().expect("restore lock") = None;
        }

        let stopping = Arc::new(AtomicBool::new(false));
        let running = Arc::new(Running {
            vm,
            _network: passt,
            agent: Arc::new(agent),
            kernel_release: hello.kernel_release,
            stopping: stopping.clone(),
            qmp_socket: spec.qmp_socket.clone(),
            qmp: tokio::sync::Mutex::new(None),
            reports_free_pages: reporting,
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

    /// Loads `snapshot`'s saved state into the VMM just launched with `-incoming defer`
    /// (its control channel: `migrate-incoming` from the state file) and runs its vCPUs.
    async fn load_snapshot(
        &self,
        spec: &VmSpec,
        vm: &dyn VmHandle,
        snapshot: &crate::snapshot::SnapshotInfo,
        deadline: Instant,
    ) -> std::result::Result<(), String> {
        let mut qmp = connect_control(
            spec,
            vm,
            deadline,
            &format!("load snapshot {:?}", snapshot.name),
        )
        .await?;
        let loaded = async {
            load_state(&mut qmp, spec, snapshot, deadline).await?;
            qmp.cont().await.map_err(|e| e.to_string())
        };
        let loaded = loaded.await;
        if loaded.is_ok() {
            // A hibernated box's guest runs on its own disk from here: its saved state is spent.
            self.forget_hibernated_state();
        }
        loaded.map_err(|e| {
            format!(
                "loading snapshot {:?} ({}) failed: {e}",
                snapshot.name,
                snapshot.state_file().display()
            )
        })
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

    /// The VM of a running box, for `action`; a paused one is refused ([`Error::BoxPaused`]).
    pub(super) fn running(&self, action: &str) -> Result<Arc<Running>> {
        match self.running_or_paused(action)? {
            (running, BoxStatus::Running) => Ok(running),
            _ => Err(Error::BoxPaused {
                id: self.id.clone(),
                action: action.into(),
            }),
        }
    }

    /// Shuts the guest down cleanly (kills the VM if it does not end in time), then deletes the
    /// box's files when `auto_remove` is set. A paused box is resumed first (killed if that
    /// fails), so its guest can flush and power off.
    pub async fn stop(&self) -> Result<()> {
        let _lifecycle = self.lifecycle.lock().await;
        let running = {
            let mut state = self.state.lock().expect("state lock");
            match state.status {
                BoxStatus::Removed | BoxStatus::Stopped => return Ok(()),
                _ => {}
            }
            let paused = state.status == BoxStatus::Paused;
            state.status = BoxStatus::Stopping;
            state.running.take().map(|r| (r, paused))
        };
        if let Some((running, paused)) = running {
            running.stopping.store(true, Ordering::SeqCst);
            if paused {
                match self.control(&running, "cont").await {
                    Ok(()) => running.agent.set_paused(false),
                    Err(e) => {
                        tracing::warn!(id = %self.id, error = %e, "could not resume the paused box to stop it; killing its VM");
                        running.vm.kill();
                    }
                }
            }
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
    /// A VM its owner left `paused` is resumed first (its agent cannot answer otherwise).
    pub(crate) async fn attach(
        self: &Arc<Self>,
        vm: Box<dyn VmHandle>,
        paused: bool,
    ) -> Result<()> {
        let _lifecycle = self.lifecycle.lock().await;
        let socket = agent_socket::for_attach(&self.dir)?;
        let qmp_socket = agent_socket::qmp_socket(&socket);
        if paused {
            let resumed = async {
                let mut qmp = crate::hypervisor::qmp::QmpClient::connect(&qmp_socket).await?;
                qmp.cont().await
            };
            resumed.await.map_err(|e| Error::Vmm {
                id: self.id.clone(),
                reason: format!("cannot resume the paused box to reattach it: {e}"),
            })?;
            tracing::info!(id = %self.id, "resumed a paused box to reattach it");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut connected = None;
        if paused {
            // The old owner's connection ended while the guest was paused, and the guest's
            // virtio console may never report that hangup (it sees our connection at once),
            // so it keeps waiting on the old stream without a hello: ask for it (HelloAgain,
            // as for a restored guest). If no hello comes soon all the same, hang up, give
            // the running guest time to see it, and connect again.
            while connected.is_none() && Instant::now() + HELLO_RETRY < deadline {
                let soon = Instant::now() + HELLO_RETRY;
                match AgentClient::connect_restored(&socket, soon, vm.exit_watch()).await {
                    Err(ConnectError::TimedOut) => {
                        tracing::debug!(id = %self.id, "no hello from the resumed guest yet; connecting again");
                        tokio::time::sleep(HANGUP_SEEN).await;
                    }
                    other => connected = Some(other),
                }
            }
        }
        let connected = match connected {
            Some(connected) => connected,
            None => AgentClient::connect(&socket, deadline, vm.exit_watch()).await,
        };
        let (agent, hello) = match connected {
            Ok(ok) => ok,
            Err(e) => {
                let why = match e {
                    ConnectError::VmExited(exit) => format!("its VM exited ({exit})"),
                    ConnectError::TimedOut => "its guest agent did not answer within 10 s".into(),
                    ConnectError::Protocol(p) | ConnectError::StateNotLoaded(p) => p,
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
            qmp_socket: Some(qmp_socket),
            qmp: tokio::sync::Mutex::new(None),
            // Not known here: left as it is around snapshots (their restores turn it off).
            reports_free_pages: false,
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

    /// A channel failure (an [`AgentError`](crate::agent::AgentError), or why the box was
    /// declared broken): the box died if its VM is gone, otherwise a channel error.
    pub(super) fn channel_error(&self, error: impl std::fmt::Display) -> Error {
        let reason = error.to_string();
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

/// Connects to the control channel of the VMM `spec` just launched (QEMU creates its socket as
/// it starts); `what` is what the VMM was launched to do, for the error of one that exited.
pub(super) async fn connect_control(
    spec: &VmSpec,
    vm: &dyn VmHandle,
    deadline: Instant,
    what: &str,
) -> std::result::Result<crate::hypervisor::qmp::QmpClient, String> {
    use crate::hypervisor::qmp::QmpClient;
    let Some(path) = &spec.qmp_socket else {
        return Err(format!("its VMM has no control channel to {what} through"));
    };
    loop {
        match QmpClient::connect(path).await {
            Ok(qmp) => return Ok(qmp),
            Err(e) => {
                if let Some(exit) = vm.exit_watch().borrow().clone() {
                    return Err(format!("the VM exited ({exit}) before it could {what}"));
                }
                if Instant::now() >= deadline {
                    return Err(format!("its VMM's control channel did not open: {e}"));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
}

/// Loads `snapshot`'s state file into the VMM `spec` launched with `-incoming defer`, and
/// waits until it is loaded; the vCPUs stay stopped. A jailed VMM sees only its jail: the
/// state file is linked into it (no copy) while it loads.
pub(super) async fn load_state(
    qmp: &mut crate::hypervisor::qmp::QmpClient,
    spec: &VmSpec,
    snapshot: &crate::snapshot::SnapshotInfo,
    deadline: Instant,
) -> std::result::Result<(), String> {
    let (link, vmm_path) = match &spec.confinement.chroot {
        Some(jail) => {
            let link = jail.join(super::snapshot::JAILED_STATE);
            let _ = std::fs::remove_file(&link);
            std::fs::hard_link(snapshot.state_file(), &link).map_err(|e| {
                format!(
                    "cannot link snapshot {:?}'s state into the VMM's jail: {e}",
                    snapshot.name
                )
            })?;
            (
                Some(link),
                std::path::Path::new("/").join(super::snapshot::JAILED_STATE),
            )
        }
        None => (None, snapshot.state_file()),
    };
    let loaded = async {
        qmp.set_migration_capabilities(snapshot.migration_capabilities())
            .await?;
        qmp.migrate_incoming_from_file(&vmm_path).await?;
        qmp.wait_for_migration(
            deadline.saturating_duration_since(Instant::now()),
            Duration::from_millis(2),
        )
        .await
    };
    let loaded = loaded.await;
    if let Some(link) = link {
        let _ = std::fs::remove_file(link);
    }
    loaded.map_err(|e| e.to_string())
}
