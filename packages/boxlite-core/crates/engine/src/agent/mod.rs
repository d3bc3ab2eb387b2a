//! The host end of the guest channel: connects to the VM's agent socket, checks the protocol
//! version, and multiplexes executions over the one stream.
//!
//! The guest is hostile (its agent may be taken over by root in the box), so the client holds
//! it to the protocol: output beyond an execution's window, stdin acknowledgements for bytes
//! never sent, oversized or malformed frames, a write the guest does not read within its
//! deadline and a request it does not answer in time (while executions are open, a liveness
//! probe runs too) all close the channel as *broken*, and the box's hook kills its VM.
//!
//! This file is the client's public face (its events, deadlines and calls); the rest is one
//! concern a file: `connect.rs` (the socket and the version handshake), `channel.rs` (the
//! shared state: writes and requests under their deadlines, closing, the heartbeat),
//! `reader.rs` (the read task: each guest frame routed to its execution, flow control
//! checked), `error.rs` (`AgentError`, why the channel closed).

mod channel;
mod connect;
mod error;
mod reader;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use boxlite_protocol::{ExecRequest, ExitStatus, GuestMetrics, HostMessage, OutputStream};
use tokio::sync::mpsc;

use channel::{Answer, Route, Shared};
pub use connect::ConnectError;
pub use error::{AgentError, Closed};

/// What happened to an execution, in order.
#[derive(Debug, Clone)]
pub enum ExecEvent {
    Output {
        stream: OutputStream,
        data: Vec<u8>,
    },
    /// This many more bytes of stdin reached the process.
    StdinAck(u64),
    Exited(ExitStatus),
    /// The channel closed before the execution ended (the VM died or the box stopped), or the
    /// agent gave up on the execution.
    Lost(AgentError),
}

/// The guest's hello.
#[derive(Debug, Clone)]
pub struct GuestHello {
    pub kernel_release: String,
    pub uptime_ms: u64,
}

/// How long the guest may take over what the host waits for; past it, the channel is broken.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// One frame written to the channel (the guest must keep reading it).
    pub write: Duration,
    /// An answer to a request (a liveness probe, metrics).
    pub answer: Duration,
    /// How often the agent is probed while executions are open, so a guest that stopped
    /// (a paused VM, a stopped PID 1) cannot keep `wait()` waiting forever.
    pub heartbeat: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            write: Duration::from_secs(10),
            answer: Duration::from_secs(10),
            heartbeat: Duration::from_secs(5),
        }
    }
}

pub struct AgentClient {
    shared: Arc<Shared>,
    next_exec_id: AtomicU32,
}

impl AgentClient {
    /// Why the channel closed, once it has.
    pub fn closed_error(&self) -> Option<AgentError> {
        self.shared.closed().map(|c| c.error)
    }

    /// How the channel closed, once it has.
    pub fn closed(&self) -> Option<Closed> {
        self.shared.closed()
    }

    /// Runs `hook` (once the channel is broken, or now if it already is): the box kills its VM.
    pub fn set_on_broken(&self, hook: impl Fn(&str) + Send + Sync + 'static) {
        if self.shared.on_broken.set(Box::new(hook)).is_err() {
            return;
        }
        if let Some(Closed {
            error,
            broken: true,
        }) = self.shared.closed()
        {
            if let Some(hook) = self.shared.on_broken.get() {
                hook(&error.to_string());
            }
        }
    }

    /// Closes the channel with `error` (the guest misbehaved in a way only the caller sees;
    /// an error that breaks the channel also runs the box's hook).
    pub fn fail(&self, error: AgentError) {
        self.shared.close(error);
    }

    async fn send(&self, msg: &HostMessage) -> Result<(), AgentError> {
        self.shared.send(msg).await
    }

    /// Starts an execution; its events arrive on the returned receiver.
    pub async fn exec(
        &self,
        mut request: ExecRequest,
    ) -> Result<(u32, mpsc::UnboundedReceiver<ExecEvent>), AgentError> {
        let exec_id = self.next_exec_id.fetch_add(1, Ordering::Relaxed);
        request.exec_id = exec_id;
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut routes = self.shared.routes.lock().expect("routes lock");
            let Some(routes) = routes.as_mut() else {
                return Err(self.shared.closed_error());
            };
            routes.insert(
                exec_id,
                Route {
                    events: tx,
                    output_received: 0,
                    output_acked: 0,
                    stdin_sent: 0,
                    stdin_acked: 0,
                },
            );
        }
        if let Err(e) = self.send(&HostMessage::Exec(Box::new(request))).await {
            if let Some(routes) = self.shared.routes.lock().expect("routes lock").as_mut() {
                routes.remove(&exec_id);
            }
            return Err(e);
        }
        Ok((exec_id, rx))
    }

    pub async fn signal(&self, exec_id: u32, signal: i32) -> Result<(), AgentError> {
        self.send(&HostMessage::Signal { exec_id, signal }).await
    }

    /// Gives a guest restored from a snapshot its box's hostname (it still has the
    /// snapshot's); the agent applies it before anything asked after it.
    pub async fn set_hostname(&self, hostname: &str) -> Result<(), AgentError> {
        self.send(&HostMessage::SetHostname {
            hostname: hostname.to_owned(),
        })
        .await
    }

    /// Sets the guest's clock to the host's (after its vCPUs stood still).
    pub async fn set_clock_now(&self) -> Result<(), AgentError> {
        self.send(&HostMessage::SetClock {
            unix_time_ns: unix_time_ns_now(),
        })
        .await
    }

    /// Turns the guest's free page reporting on or off (see [`HostMessage::FreePageReporting`]).
    pub async fn set_free_page_reporting(&self, enabled: bool) -> Result<(), AgentError> {
        self.send(&HostMessage::FreePageReporting { enabled }).await
    }

    /// Gives a guest restored into a new box its own boot id (see [`HostMessage::NewBootId`]).
    pub async fn new_boot_id(&self) -> Result<(), AgentError> {
        self.send(&HostMessage::NewBootId).await
    }

    pub async fn kill_tree(&self, exec_id: u32) -> Result<(), AgentError> {
        self.send(&HostMessage::KillTree { exec_id }).await
    }

    pub async fn stdin(&self, exec_id: u32, data: Vec<u8>) -> Result<(), AgentError> {
        let len = data.len() as u64;
        self.shared
            .with_route(exec_id, |r| r.stdin_sent = r.stdin_sent.saturating_add(len));
        self.send(&HostMessage::Stdin { exec_id, data }).await
    }

    pub async fn close_stdin(&self, exec_id: u32) -> Result<(), AgentError> {
        self.send(&HostMessage::CloseStdin { exec_id }).await
    }

    /// Tells the agent the host consumed `bytes` more output of the execution (which lets
    /// it send that much more).
    pub async fn ack_output(&self, exec_id: u32, bytes: u64) -> Result<(), AgentError> {
        // Counted before it is sent: the guest cannot use credit it has not been given yet.
        self.shared.with_route(exec_id, |r| {
            r.output_acked = r.output_acked.saturating_add(bytes)
        });
        self.send(&HostMessage::OutputAck { exec_id, bytes }).await
    }

    pub async fn resize_tty(&self, exec_id: u32, rows: u16, cols: u16) -> Result<(), AgentError> {
        self.send(&HostMessage::ResizeTty {
            exec_id,
            rows,
            cols,
        })
        .await
    }

    /// A liveness probe: `Ok` once the agent answered (within the answer deadline).
    pub async fn ping(&self) -> Result<(), AgentError> {
        self.shared
            .request("liveness probe", |token| HostMessage::Ping { token })
            .await
            .map(|_| ())
    }

    /// The guest's resource use.
    pub async fn metrics(&self) -> Result<GuestMetrics, AgentError> {
        match self
            .shared
            .request("metrics request", |token| HostMessage::Metrics { token })
            .await?
        {
            Answer::Metrics(metrics) => Ok(metrics),
            Answer::Pong => Err(AgentError::WrongAnswer {
                request: "metrics request",
                answer: "pong",
            }),
        }
    }

    /// Records that the VM's vCPUs were stopped (`true`, before they stop) or run again
    /// (`false`, once they do): while paused, the heartbeat does not probe the agent, and a
    /// deadline that runs out (a write, an answer, an execution's kill confirmation) starts
    /// again, whole, once the VM runs, so a paused box is never declared broken for its silence.
    pub fn set_paused(&self, paused: bool) {
        self.shared.set_paused(paused);
    }

    /// Whether the VM is paused.
    pub fn paused(&self) -> bool {
        self.shared.pause_state().paused
    }

    /// How many times the VM was paused so far (to arm a deadline with).
    pub fn pauses(&self) -> u64 {
        self.shared.pause_state().pauses
    }

    /// Whether a deadline armed at `pauses` (see [`AgentClient::pauses`]) should be armed
    /// again rather than enforced: the VM is paused, or was paused since. Returns once the
    /// VM runs (or the channel closed).
    pub async fn paused_since(&self, pauses: u64) -> bool {
        self.shared.paused_since(pauses).await
    }

    /// Asks the agent to flush and power off; the VM then exits by itself.
    pub async fn shutdown(&self) -> Result<(), AgentError> {
        self.send(&HostMessage::Shutdown).await
    }
}

/// The host's wall-clock time in nanoseconds since the Unix epoch (0 before it).
pub(crate) fn unix_time_ns_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
