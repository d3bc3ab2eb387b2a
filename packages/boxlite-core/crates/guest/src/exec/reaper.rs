//! The reaper: PID 1 inherits every orphan, so one thread reaps all children. It peeks at a
//! zombie with `WNOWAIT`, then reaps it under the table lock: a process being spawned is
//! registered under that same lock, so its exit status can never be lost or stolen from
//! `spawn` itself. An execution's raw wait status goes to its output pump over a pipe.

use std::os::fd::AsRawFd;
use std::sync::mpsc;

use boxlite_protocol::ExitStatus;

use super::Executions;

pub(super) fn decode_wait_status(status: i32) -> ExitStatus {
    if libc::WIFSIGNALED(status) {
        ExitStatus::Signal(libc::WTERMSIG(status))
    } else {
        ExitStatus::Code(libc::WEXITSTATUS(status))
    }
}

impl Executions {
    /// Reaps every child of PID 1: executions (reporting their status) and orphans.
    pub(super) fn reap_forever(&self, wake: mpsc::Receiver<()>) {
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
