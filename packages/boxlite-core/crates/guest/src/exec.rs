//! Executions: spawning processes in the box, pumping their output, reaping them.
//!
//! PID 1 inherits every orphan, so one reaper thread reaps all children. It peeks at a zombie
//! with `WNOWAIT`, then reaps it under the table lock: a process being spawned is registered
//! under that same lock, so its exit status can never be lost or stolen from `spawn` itself.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boxlite_protocol::{
    ExecLimits, ExecRequest, ExitStatus, GuestMessage, HostMessage, OutputStream, OUTPUT_CHUNK_LEN,
    OUTPUT_WINDOW,
};

use crate::channel::Port;
use crate::{builtin, metrics, spawn, system, users, ROOTFS};

/// How long output is still collected after the process exited, for descendants that keep the
/// pipes open. The execution ends on the process's exit, not on EOF.
const OUTPUT_GRACE: Duration = Duration::from_millis(50);

/// How long after the exit output held back by a slow host is still forwarded.
const MAX_DRAIN_AFTER_EXIT: Duration = Duration::from_secs(30);

enum StdinOp {
    Data(Vec<u8>),
    Close,
}

/// Output flow control of one execution: the pump sends at most [`OUTPUT_WINDOW`] bytes
/// ahead of the host's acknowledgements, which arrive on the channel's reader thread.
struct Credit {
    acked: AtomicU64,
    /// An eventfd the pump polls, signalled on every acknowledgement.
    wake: OwnedFd,
}

impl Credit {
    fn new() -> io::Result<Credit> {
        // SAFETY: eventfd returns a fresh descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Credit {
            acked: AtomicU64::new(0),
            // SAFETY: fd is fresh and ours.
            wake: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    fn ack(&self, bytes: u64) {
        self.acked.fetch_add(bytes, Ordering::SeqCst);
        let one = 1u64;
        // SAFETY: an 8-byte write to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn clear_wake(&self) {
        let mut value = 0u64;
        // SAFETY: an 8-byte read from our non-blocking eventfd.
        unsafe { libc::read(self.wake.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
    }
}

struct Entry {
    pid: i32,
    stdin: Option<mpsc::Sender<StdinOp>>,
    credit: Arc<Credit>,
    /// The terminal's master side, for resizing (TTY executions only).
    tty_master: Option<OwnedFd>,
    /// Write end of the pipe on which the reaper hands over the raw wait status.
    exit_notify: OwnedFd,
    /// The execution's own cgroup (absent only where cgroups are unavailable).
    cgroup: Option<PathBuf>,
    /// Set by a kill of the whole tree: the exit is reported once the cgroup is empty.
    killed: bool,
}

/// How long a killed execution's cgroup may take to empty before its exit is reported anyway.
const KILL_SETTLE: Duration = Duration::from_secs(2);

/// Creates the cgroup of a new execution, under the parent that holds the box's memory limit
/// (see `system::setup_cgroups`); `None` where cgroups are unavailable.
fn create_cgroup(max_processes: Option<u64>) -> Option<(PathBuf, OwnedFd)> {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let dir = PathBuf::from(format!(
        "{}/exec-{}",
        system::EXECS_CGROUP,
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir(&dir).ok()?;
    if let Some(max) = max_processes {
        if let Err(e) = std::fs::write(dir.join("pids.max"), max.to_string()) {
            system::log(&format!("pids.max not set: {e}"));
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

fn cgroup_is_empty(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.procs")).map_or(true, |procs| procs.trim().is_empty())
}

#[derive(Default)]
struct Table {
    by_id: HashMap<u32, Entry>,
    by_pid: HashMap<i32, u32>,
}

#[derive(Clone)]
pub struct Executions {
    port: Arc<Port>,
    has_rootfs: bool,
    started: Arc<AtomicU64>,
    table: Arc<Mutex<Table>>,
    /// Wakes the reaper when it sleeps for want of children.
    spawned: mpsc::Sender<()>,
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills two descriptors that we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

fn decode_wait_status(status: i32) -> ExitStatus {
    if libc::WIFSIGNALED(status) {
        ExitStatus::Signal(libc::WTERMSIG(status))
    } else {
        ExitStatus::Code(libc::WEXITSTATUS(status))
    }
}

impl Executions {
    /// The executions of this agent, with their reaper thread running.
    pub fn start(port: Arc<Port>, has_rootfs: bool) -> Executions {
        let (spawned, wake) = mpsc::channel();
        let executions = Executions {
            port,
            has_rootfs,
            started: Arc::default(),
            table: Arc::default(),
            spawned,
        };
        let reaper = executions.clone();
        std::thread::spawn(move || reaper.reap_forever(wake));
        executions
    }

    fn send(&self, msg: GuestMessage) {
        if let Err(e) = self.port.send(&msg) {
            system::log(&format!("send failed: {e}"));
        }
    }

    pub fn handle(&self, msg: HostMessage) {
        match msg {
            HostMessage::Exec(req) => self.spawn(*req),
            HostMessage::Stdin { exec_id, data } => self.stdin(exec_id, StdinOp::Data(data)),
            HostMessage::CloseStdin { exec_id } => self.stdin(exec_id, StdinOp::Close),
            HostMessage::Signal { exec_id, signal } => self.signal(exec_id, signal),
            HostMessage::KillTree { exec_id } => self.kill_tree(exec_id),
            HostMessage::OutputAck { exec_id, bytes } => {
                let table = self.table.lock().expect("table lock");
                if let Some(entry) = table.by_id.get(&exec_id) {
                    entry.credit.ack(bytes);
                }
            }
            HostMessage::ResizeTty {
                exec_id,
                rows,
                cols,
            } => self.resize_tty(exec_id, rows, cols),
            HostMessage::Ping { token } => self.send(GuestMessage::Pong { token }),
            HostMessage::Metrics { token } => {
                let running = self.table.lock().expect("table lock").by_id.len() as u64;
                let metrics = metrics::collect(self.started.load(Ordering::Relaxed), running);
                self.send(GuestMessage::Metrics { token, metrics });
            }
            HostMessage::Hello { .. } | HostMessage::Shutdown => {}
        }
    }

    fn stdin(&self, exec_id: u32, op: StdinOp) {
        let table = self.table.lock().expect("table lock");
        if let Some(tx) = table.by_id.get(&exec_id).and_then(|e| e.stdin.as_ref()) {
            let _ = tx.send(op);
        }
    }

    fn resize_tty(&self, exec_id: u32, rows: u16, cols: u16) {
        let table = self.table.lock().expect("table lock");
        // Nothing to do for a non-TTY execution (the host checks that first) or one that ended.
        if let Some(Some(master)) = table.by_id.get(&exec_id).map(|e| e.tty_master.as_ref()) {
            if let Err(e) = set_window_size(master.as_raw_fd(), rows, cols) {
                system::log(&format!("resize of execution {exec_id} failed: {e}"));
            }
        }
    }

    fn signal(&self, exec_id: u32, signal: i32) {
        let pid = self
            .table
            .lock()
            .expect("table lock")
            .by_id
            .get(&exec_id)
            .map(|e| e.pid);
        match pid {
            // SAFETY: kill(2) on the execution's process group (it is a session leader), then
            // on the process itself in case it left its group.
            Some(pid) => unsafe {
                libc::kill(-pid, signal);
                libc::kill(pid, signal);
            },
            None => self.send(GuestMessage::Error {
                exec_id: Some(exec_id),
                message: "no such execution".into(),
            }),
        }
    }

    /// Kills every process of the execution: its cgroup, so daemons and reparented descendants
    /// go too. The exit is reported once the group is empty (see `pump_output`).
    fn kill_tree(&self, exec_id: u32) {
        let mut table = self.table.lock().expect("table lock");
        let Some(entry) = table.by_id.get_mut(&exec_id) else {
            drop(table);
            return self.send(GuestMessage::Error {
                exec_id: Some(exec_id),
                message: "no such execution".into(),
            });
        };
        entry.killed = true;
        if let Some(dir) = &entry.cgroup {
            if let Err(e) = std::fs::write(dir.join("cgroup.kill"), b"1") {
                system::log(&format!("cgroup.kill failed: {e}"));
            }
        }
        // SAFETY: kill(2) of the process group as well, for a box without cgroups.
        unsafe { libc::kill(-entry.pid, libc::SIGKILL) };
    }

    /// Kills every process in the box (before shutdown).
    pub fn kill_all(&self) {
        // SAFETY: kill(-1) from PID 1 signals every other process.
        unsafe { libc::kill(-1, libc::SIGKILL) };
        std::thread::sleep(Duration::from_millis(20));
    }

    fn spawn_failed(&self, exec_id: u32, code: i32, message: String) {
        self.send(GuestMessage::Output {
            exec_id,
            stream: OutputStream::Stderr,
            data: format!("boxlite: {message}\n").into_bytes(),
        });
        self.send(GuestMessage::Exited {
            exec_id,
            status: ExitStatus::SpawnFailed { code, message },
        });
    }

    fn spawn(&self, req: ExecRequest) {
        let exec_id = req.exec_id;
        if !self.has_rootfs {
            return self.spawn_failed(exec_id, 127, "this VM has no root file system".into());
        }
        if self
            .table
            .lock()
            .expect("table lock")
            .by_id
            .contains_key(&exec_id)
        {
            return self.send(GuestMessage::Error {
                exec_id: Some(exec_id),
                message: "duplicate execution id".into(),
            });
        }
        self.started.fetch_add(1, Ordering::Relaxed);
        let working_dir = if req.working_dir.is_empty() {
            "/".to_owned()
        } else {
            req.working_dir.clone()
        };
        // Docker creates a missing working directory; so do we.
        let _ = std::fs::create_dir_all(format!("{ROOTFS}{working_dir}"));
        let to_c = |s: &str| CString::new(s).ok();
        let argv: Option<Vec<CString>> = std::iter::once(req.program.as_str())
            .chain(req.args.iter().map(String::as_str))
            .map(to_c)
            .collect();
        let identity = match req.user.as_deref().map(users::resolve).transpose() {
            Ok(identity) => identity.filter(|i| i.uid != 0 || i.gid != 0 || !i.groups.is_empty()),
            Err(message) => return self.spawn_failed(exec_id, 126, message),
        };
        let mut env = req.env.clone();
        if !env.iter().any(|(k, _)| k == "HOME") {
            let home = match &identity {
                None => "/root".to_owned(),
                Some(i) => i.home.clone().unwrap_or_else(|| "/".to_owned()),
            };
            env.push(("HOME".into(), home));
        }
        let envp: Option<Vec<CString>> =
            env.iter().map(|(k, v)| to_c(&format!("{k}={v}"))).collect();
        let (Some(argv), Some(envp), Some(root), Some(cwd)) =
            (argv, envp, to_c(ROOTFS), to_c(&working_dir))
        else {
            return self.spawn_failed(
                exec_id,
                126,
                "a NUL byte in the command, environment or working directory".into(),
            );
        };
        let path_var = req
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str());
        let stdio = match ExecStdio::open(req.stdin, req.tty) {
            Ok(stdio) => stdio,
            Err(e) => return self.spawn_failed(exec_id, 126, format!("cannot set up stdio: {e}")),
        };
        let credit = match Credit::new() {
            Ok(c) => Arc::new(c),
            Err(e) => {
                return self.spawn_failed(exec_id, 126, format!("cannot create an eventfd: {e}"))
            }
        };
        let (cgroup, cgroup_procs) = create_cgroup(req.limits.max_processes).unzip();
        let request = spawn::SpawnRequest {
            cgroup_procs: cgroup_procs.as_ref().map(AsRawFd::as_raw_fd),
            candidates: spawn::candidates(&req.program, path_var),
            argv,
            envp,
            root,
            cwd,
            user: identity.as_ref().map(|i| (i.uid, i.gid)),
            groups: identity
                .as_ref()
                .map(|i| i.groups.clone())
                .unwrap_or_default(),
            stdio: stdio.child_fds(),
            tty: req.tty.is_some(),
            rlimits: rlimits(&req.limits),
        };
        let (notify_rx, notify_tx) = match pipe() {
            Ok(p) => p,
            Err(e) => return self.spawn_failed(exec_id, 126, format!("cannot create a pipe: {e}")),
        };
        let mut table = self.table.lock().expect("table lock");
        let started = match &req.builtin {
            None => spawn::spawn(&request),
            Some(op) => {
                let op = op.clone();
                spawn::fork_run(&request, move || builtin::run(&op))
            }
        };
        let pid = match started {
            Ok(pid) => pid,
            Err(failure) => {
                drop(table);
                if let Some(dir) = &cgroup {
                    let _ = std::fs::remove_dir(dir);
                }
                let program = &req.program;
                let (code, message) = match (failure.stage, failure.error.raw_os_error()) {
                    (5, Some(libc::ENOENT)) => (127, format!("{program}: command not found")),
                    (5, _) => (126, format!("{program}: cannot execute: {}", failure.error)),
                    (3, _) => (
                        126,
                        format!(
                            "cannot enter working directory {working_dir}: {}",
                            failure.error
                        ),
                    ),
                    (4, _) => (
                        126,
                        format!("cannot switch to user {:?}: {}", req.user, failure.error),
                    ),
                    (7, _) => (
                        126,
                        format!("cannot set resource limits: {}", failure.error),
                    ),
                    _ => (126, format!("{program}: cannot start: {}", failure.error)),
                };
                return self.spawn_failed(exec_id, code, message);
            }
        };
        let ExecStdio {
            child,
            stdin_host,
            outputs,
            tty_master,
        } = stdio;
        drop(child);
        let stdin_tx = stdin_host.map(|stdin| {
            let (tx, rx) = mpsc::channel();
            let this = self.clone();
            let is_tty = tty_master.is_some();
            std::thread::spawn(move || {
                this.pump_stdin(exec_id, std::fs::File::from(stdin), rx, is_tty)
            });
            tx
        });
        table.by_id.insert(
            exec_id,
            Entry {
                pid,
                stdin: stdin_tx,
                credit: credit.clone(),
                tty_master,
                exit_notify: notify_tx,
                cgroup,
                killed: false,
            },
        );
        table.by_pid.insert(pid, exec_id);
        drop(table);
        let _ = self.spawned.send(());

        self.send(GuestMessage::Started {
            exec_id,
            pid: pid as u32,
        });
        let this = self.clone();
        std::thread::spawn(move || this.pump_output(exec_id, outputs, notify_rx, credit));
    }

    /// Forwards output until the process exited (plus a short grace for trailing output),
    /// never more than [`OUTPUT_WINDOW`] bytes ahead of the host's acknowledgements.
    fn pump_output(
        &self,
        exec_id: u32,
        outputs: Vec<(OwnedFd, OutputStream)>,
        notify: OwnedFd,
        credit: Arc<Credit>,
    ) {
        let mut streams: Vec<(Option<OwnedFd>, OutputStream)> =
            outputs.into_iter().map(|(fd, s)| (Some(fd), s)).collect();
        for (fd, _) in &streams {
            set_nonblocking(fd.as_ref().expect("open").as_raw_fd());
        }
        let mut status: Option<ExitStatus> = None;
        let mut exited_at: Option<Instant> = None;
        let mut grace_deadline: Option<Instant> = None;
        let mut sent: u64 = 0;
        let mut buf = vec![0u8; OUTPUT_CHUNK_LEN];
        loop {
            let open: Vec<usize> = (0..streams.len())
                .filter(|&i| streams[i].0.is_some())
                .collect();
            if status.is_some()
                && (open.is_empty() || grace_deadline.is_some_and(|d| Instant::now() >= d))
            {
                break;
            }
            let blocked = sent.saturating_sub(credit.acked.load(Ordering::SeqCst)) >= OUTPUT_WINDOW;
            let mut pfds: Vec<libc::pollfd> = Vec::with_capacity(4);
            if !blocked {
                pfds.extend(open.iter().map(|&i| libc::pollfd {
                    fd: streams[i].0.as_ref().expect("open").as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                }));
            }
            let credit_slot = pfds.len();
            pfds.push(libc::pollfd {
                fd: credit.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            let notify_slot = pfds.len();
            if status.is_none() {
                pfds.push(libc::pollfd {
                    fd: notify.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            // While the host holds us back, the grace period does not run: output the process
            // wrote before it exited is never dropped for a slow reader (for at most
            // MAX_DRAIN_AFTER_EXIT, so a daemon writing forever cannot keep the execution open).
            let timeout = match grace_deadline {
                Some(_) if blocked => 100,
                Some(d) => d.saturating_duration_since(Instant::now()).as_millis() as i32,
                None => -1,
            };
            // SAFETY: pfds is a live array of pollfd.
            let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout) };
            if rc < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                break;
            }
            if pfds[credit_slot].revents != 0 {
                credit.clear_wake();
                if let (Some(exit), Some(_)) = (exited_at, grace_deadline) {
                    if exit.elapsed() < MAX_DRAIN_AFTER_EXIT {
                        grace_deadline = Some(Instant::now() + OUTPUT_GRACE);
                    }
                }
            }
            if !blocked {
                for (slot, &i) in open.iter().enumerate() {
                    if pfds[slot].revents == 0 {
                        continue;
                    }
                    let budget = OUTPUT_WINDOW
                        .saturating_sub(sent.saturating_sub(credit.acked.load(Ordering::SeqCst)));
                    let (n, open) = self.drain(exec_id, &mut streams[i], &mut buf, budget);
                    sent += n;
                    if !open {
                        streams[i].0 = None;
                    }
                }
            }
            if status.is_none()
                && pfds
                    .get(notify_slot)
                    .is_some_and(|p| p.fd == notify.as_raw_fd() && p.revents != 0)
            {
                let mut raw = [0u8; 4];
                // SAFETY: reading 4 bytes into a live buffer; the reaper writes them atomically.
                if unsafe { libc::read(notify.as_raw_fd(), raw.as_mut_ptr().cast(), 4) } == 4 {
                    status = Some(decode_wait_status(i32::from_ne_bytes(raw)));
                    exited_at = Some(Instant::now());
                    grace_deadline = Some(Instant::now() + OUTPUT_GRACE);
                }
            }
        }
        let mut table = self.table.lock().expect("table lock");
        let entry = table.by_id.remove(&exec_id);
        if let Some(entry) = &entry {
            table.by_pid.remove(&entry.pid);
        }
        drop(table);
        if let Some(Entry {
            cgroup: Some(dir),
            killed,
            ..
        }) = &entry
        {
            // A killed execution is over only when nothing it started is left.
            let deadline = Instant::now() + KILL_SETTLE;
            while *killed && !cgroup_is_empty(dir) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        self.send(GuestMessage::Exited {
            exec_id,
            status: status.unwrap_or(ExitStatus::Signal(libc::SIGKILL)),
        });
        // After the report, off the round trip. Fails while daemons the execution left are
        // still running; they keep their group.
        if let Some(Entry {
            cgroup: Some(dir), ..
        }) = &entry
        {
            let _ = std::fs::remove_dir(dir);
        }
    }

    /// Reads what is available on one stream, up to `budget` bytes (the rest stays in the
    /// pipe); returns the bytes sent and false once the stream reached EOF.
    fn drain(
        &self,
        exec_id: u32,
        stream: &mut (Option<OwnedFd>, OutputStream),
        buf: &mut [u8],
        budget: u64,
    ) -> (u64, bool) {
        let fd = stream.0.as_ref().expect("open").as_raw_fd();
        let mut sent = 0u64;
        while sent < budget {
            let want = buf.len().min((budget - sent) as usize);
            // SAFETY: reading into a live buffer of at least `want` bytes.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), want) };
            if n > 0 {
                self.send(GuestMessage::Output {
                    exec_id,
                    stream: stream.1,
                    data: buf[..n as usize].to_vec(),
                });
                sent += n as u64;
                continue;
            }
            if n == 0 {
                return (sent, false);
            }
            let err = io::Error::last_os_error();
            // A terminal's master reads EIO once the last slave descriptor closed: its EOF.
            return (
                sent,
                matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ),
            );
        }
        (sent, true)
    }

    /// Reaps every child of PID 1: executions (reporting their status) and orphans.
    fn reap_forever(&self, wake: mpsc::Receiver<()>) {
        loop {
            // SAFETY: siginfo_t is plain data that waitid fills.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let rc =
                unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOWAIT) };
            if rc != 0 {
                // ECHILD: no children. New ones only come from `spawn` (orphans are reparented to
                // us before their parent can be reaped), which sends a wake-up after registering
                // the child; one sent before we got here waits in the channel, so none is missed.
                if wake.recv().is_err() {
                    return;
                }
                continue;
            }
            // SAFETY: waitid succeeded, so si_pid is set.
            let pid = unsafe { info.si_pid() };
            self.reap(pid);
        }
    }

    fn reap(&self, pid: i32) {
        let table = self.table.lock().expect("table lock");
        let mut status = 0;
        // SAFETY: waitpid on a specific child; WNOHANG because it may already be gone.
        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } != pid {
            return;
        }
        if let Some(entry) = table.by_pid.get(&pid).and_then(|id| table.by_id.get(id)) {
            // A 4-byte write to a pipe is atomic and never blocks here (64 KiB buffer).
            // SAFETY: writing 4 bytes from a live buffer.
            unsafe {
                libc::write(
                    entry.exit_notify.as_raw_fd(),
                    status.to_ne_bytes().as_ptr().cast(),
                    4,
                )
            };
        }
    }
}

/// Limits as setrlimit(2) resources.
fn rlimits(limits: &ExecLimits) -> Vec<(spawn::RlimitResource, u64)> {
    [
        (libc::RLIMIT_NOFILE, limits.max_open_files),
        (libc::RLIMIT_FSIZE, limits.max_file_size),
        (libc::RLIMIT_AS, limits.max_memory),
        (libc::RLIMIT_CPU, limits.max_cpu_time),
    ]
    .into_iter()
    .filter_map(|(resource, value)| Some((resource, value?)))
    .collect()
}

fn set_window_size(master: RawFd, rows: u16, cols: u16) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from a live struct.
    if unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &size) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a fresh descriptor or -1.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh and ours.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// The standard streams of a new execution: pipes, or a pseudo-terminal.
struct ExecStdio {
    /// The child's ends: stdin, stdout, stderr (all the terminal's slave side for a TTY).
    child: Vec<OwnedFd>,
    /// Where the host's input goes, when stdin is open.
    stdin_host: Option<OwnedFd>,
    /// What the pump reads.
    outputs: Vec<(OwnedFd, OutputStream)>,
    tty_master: Option<OwnedFd>,
}

impl ExecStdio {
    fn open(stdin: bool, tty: Option<(u16, u16)>) -> io::Result<ExecStdio> {
        if let Some((rows, cols)) = tty {
            let ptmx = CString::new(format!("{ROOTFS}/dev/pts/ptmx")).expect("no NUL");
            // SAFETY: open(2) of the box's devpts instance.
            let master = unsafe {
                libc::open(
                    ptmx.as_ptr(),
                    libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
                )
            };
            if master < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: fresh and ours.
            let master = unsafe { OwnedFd::from_raw_fd(master) };
            let mut number: libc::c_uint = 0;
            let unlock: libc::c_int = 0;
            // SAFETY: TIOCSPTLCK reads an int, TIOCGPTN writes one.
            unsafe {
                if libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) != 0
                    || libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut number) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            set_window_size(master.as_raw_fd(), rows, cols)?;
            let slave_path = CString::new(format!("{ROOTFS}/dev/pts/{number}")).expect("no NUL");
            // SAFETY: open(2) of the slave side.
            let slave = unsafe {
                libc::open(
                    slave_path.as_ptr(),
                    libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
                )
            };
            if slave < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: fresh and ours.
            let slave = unsafe { OwnedFd::from_raw_fd(slave) };
            return Ok(ExecStdio {
                child: vec![dup(slave.as_raw_fd())?, dup(slave.as_raw_fd())?, slave],
                stdin_host: Some(dup(master.as_raw_fd())?),
                outputs: vec![(dup(master.as_raw_fd())?, OutputStream::Stdout)],
                tty_master: Some(master),
            });
        }
        let (stdin_child, stdin_host) = if stdin {
            let (r, w) = pipe()?;
            (r, Some(w))
        } else {
            (OwnedFd::from(std::fs::File::open("/dev/null")?), None)
        };
        let (stdout_host, stdout_child) = pipe()?;
        let (stderr_host, stderr_child) = pipe()?;
        Ok(ExecStdio {
            child: vec![stdin_child, stdout_child, stderr_child],
            stdin_host,
            outputs: vec![
                (stdout_host, OutputStream::Stdout),
                (stderr_host, OutputStream::Stderr),
            ],
            tty_master: None,
        })
    }

    fn child_fds(&self) -> [RawFd; 3] {
        [
            self.child[0].as_raw_fd(),
            self.child[1].as_raw_fd(),
            self.child[2].as_raw_fd(),
        ]
    }
}

impl Executions {
    /// Writes the host's input to the process, acknowledging what it took.
    fn pump_stdin(
        &self,
        exec_id: u32,
        mut stdin: std::fs::File,
        rx: mpsc::Receiver<StdinOp>,
        is_tty: bool,
    ) {
        while let Ok(op) = rx.recv() {
            match op {
                StdinOp::Data(data) => {
                    if stdin.write_all(&data).is_err() {
                        break;
                    }
                    self.send(GuestMessage::StdinAck {
                        exec_id,
                        bytes: data.len() as u64,
                    });
                }
                StdinOp::Close => {
                    // Closing a terminal's master would hang it up: send end-of-file (^D).
                    if is_tty {
                        let _ = stdin.write_all(b"\x04");
                    }
                    break;
                }
            }
        }
    }
}
