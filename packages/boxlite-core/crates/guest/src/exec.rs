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
    ExecRequest, ExitStatus, GuestMessage, HostMessage, OutputStream, OUTPUT_CHUNK_LEN,
};

use crate::channel::Port;
use crate::{spawn, system, ROOTFS};

/// How long output is still collected after the process exited, for descendants that keep the
/// pipes open. The execution ends on the process's exit, not on EOF.
const OUTPUT_GRACE: Duration = Duration::from_millis(50);

enum StdinOp {
    Data(Vec<u8>),
    Close,
}

struct Entry {
    pid: i32,
    stdin: Option<mpsc::Sender<StdinOp>>,
    /// Write end of the pipe on which the reaper hands over the raw wait status.
    exit_notify: OwnedFd,
    /// The execution's own cgroup (absent only where cgroups are unavailable).
    cgroup: Option<PathBuf>,
    /// Set by a kill of the whole tree: the exit is reported once the cgroup is empty.
    killed: bool,
}

/// How long a killed execution's cgroup may take to empty before its exit is reported anyway.
const KILL_SETTLE: Duration = Duration::from_secs(2);

/// Creates the cgroup of a new execution; `None` where cgroups are unavailable.
fn create_cgroup() -> Option<(PathBuf, OwnedFd)> {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let dir = PathBuf::from(format!(
        "{ROOTFS}/sys/fs/cgroup/boxlite-exec-{}",
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
            HostMessage::Exec(req) => self.spawn(req),
            HostMessage::Stdin { exec_id, data } => self.stdin(exec_id, StdinOp::Data(data)),
            HostMessage::CloseStdin { exec_id } => self.stdin(exec_id, StdinOp::Close),
            HostMessage::Signal { exec_id, signal } => self.signal(exec_id, signal),
            HostMessage::KillTree { exec_id } => self.kill_tree(exec_id),
            HostMessage::Ping { token } => self.send(GuestMessage::Pong { token }),
            HostMessage::Hello { .. } | HostMessage::Shutdown => {}
        }
    }

    fn stdin(&self, exec_id: u32, op: StdinOp) {
        let table = self.table.lock().expect("table lock");
        if let Some(tx) = table.by_id.get(&exec_id).and_then(|e| e.stdin.as_ref()) {
            let _ = tx.send(op);
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
        let envp: Option<Vec<CString>> = req
            .env
            .iter()
            .map(|(k, v)| to_c(&format!("{k}={v}")))
            .collect();
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
        let pipes = (|| -> io::Result<_> {
            let stdin = if req.stdin {
                let (r, w) = pipe()?;
                (r, Some(w))
            } else {
                (OwnedFd::from(std::fs::File::open("/dev/null")?), None)
            };
            Ok((stdin, pipe()?, pipe()?))
        })();
        let ((stdin_child, stdin_host), (stdout_host, stdout_child), (stderr_host, stderr_child)) =
            match pipes {
                Ok(p) => p,
                Err(e) => {
                    return self.spawn_failed(exec_id, 126, format!("cannot create pipes: {e}"))
                }
            };
        let (cgroup, cgroup_procs) = create_cgroup().unzip();
        let request = spawn::SpawnRequest {
            cgroup_procs: cgroup_procs.as_ref().map(AsRawFd::as_raw_fd),
            candidates: spawn::candidates(&req.program, path_var),
            argv,
            envp,
            root,
            cwd,
            user: req.user,
            stdio: [
                stdin_child.as_raw_fd(),
                stdout_child.as_raw_fd(),
                stderr_child.as_raw_fd(),
            ],
        };
        let (notify_rx, notify_tx) = match pipe() {
            Ok(p) => p,
            Err(e) => return self.spawn_failed(exec_id, 126, format!("cannot create a pipe: {e}")),
        };
        let mut table = self.table.lock().expect("table lock");
        let pid = match spawn::spawn(&request) {
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
                    _ => (126, format!("{program}: cannot start: {}", failure.error)),
                };
                return self.spawn_failed(exec_id, code, message);
            }
        };
        drop((stdin_child, stdout_child, stderr_child));
        let stdin_tx = stdin_host.map(|stdin| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || pump_stdin(std::fs::File::from(stdin), rx));
            tx
        });
        table.by_id.insert(
            exec_id,
            Entry {
                pid,
                stdin: stdin_tx,
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
        let (stdout, stderr) = (stdout_host, stderr_host);
        let this = self.clone();
        std::thread::spawn(move || this.pump_output(exec_id, stdout, stderr, notify_rx));
    }

    /// Forwards output until the process exited (plus a short grace for trailing output).
    fn pump_output(&self, exec_id: u32, stdout: OwnedFd, stderr: OwnedFd, notify: OwnedFd) {
        let mut streams = [
            (Some(stdout), OutputStream::Stdout),
            (Some(stderr), OutputStream::Stderr),
        ];
        for (fd, _) in &streams {
            set_nonblocking(fd.as_ref().expect("open").as_raw_fd());
        }
        let mut status: Option<ExitStatus> = None;
        let mut grace_deadline: Option<Instant> = None;
        let mut buf = vec![0u8; OUTPUT_CHUNK_LEN];
        loop {
            let open: Vec<usize> = (0..2).filter(|&i| streams[i].0.is_some()).collect();
            if status.is_some()
                && (open.is_empty() || grace_deadline.is_some_and(|d| Instant::now() >= d))
            {
                break;
            }
            let mut pfds: Vec<libc::pollfd> = open
                .iter()
                .map(|&i| libc::pollfd {
                    fd: streams[i].0.as_ref().expect("open").as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            if status.is_none() {
                pfds.push(libc::pollfd {
                    fd: notify.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            let timeout = grace_deadline.map_or(-1, |d| {
                d.saturating_duration_since(Instant::now()).as_millis() as i32
            });
            // SAFETY: pfds is a live array of pollfd.
            let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout) };
            if rc < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                break;
            }
            for (slot, &i) in open.iter().enumerate() {
                if pfds[slot].revents == 0 {
                    continue;
                }
                if !self.drain(exec_id, &mut streams[i], &mut buf) {
                    streams[i].0 = None;
                }
            }
            if status.is_none()
                && pfds
                    .last()
                    .is_some_and(|p| p.fd == notify.as_raw_fd() && p.revents != 0)
            {
                let mut raw = [0u8; 4];
                // SAFETY: reading 4 bytes into a live buffer; the reaper writes them atomically.
                if unsafe { libc::read(notify.as_raw_fd(), raw.as_mut_ptr().cast(), 4) } == 4 {
                    status = Some(decode_wait_status(i32::from_ne_bytes(raw)));
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

    /// Reads what is available on one stream; false once it reached EOF.
    fn drain(
        &self,
        exec_id: u32,
        stream: &mut (Option<OwnedFd>, OutputStream),
        buf: &mut [u8],
    ) -> bool {
        let fd = stream.0.as_ref().expect("open").as_raw_fd();
        loop {
            // SAFETY: reading into a live buffer of the given length.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                self.send(GuestMessage::Output {
                    exec_id,
                    stream: stream.1,
                    data: buf[..n as usize].to_vec(),
                });
                continue;
            }
            if n == 0 {
                return false;
            }
            let err = io::Error::last_os_error();
            return matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            );
        }
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

fn pump_stdin(mut stdin: std::fs::File, rx: mpsc::Receiver<StdinOp>) {
    while let Ok(StdinOp::Data(data)) = rx.recv() {
        if stdin.write_all(&data).is_err() {
            break;
        }
    }
}
