//! Executions: spawning processes in the box, pumping their output, reaping them.
//!
//! PID 1 inherits every orphan, so one reaper thread reaps all children. It peeks at a zombie
//! with `WNOWAIT`, then reaps it under the table lock: a process being spawned is registered
//! under that same lock, so its exit status can never be lost or stolen from `spawn` itself.
//!
//! The execution table is `table`; starting an execution (cgroup, stdio, spawn) is `launch`,
//! with `cgroup` and `stdio` for its parts; `output` and `input` pump the streams; `reaper`
//! reaps. This module holds [`Executions`] and dispatches the host's messages.

mod cgroup;
mod input;
mod launch;
mod output;
mod reaper;
mod stdio;
mod table;

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use boxlite_protocol::{GuestMessage, HostMessage};

use crate::channel::Port;
use crate::log::log;
use crate::metrics;

use self::input::StdinOp;
use self::stdio::set_window_size;
use self::table::Table;

#[derive(Clone)]
pub struct Executions {
    port: Arc<Port>,
    has_rootfs: bool,
    started: Arc<AtomicU64>,
    table: Arc<Mutex<Table>>,
    /// Wakes the reaper when it sleeps for want of children.
    spawned: mpsc::Sender<()>,
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
        std::thread::spawn(move || {
            if has_rootfs {
                cgroup::prepare_spare_cgroup();
            }
            reaper.reap_forever(wake)
        });
        executions
    }

    fn send(&self, msg: GuestMessage) {
        if let Err(e) = self.port.send(&msg) {
            log(&format!("send failed: {e}"));
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
            HostMessage::SetHostname { hostname } => {
                if hostname.is_empty() || hostname.len() > boxlite_protocol::HOSTNAME_MAX {
                    log(&format!("hostname of {} bytes refused", hostname.len()));
                } else {
                    crate::system::set_hostname(&hostname);
                }
            }
            HostMessage::SetClock { unix_time_ns } => crate::system::set_clock(unix_time_ns),
            // Off before the agent reads on (a `Ping` sent after it is answered once the guest
            // no longer reports: the host's snapshots rely on it); on in the background.
            HostMessage::FreePageReporting { enabled } => {
                crate::system::set_free_page_reporting(enabled)
            }
            HostMessage::NewBootId => crate::system::new_boot_id(),
            HostMessage::Ping { token } => self.send(GuestMessage::Pong { token }),
            HostMessage::Metrics { token } => {
                let running = self.table.lock().expect("table lock").by_id.len() as u64;
                let metrics = metrics::collect(self.started.load(Ordering::Relaxed), running);
                self.send(GuestMessage::Metrics { token, metrics });
            }
            HostMessage::Hello { .. } | HostMessage::HelloAgain | HostMessage::Shutdown => {}
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
                log(&format!("resize of execution {exec_id} failed: {e}"));
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
            cgroup::kill_cgroup(dir);
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
}
