//! The host end of the guest channel: connects to the VM's agent socket, checks the protocol
//! version, and multiplexes executions over the one stream.
//!
//! The guest is hostile (its agent may be taken over by root in the box), so the client holds
//! it to the protocol: output beyond an execution's window, stdin acknowledgements for bytes
//! never sent, oversized or malformed frames, a write the guest does not read within its
//! deadline and a request it does not answer in time (while executions are open, a liveness
//! probe runs too) all close the channel as *broken*, and the box's hook kills its VM.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use boxlite_protocol::{
    encode_frame, nonblocking, ExecRequest, ExitStatus, GuestMessage, GuestMetrics, HostMessage,
    OutputStream, ProtocolError, MAX_GUEST_FRAME_LEN, OUTPUT_WINDOW, PROTOCOL_VERSION,
};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::hypervisor::VmExit;

/// What happened to an execution, in order.
#[derive(Debug, Clone)]
pub enum ExecEvent {
    Started {
        pid: u32,
    },
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

/// Why a call on the channel failed, or why the channel closed. Cloned to every execution and
/// call the closing ends, so sources are shared.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AgentError {
    /// The channel closed, and why is not known (yet).
    #[error("the channel closed")]
    Closed,
    /// A host message could not be encoded.
    #[error(transparent)]
    Encode(Arc<ProtocolError>),
    /// Writing to the channel failed: the VM ended (its exit watcher reports that) or the
    /// socket failed.
    #[error("channel write failed: {0}")]
    WriteFailed(#[source] Arc<io::Error>),
    /// The guest did not read a frame within the write deadline.
    #[error("the guest did not read its channel for {} s (is its VM paused or its agent stopped?)", .after.as_secs_f64())]
    WriteTimedOut { after: Duration },
    /// The guest did not answer a request within the answer deadline.
    #[error("the guest agent did not answer a {request} within {} s (is its VM paused or its agent stopped?)", .after.as_secs_f64())]
    AnswerTimedOut {
        request: &'static str,
        after: Duration,
    },
    /// The guest answered a request with the answer to another kind of request.
    #[error("the guest agent answered a {request} with a {answer}")]
    WrongAnswer {
        request: &'static str,
        answer: &'static str,
    },
    /// The guest closed its end.
    #[error("the guest closed the channel")]
    GuestClosed,
    #[error("channel read failed: {0}")]
    ReadFailed(#[source] Arc<io::Error>),
    /// A malformed or oversized frame.
    #[error("the guest agent broke the protocol: {0}")]
    Protocol(#[source] Arc<ProtocolError>),
    #[error("the guest sent {ahead} bytes of output of execution {exec_id} ahead of the host's acknowledgements, more than the {OUTPUT_WINDOW}-byte window it was granted")]
    OutputBeyondWindow { exec_id: u32, ahead: u64 },
    #[error("the guest acknowledged {acked} bytes of stdin of execution {exec_id}, but only {sent} were sent")]
    StdinOverAcknowledged { exec_id: u32, acked: u64, sent: u64 },
    /// A kill (`kill()` or a timeout's) was not confirmed by the execution's exit in time.
    #[error("the guest agent did not confirm a kill within {} s", .after.as_secs())]
    KillNotConfirmed { after: Duration },
    /// The agent's own message about one execution (clipped to [`MAX_GUEST_TEXT`]): the
    /// guest's text is all there is.
    #[error("{0}")]
    Guest(String),
}

impl AgentError {
    /// The guest broke the protocol or stopped answering (as opposed to the VM ending): a
    /// channel closed by this error is *broken*, and the box's hook kills its VM.
    pub fn breaks_channel(&self) -> bool {
        matches!(
            self,
            AgentError::WriteTimedOut { .. }
                | AgentError::AnswerTimedOut { .. }
                | AgentError::Protocol(_)
                | AgentError::OutputBeyondWindow { .. }
                | AgentError::StdinOverAcknowledged { .. }
                | AgentError::KillNotConfirmed { .. }
        )
    }
}

/// Why the channel closed.
#[derive(Debug, Clone)]
pub struct Closed {
    pub error: AgentError,
    /// The guest broke the protocol or stopped answering (as opposed to the VM ending).
    pub broken: bool,
}

/// Longest guest-supplied message (an error, a spawn failure) kept or logged, in bytes.
const MAX_GUEST_TEXT: usize = 4096;

/// Errors of the agent logged as warnings per connection; later ones go to the debug log, so
/// a guest cannot flood the host's log.
const MAX_LOGGED_ERRORS: u64 = 20;

/// One open execution: where its events go and its flow-control accounts.
struct Route {
    events: mpsc::UnboundedSender<ExecEvent>,
    output_received: u64,
    output_acked: u64,
    stdin_sent: u64,
    stdin_acked: u64,
}

enum Answer {
    Pong,
    Metrics(GuestMetrics),
}

type BrokenHook = Box<dyn Fn(&str) + Send + Sync>;

struct Shared {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    /// Open executions; `None` once the channel is closed.
    routes: Mutex<Option<HashMap<u32, Route>>>,
    /// Requests awaiting their answer, by token.
    waiters: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    next_token: AtomicU64,
    errors_logged: AtomicU64,
    closed: watch::Sender<Option<Closed>>,
    on_broken: OnceLock<BrokenHook>,
    deadlines: Deadlines,
}

pub struct AgentClient {
    shared: Arc<Shared>,
    next_exec_id: AtomicU32,
}

/// Why connecting to the agent failed.
#[derive(Debug)]
pub enum ConnectError {
    /// The VM ended before the agent answered.
    VmExited(VmExit),
    TimedOut,
    Protocol(String),
}

/// `text` cut to [`MAX_GUEST_TEXT`] bytes (at a character boundary).
fn clip(mut text: String) -> String {
    if text.len() > MAX_GUEST_TEXT {
        let mut end = MAX_GUEST_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

impl Shared {
    fn closed(&self) -> Option<Closed> {
        self.closed.borrow().clone()
    }

    /// Closes the channel once: pending executions and requests fail with `error`; an error
    /// that breaks the channel also runs the box's hook (which kills the VM).
    fn close(&self, error: AgentError) {
        let broken = error.breaks_channel();
        let first = self.closed.send_if_modified(|c| {
            if c.is_some() {
                return false;
            }
            *c = Some(Closed {
                error: error.clone(),
                broken,
            });
            true
        });
        if !first {
            return;
        }
        if broken {
            let reason = error.to_string();
            tracing::warn!(%reason, "the guest broke its channel");
            if let Some(hook) = self.on_broken.get() {
                hook(&reason);
            }
        }
        let open = self
            .routes
            .lock()
            .expect("routes lock")
            .take()
            .unwrap_or_default();
        for (_, route) in open {
            let _ = route.events.send(ExecEvent::Lost(error.clone()));
        }
        self.waiters.lock().expect("waiters lock").clear();
    }

    fn closed_error(&self) -> AgentError {
        self.closed().map_or(AgentError::Closed, |c| c.error)
    }

    /// Closes the channel with `error` and returns it.
    fn fail(&self, error: AgentError) -> AgentError {
        self.close(error.clone());
        error
    }

    /// Writes one frame within the write deadline.
    async fn send(&self, msg: &HostMessage) -> Result<(), AgentError> {
        let frame = encode_frame(msg).map_err(|e| AgentError::Encode(Arc::new(e)))?;
        let mut writer = self.writer.lock().await;
        if let Some(closed) = self.closed() {
            return Err(closed.error);
        }
        let write = async {
            writer.write_all(&frame).await?;
            writer.flush().await
        };
        match tokio::time::timeout(self.deadlines.write, write).await {
            Ok(Ok(())) => Ok(()),
            // The VM ended (its exit watcher reports that) or the socket failed.
            Ok(Err(e)) => Err(self.fail(AgentError::WriteFailed(Arc::new(e)))),
            // Half a frame may be written: the stream cannot be used any more.
            Err(_) => Err(self.fail(AgentError::WriteTimedOut {
                after: self.deadlines.write,
            })),
        }
    }

    /// Sends the request `make(token)` and waits for its answer within the answer deadline.
    async fn request(
        &self,
        what: &'static str,
        make: impl FnOnce(u64) -> HostMessage,
    ) -> Result<Answer, AgentError> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().expect("waiters lock").insert(token, tx);
        let answer = async {
            self.send(&make(token)).await?;
            match tokio::time::timeout(self.deadlines.answer, rx).await {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(_)) => Err(self.closed_error()),
                Err(_) => Err(self.fail(AgentError::AnswerTimedOut {
                    request: what,
                    after: self.deadlines.answer,
                })),
            }
        }
        .await;
        self.waiters.lock().expect("waiters lock").remove(&token);
        answer
    }

    /// Routes one message from the guest; `Err` is a protocol violation.
    fn route(&self, msg: GuestMessage) -> Result<(), AgentError> {
        let (exec_id, event, last) = match msg {
            GuestMessage::Started { exec_id, pid } => (exec_id, ExecEvent::Started { pid }, false),
            GuestMessage::Output {
                exec_id,
                stream,
                data,
            } => {
                if data.is_empty() {
                    return Ok(());
                }
                (exec_id, ExecEvent::Output { stream, data }, false)
            }
            GuestMessage::StdinAck { exec_id, bytes } => {
                if bytes == 0 {
                    return Ok(());
                }
                (exec_id, ExecEvent::StdinAck(bytes), false)
            }
            GuestMessage::Exited { exec_id, status } => {
                let status = match status {
                    ExitStatus::SpawnFailed { code, message } => ExitStatus::SpawnFailed {
                        code,
                        message: clip(message),
                    },
                    other => other,
                };
                (exec_id, ExecEvent::Exited(status), true)
            }
            GuestMessage::Error {
                exec_id: Some(exec_id),
                message,
            } => (
                exec_id,
                ExecEvent::Lost(AgentError::Guest(clip(message))),
                true,
            ),
            GuestMessage::Error {
                exec_id: None,
                message,
            } => {
                let message = clip(message);
                if self.errors_logged.fetch_add(1, Ordering::Relaxed) < MAX_LOGGED_ERRORS {
                    tracing::warn!(%message, "guest agent reported an error");
                } else {
                    tracing::debug!(%message, "guest agent reported an error");
                }
                return Ok(());
            }
            GuestMessage::Pong { token } => {
                self.answer(token, Answer::Pong);
                return Ok(());
            }
            GuestMessage::Metrics { token, metrics } => {
                self.answer(token, Answer::Metrics(metrics));
                return Ok(());
            }
            GuestMessage::Hello { .. } => return Ok(()),
        };
        let mut routes = self.routes.lock().expect("routes lock");
        // Messages for executions the host does not know (or that ended) are dropped.
        let Some(routes) = routes.as_mut() else {
            return Ok(());
        };
        let Some(route) = routes.get_mut(&exec_id) else {
            return Ok(());
        };
        match &event {
            ExecEvent::Output { data, .. } => {
                route.output_received += data.len() as u64;
                let ahead = route.output_received - route.output_acked.min(route.output_received);
                if ahead > OUTPUT_WINDOW {
                    return Err(AgentError::OutputBeyondWindow { exec_id, ahead });
                }
            }
            ExecEvent::StdinAck(bytes) => {
                let acked = route.stdin_acked.saturating_add(*bytes);
                if acked > route.stdin_sent {
                    return Err(AgentError::StdinOverAcknowledged {
                        exec_id,
                        acked,
                        sent: route.stdin_sent,
                    });
                }
                route.stdin_acked = acked;
            }
            _ => {}
        }
        let _ = route.events.send(event);
        if last {
            routes.remove(&exec_id);
        }
        Ok(())
    }

    fn answer(&self, token: u64, answer: Answer) {
        if let Some(tx) = self.waiters.lock().expect("waiters lock").remove(&token) {
            let _ = tx.send(answer);
        }
    }

    fn with_route(&self, exec_id: u32, f: impl FnOnce(&mut Route)) {
        if let Some(route) = self
            .routes
            .lock()
            .expect("routes lock")
            .as_mut()
            .and_then(|r| r.get_mut(&exec_id))
        {
            f(route);
        }
    }
}

impl AgentClient {
    /// Connects to `socket` and waits for the agent's hello, until `deadline` or until the VM
    /// ends (`vm_exit` turns `Some`), whichever comes first.
    pub async fn connect(
        socket: &Path,
        deadline: Instant,
        vm_exit: watch::Receiver<Option<VmExit>>,
    ) -> Result<(AgentClient, GuestHello), ConnectError> {
        Self::connect_with(socket, deadline, vm_exit, Deadlines::default()).await
    }

    /// [`AgentClient::connect`] with the given deadlines for the channel's life.
    pub async fn connect_with(
        socket: &Path,
        deadline: Instant,
        mut vm_exit: watch::Receiver<Option<VmExit>>,
        deadlines: Deadlines,
    ) -> Result<(AgentClient, GuestHello), ConnectError> {
        let handshake = async {
            // QEMU creates the socket shortly after it starts.
            let stream = loop {
                match UnixStream::connect(socket).await {
                    Ok(s) => break s,
                    Err(_) => tokio::time::sleep(Duration::from_millis(2)).await,
                }
            };
            let (mut reader, mut writer) = stream.into_split();
            let hello = match nonblocking::read_message_max::<GuestMessage, _>(
                &mut reader,
                MAX_GUEST_FRAME_LEN,
            )
            .await
            {
                Ok(Some(GuestMessage::Hello {
                    version,
                    kernel_release,
                    uptime_ms,
                })) => {
                    if version != PROTOCOL_VERSION {
                        return Err(ConnectError::Protocol(format!(
                            "the guest agent speaks protocol {version}, this engine speaks {PROTOCOL_VERSION}: the guest files do not match the engine; reinstall boxlite-core"
                        )));
                    }
                    GuestHello {
                        kernel_release: clip(kernel_release),
                        uptime_ms,
                    }
                }
                Ok(Some(other)) => {
                    return Err(ConnectError::Protocol(clip(format!(
                        "expected a hello, got {other:?}"
                    ))))
                }
                Ok(None) => {
                    return Err(ConnectError::Protocol(
                        "the agent closed the channel before its hello".into(),
                    ))
                }
                Err(e) => return Err(ConnectError::Protocol(e.to_string())),
            };
            nonblocking::write_message(
                &mut writer,
                &HostMessage::Hello {
                    version: PROTOCOL_VERSION,
                    unix_time_ns: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as u64),
                },
            )
            .await
            .map_err(|e| ConnectError::Protocol(e.to_string()))?;
            Ok((reader, writer, hello))
        };
        let vm_ended = async {
            loop {
                if let Some(exit) = vm_exit.borrow_and_update().clone() {
                    return exit;
                }
                if vm_exit.changed().await.is_err() {
                    return VmExit {
                        code: None,
                        signal: None,
                    };
                }
            }
        };
        let (reader, writer, hello) = tokio::select! {
            r = tokio::time::timeout_at(deadline, handshake) => r.map_err(|_| ConnectError::TimedOut)??,
            exit = vm_ended => return Err(ConnectError::VmExited(exit)),
        };

        let (closed, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            writer: tokio::sync::Mutex::new(writer),
            routes: Mutex::new(Some(HashMap::new())),
            waiters: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            errors_logged: AtomicU64::new(0),
            closed,
            on_broken: OnceLock::new(),
            deadlines,
        });
        tokio::spawn(read_loop(reader, shared.clone()));
        tokio::spawn(heartbeat(Arc::downgrade(&shared)));
        let client = AgentClient {
            shared,
            next_exec_id: AtomicU32::new(1),
        };
        Ok((client, hello))
    }

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

    /// Asks the agent to flush and power off; the VM then exits by itself.
    pub async fn shutdown(&self) -> Result<(), AgentError> {
        self.send(&HostMessage::Shutdown).await
    }
}

async fn read_loop(mut reader: OwnedReadHalf, shared: Arc<Shared>) {
    let error = loop {
        let msg = match nonblocking::read_message_max::<GuestMessage, _>(
            &mut reader,
            MAX_GUEST_FRAME_LEN,
        )
        .await
        {
            Ok(Some(msg)) => msg,
            Ok(None) => break AgentError::GuestClosed,
            Err(ProtocolError::Io(e)) => break AgentError::ReadFailed(Arc::new(e)),
            Err(e) => break AgentError::Protocol(Arc::new(e)),
        };
        if let Err(violation) = shared.route(msg) {
            break violation;
        }
    };
    shared.close(error);
}

/// Probes the agent while executions are open (see [`Deadlines::heartbeat`]).
async fn heartbeat(shared: Weak<Shared>) {
    loop {
        let Some(interval) = shared.upgrade().map(|s| s.deadlines.heartbeat) else {
            return;
        };
        tokio::time::sleep(interval).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.closed().is_some() {
            return;
        }
        let busy = shared
            .routes
            .lock()
            .expect("routes lock")
            .as_ref()
            .is_some_and(|r| !r.is_empty());
        if busy
            && shared
                .request("liveness probe", |token| HostMessage::Ping { token })
                .await
                .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    //! The client against a fake agent on a real unix socket (no VM): a guest that breaks the
    //! protocol or stops answering gets the channel declared broken.

    use super::*;
    use crate::testing::{connect, started};

    /// Events until the channel ends the execution; panics after 10 s.
    async fn drain(events: &mut mpsc::UnboundedReceiver<ExecEvent>) -> (u64, Option<String>) {
        let mut bytes = 0;
        loop {
            let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
                .await
                .expect("the execution did not end");
            match event {
                Some(ExecEvent::Output { data, .. }) => bytes += data.len() as u64,
                Some(ExecEvent::Lost(error)) => return (bytes, Some(error.to_string())),
                Some(ExecEvent::Exited(_)) => return (bytes, None),
                None => return (bytes, None),
                Some(_) => {}
            }
        }
    }

    #[tokio::test]
    async fn output_beyond_the_window_breaks_the_channel() {
        let mut c = connect(Deadlines::default()).await;
        let (id, mut events) = started(&mut c).await;
        // A whole window, acknowledged, then another whole window: all within the grant.
        c.agent.output(id, OUTPUT_WINDOW).await;
        c.client.ack_output(id, OUTPUT_WINDOW).await.unwrap();
        assert!(matches!(
            c.agent.receive().await,
            HostMessage::OutputAck { bytes, .. } if bytes == OUTPUT_WINDOW
        ));
        c.agent.output(id, OUTPUT_WINDOW).await;
        assert!(c.client.closed().is_none(), "{:?}", c.client.closed());
        // One byte more than was granted.
        c.agent.output(id, 1).await;
        let (bytes, lost) = drain(&mut events).await;
        assert_eq!(
            bytes,
            2 * OUTPUT_WINDOW,
            "output beyond the window is not delivered"
        );
        let reason = lost.expect("the execution is lost");
        assert!(reason.contains("window"), "{reason}");
        let closed = c.client.closed().expect("closed");
        assert!(closed.broken);
        assert_eq!(c.broken.lock().unwrap().as_slice(), [reason]);
    }

    #[tokio::test]
    async fn stdin_acknowledged_beyond_what_was_sent_breaks_the_channel() {
        let mut c = connect(Deadlines::default()).await;
        let (id, mut events) = started(&mut c).await;
        c.client.stdin(id, vec![0; 10]).await.unwrap();
        assert!(matches!(c.agent.receive().await, HostMessage::Stdin { .. }));
        c.agent
            .send(GuestMessage::StdinAck {
                exec_id: id,
                bytes: 10,
            })
            .await;
        c.agent
            .send(GuestMessage::StdinAck {
                exec_id: id,
                bytes: 1,
            })
            .await;
        let (_, lost) = drain(&mut events).await;
        assert!(lost.expect("lost").contains("stdin"));
        assert!(c.client.closed().is_some_and(|c| c.broken));
    }

    #[tokio::test]
    async fn an_oversized_frame_breaks_the_channel_before_it_is_read() {
        let mut c = connect(Deadlines::default()).await;
        let (_, mut events) = started(&mut c).await;
        let prefix = (MAX_GUEST_FRAME_LEN as u32 + 1).to_le_bytes();
        c.agent.writer.write_all(&prefix).await.unwrap();
        let (_, lost) = drain(&mut events).await;
        assert!(lost.expect("lost").contains("limit"));
        assert_eq!(c.broken.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_guest_that_stops_reading_breaks_the_channel_at_the_write_deadline() {
        let deadlines = Deadlines {
            write: Duration::from_millis(300),
            ..Deadlines::default()
        };
        let mut c = connect(deadlines).await;
        let (id, mut events) = started(&mut c).await;
        // The fake agent reads nothing more: the socket's buffers fill, then a write stalls.
        let started = std::time::Instant::now();
        let mut failure = None;
        for _ in 0..1000 {
            if let Err(e) = c.client.stdin(id, vec![0; 64 * 1024]).await {
                failure = Some(e);
                break;
            }
        }
        let failure = failure.expect("a write failed").to_string();
        assert!(failure.contains("did not read"), "{failure}");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(drain(&mut events).await.1.is_some());
        assert_eq!(c.broken.lock().unwrap().len(), 1);
        // Later calls fail at once with the same reason.
        assert_eq!(
            c.client.kill_tree(id).await.unwrap_err().to_string(),
            failure
        );
    }

    #[tokio::test]
    async fn a_silent_guest_breaks_the_channel_while_executions_are_open() {
        let deadlines = Deadlines {
            write: Duration::from_secs(10),
            answer: Duration::from_millis(300),
            heartbeat: Duration::from_millis(100),
        };
        let mut c = connect(deadlines).await;
        // Idle (no execution open): no probe, so a silent guest is left alone.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(c.client.closed().is_none());
        let (_, mut events) = started(&mut c).await;
        // The agent answers probes for a while...
        for _ in 0..3 {
            let probe = tokio::time::timeout(Duration::from_secs(10), c.agent.receive());
            match probe.await.expect("no liveness probe within 10 s") {
                HostMessage::Ping { token } => c.agent.send(GuestMessage::Pong { token }).await,
                other => panic!("expected a ping, got {other:?}"),
            }
        }
        assert!(c.client.closed().is_none());
        // ...then goes silent.
        let (_, lost) = drain(&mut events).await;
        let reason = lost.expect("lost");
        assert!(
            reason.contains("did not answer a liveness probe"),
            "{reason}"
        );
        assert_eq!(c.broken.lock().unwrap().as_slice(), [reason]);
    }

    #[tokio::test]
    async fn a_metrics_request_nobody_answers_breaks_the_channel() {
        let deadlines = Deadlines {
            answer: Duration::from_millis(200),
            ..Deadlines::default()
        };
        let c = connect(deadlines).await;
        let err = c.client.metrics().await.unwrap_err().to_string();
        assert!(err.contains("metrics request"), "{err}");
        assert!(c.client.closed().is_some_and(|c| c.broken));
    }

    #[test]
    fn error_messages_read_as_before_and_say_whether_the_guest_broke_the_channel() {
        let ten = Duration::from_secs(10);
        let cases = [
            (
                AgentError::WriteTimedOut { after: ten },
                "the guest did not read its channel for 10 s (is its VM paused or its agent stopped?)".to_owned(),
                true,
            ),
            (
                AgentError::AnswerTimedOut { request: "liveness probe", after: ten },
                "the guest agent did not answer a liveness probe within 10 s (is its VM paused or its agent stopped?)".to_owned(),
                true,
            ),
            (
                AgentError::KillNotConfirmed { after: ten },
                "the guest agent did not confirm a kill within 10 s".to_owned(),
                true,
            ),
            (
                AgentError::OutputBeyondWindow { exec_id: 3, ahead: 5 },
                format!("the guest sent 5 bytes of output of execution 3 ahead of the host's acknowledgements, more than the {OUTPUT_WINDOW}-byte window it was granted"),
                true,
            ),
            (
                AgentError::StdinOverAcknowledged { exec_id: 3, acked: 11, sent: 10 },
                "the guest acknowledged 11 bytes of stdin of execution 3, but only 10 were sent".to_owned(),
                true,
            ),
            (
                AgentError::WrongAnswer { request: "metrics request", answer: "pong" },
                "the guest agent answered a metrics request with a pong".to_owned(),
                false,
            ),
            (AgentError::GuestClosed, "the guest closed the channel".to_owned(), false),
            (AgentError::Closed, "the channel closed".to_owned(), false),
        ];
        for (error, message, broken) in cases {
            assert_eq!(error.to_string(), message);
            assert_eq!(error.breaks_channel(), broken, "{message}");
        }
    }

    #[test]
    fn guest_text_is_clipped() {
        assert_eq!(clip("short".into()), "short");
        let long = clip("é".repeat(MAX_GUEST_TEXT));
        assert!(long.len() <= MAX_GUEST_TEXT + 3 && long.ends_with("..."));
    }
}

#[cfg(test)]
mod handshake_tests {
    //! The version handshake against a fake agent: a mismatch is refused, the host's hello
    //! carries its version and clock.

    use super::*;

    /// A fake agent on a unix socket: sends `hello`, then returns what the host answered.
    async fn handshake_with(
        hello: GuestMessage,
    ) -> (
        Result<(AgentClient, GuestHello), ConnectError>,
        Option<HostMessage>,
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("agent.sock");
        let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
        let guest = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let (mut reader, mut writer) = stream.into_split();
            nonblocking::write_message(&mut writer, &hello)
                .await
                .expect("send hello");
            nonblocking::read_message::<HostMessage, _>(&mut reader)
                .await
                .ok()
                .flatten()
        });
        let (_vm_tx, vm_exit) = watch::channel(None);
        let deadline = Instant::now() + Duration::from_secs(10);
        let connected = AgentClient::connect(&socket, deadline, vm_exit).await;
        // The host writes its hello before `connect` returns.
        let answer = if connected.is_ok() {
            guest.await.expect("fake agent")
        } else {
            guest.abort();
            None
        };
        (connected, answer)
    }

    #[tokio::test]
    async fn a_guest_speaking_another_protocol_version_is_refused() {
        let (connected, _) = handshake_with(GuestMessage::Hello {
            version: PROTOCOL_VERSION + 1,
            kernel_release: "6.12".into(),
            uptime_ms: 1,
        })
        .await;
        match connected {
            Err(ConnectError::Protocol(message)) => {
                assert!(
                    message.contains(&format!("protocol {}", PROTOCOL_VERSION + 1))
                        && message.contains("reinstall"),
                    "{message}"
                );
            }
            Err(other) => panic!("refused for another reason: {other:?}"),
            Ok(_) => panic!("a mismatched protocol version was accepted"),
        }
    }

    #[tokio::test]
    async fn the_host_answers_a_matching_hello_with_its_version_and_clock() {
        let (connected, answer) = handshake_with(GuestMessage::Hello {
            version: PROTOCOL_VERSION,
            kernel_release: "6.12".into(),
            uptime_ms: 1,
        })
        .await;
        let (_, hello) = connected.unwrap_or_else(|e| panic!("handshake failed: {e:?}"));
        assert_eq!(hello.kernel_release, "6.12");
        let Some(HostMessage::Hello {
            version,
            unix_time_ns,
        }) = answer
        else {
            panic!("the host did not answer with a hello: {answer:?}");
        };
        assert_eq!(version, PROTOCOL_VERSION);
        // The guest sets its clock from this: it must be the host's wall clock, now.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos() as u64;
        assert!(
            now.abs_diff(unix_time_ns) < 60_000_000_000,
            "host hello time {unix_time_ns} is not now ({now})"
        );
    }
}
