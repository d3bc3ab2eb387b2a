//! A running execution: [`Execution`] and the driver task behind it, which routes the
//! agent's events into per-stream output queues, acknowledges consumed output, grants stdin
//! credit, and enforces the timeout and the kill-confirm deadline even when nobody waits;
//! [`ExecOutput`] is how it ended. The driver is `driver.rs`; what it shares with the
//! execution's readers is `state.rs`.

mod driver;
mod state;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use boxlite_protocol::{ExitStatus, OutputStream, OUTPUT_WINDOW};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;

use super::LiteBox;
use crate::agent::{AgentClient, AgentError, ExecEvent};
use crate::error::{Error, Result};
use driver::drive_execution;
pub use driver::KILL_CONFIRM_TIMEOUT;
use state::{stream_index, ExecShared, ExecState};

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

/// Largest stdin chunk sent in one frame.
pub(super) const STDIN_CHUNK: usize = 64 * 1024;

/// The instant `timeout` from now; a deadline beyond what the clock can hold never comes.
fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// A running (or finished) process in a box.
pub struct Execution {
    pub(super) litebox: Arc<LiteBox>,
    pub(super) agent: Arc<AgentClient>,
    pub(super) exec_id: u32,
    pub(super) tty: bool,
    pub(super) stdin_open: bool,
    /// Somebody took the stdin handle; otherwise `wait` closes stdin first.
    pub(super) stdin_claimed: AtomicBool,
    pub(super) stdin_closed: AtomicBool,
    /// Bytes of each stream `wait` keeps.
    pub(super) output_limit: usize,
    pub(super) shared: Arc<ExecShared>,
    pub(super) result: tokio::sync::OnceCell<std::result::Result<ExecOutput, AgentError>>,
}

impl Execution {
    /// An execution the agent has just started (`started` is what [`AgentClient::exec`]
    /// returned), with its driver task spawned: the timeout, if any, runs from now (until
    /// [`Execution::set_deadline`] sets another).
    ///
    /// [`LiteBox::exec`] calls it; it is also the seam the unit tests use to drive an
    /// execution over a fake agent, without a VM.
    pub(super) fn start(
        litebox: Arc<LiteBox>,
        agent: Arc<AgentClient>,
        started: (u32, mpsc::UnboundedReceiver<ExecEvent>),
        tty: bool,
        stdin_open: bool,
        output_limit: usize,
        timeout: Option<Duration>,
    ) -> Execution {
        let (exec_id, events) = started;
        let (changed, _) = watch::channel(0u64);
        let (deadline, _) = watch::channel(deadline_after(timeout));
        let shared = Arc::new(ExecShared {
            state: Mutex::new(ExecState::default()),
            changed,
            stdin_credit: Semaphore::new(OUTPUT_WINDOW as usize),
            deadline,
            kill_sent: tokio::sync::Notify::new(),
        });
        tokio::spawn(drive_execution(
            shared.clone(),
            events,
            agent.clone(),
            exec_id,
        ));
        Execution {
            litebox,
            agent,
            exec_id,
            tty,
            stdin_open,
            stdin_claimed: AtomicBool::new(false),
            stdin_closed: AtomicBool::new(false),
            output_limit,
            shared,
            result: tokio::sync::OnceCell::new(),
        }
    }

    pub fn id(&self) -> u32 {
        self.exec_id
    }

    /// From now, the execution's timeout is `timeout` (`None` disarms it), in place of the
    /// one it was started with. When it runs out, the timeout path runs as for a timeout given
    /// at the start: every process of the execution is killed, the kill must be confirmed
    /// within the kill-confirm deadline, and the result reports `timed_out` and exit code
    /// [`TIMEOUT_EXIT_CODE`]. Setting it after the execution ended, after the timeout fired or
    /// after a kill was sent does nothing.
    ///
    /// Returns whether the execution was still running with its timeout not fired: `false`
    /// means this did nothing (and, for a disarm, that the timeout fired first). The warm
    /// interpreter of the tool core arms it around each request it serves.
    pub fn set_deadline(&self, timeout: Option<Duration>) -> bool {
        // The driver decides under this lock whether its alarm still stands.
        let state = self.shared.state.lock().expect("exec state");
        self.shared.deadline.send_replace(deadline_after(timeout));
        state.end.is_none() && !state.timed_out
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

    fn lost(&self, error: AgentError) -> Error {
        self.litebox.channel_error(error)
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

#[cfg(test)]
mod tests;
