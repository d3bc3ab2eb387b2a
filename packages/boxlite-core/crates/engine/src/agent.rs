//! The host end of the guest channel: connects to the VM's agent socket, checks the protocol
//! version, and multiplexes executions over the one stream.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use boxlite_protocol::{
    nonblocking, ExecRequest, ExitStatus, GuestMessage, GuestMetrics, HostMessage, OutputStream,
    PROTOCOL_VERSION,
};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};
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
    /// The channel closed before the execution ended (the VM died or the box stopped).
    Lost(String),
}

/// The guest's hello.
#[derive(Debug, Clone)]
pub struct GuestHello {
    pub kernel_release: String,
    pub uptime_ms: u64,
}

type Routes = Arc<Mutex<Option<HashMap<u32, mpsc::UnboundedSender<ExecEvent>>>>>;
type MetricsWaiters = Arc<Mutex<HashMap<u64, tokio::sync::oneshot::Sender<GuestMetrics>>>>;

pub struct AgentClient {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    /// Open executions; `None` once the channel is closed.
    routes: Routes,
    next_exec_id: AtomicU32,
    closed: watch::Receiver<Option<String>>,
    metrics_waiters: MetricsWaiters,
    next_token: std::sync::atomic::AtomicU64,
}

/// Why connecting to the agent failed.
#[derive(Debug)]
pub enum ConnectError {
    /// The VM ended before the agent answered.
    VmExited(VmExit),
    TimedOut,
    Protocol(String),
}

impl AgentClient {
    /// Connects to `socket` and waits for the agent's hello, until `deadline` or until the VM
    /// ends (`vm_exit` turns `Some`), whichever comes first.
    pub async fn connect(
        socket: &Path,
        deadline: Instant,
        mut vm_exit: watch::Receiver<Option<VmExit>>,
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
            let hello = match nonblocking::read_message::<GuestMessage, _>(&mut reader).await {
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
                        kernel_release,
                        uptime_ms,
                    }
                }
                Ok(Some(other)) => {
                    return Err(ConnectError::Protocol(format!(
                        "expected a hello, got {other:?}"
                    )))
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

        let routes: Routes = Arc::new(Mutex::new(Some(HashMap::new())));
        let (closed_tx, closed_rx) = watch::channel(None);
        let metrics_waiters = MetricsWaiters::default();
        tokio::spawn(read_loop(
            reader,
            routes.clone(),
            metrics_waiters.clone(),
            closed_tx,
        ));
        let client = AgentClient {
            writer: tokio::sync::Mutex::new(writer),
            routes,
            next_exec_id: AtomicU32::new(1),
            closed: closed_rx,
            metrics_waiters,
            next_token: std::sync::atomic::AtomicU64::new(1),
        };
        Ok((client, hello))
    }

    /// Why the channel closed, once it has.
    pub fn closed_reason(&self) -> Option<String> {
        self.closed.borrow().clone()
    }

    async fn send(&self, msg: &HostMessage) -> Result<(), String> {
        let mut writer = self.writer.lock().await;
        nonblocking::write_message(&mut *writer, msg)
            .await
            .map_err(|e| e.to_string())
    }

    /// Starts an execution; its events arrive on the returned receiver.
    pub async fn exec(
        &self,
        mut request: ExecRequest,
    ) -> Result<(u32, mpsc::UnboundedReceiver<ExecEvent>), String> {
        let exec_id = self.next_exec_id.fetch_add(1, Ordering::Relaxed);
        request.exec_id = exec_id;
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut routes = self.routes.lock().expect("routes lock");
            let Some(routes) = routes.as_mut() else {
                return Err(self
                    .closed_reason()
                    .unwrap_or_else(|| "channel closed".into()));
            };
            routes.insert(exec_id, tx);
        }
        if let Err(e) = self.send(&HostMessage::Exec(Box::new(request))).await {
            if let Some(routes) = self.routes.lock().expect("routes lock").as_mut() {
                routes.remove(&exec_id);
            }
            return Err(e);
        }
        Ok((exec_id, rx))
    }

    pub async fn signal(&self, exec_id: u32, signal: i32) -> Result<(), String> {
        self.send(&HostMessage::Signal { exec_id, signal }).await
    }

    pub async fn kill_tree(&self, exec_id: u32) -> Result<(), String> {
        self.send(&HostMessage::KillTree { exec_id }).await
    }

    pub async fn stdin(&self, exec_id: u32, data: Vec<u8>) -> Result<(), String> {
        self.send(&HostMessage::Stdin { exec_id, data }).await
    }

    pub async fn close_stdin(&self, exec_id: u32) -> Result<(), String> {
        self.send(&HostMessage::CloseStdin { exec_id }).await
    }

    /// Tells the agent the host consumed `bytes` more output of the execution.
    pub async fn ack_output(&self, exec_id: u32, bytes: u64) -> Result<(), String> {
        self.send(&HostMessage::OutputAck { exec_id, bytes }).await
    }

    pub async fn resize_tty(&self, exec_id: u32, rows: u16, cols: u16) -> Result<(), String> {
        self.send(&HostMessage::ResizeTty {
            exec_id,
            rows,
            cols,
        })
        .await
    }

    /// The guest's resource use.
    pub async fn metrics(&self) -> Result<GuestMetrics, String> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.metrics_waiters
            .lock()
            .expect("metrics lock")
            .insert(token, tx);
        let sent = self.send(&HostMessage::Metrics { token }).await;
        let answer = match sent {
            Ok(()) => tokio::time::timeout(Duration::from_secs(10), rx)
                .await
                .map_err(|_| "the guest agent did not answer a metrics request".to_owned())
                .and_then(|r| r.map_err(|_| "the channel closed".to_owned())),
            Err(e) => Err(e),
        };
        self.metrics_waiters
            .lock()
            .expect("metrics lock")
            .remove(&token);
        answer
    }

    /// Asks the agent to flush and power off; the VM then exits by itself.
    pub async fn shutdown(&self) -> Result<(), String> {
        self.send(&HostMessage::Shutdown).await
    }
}

async fn read_loop(
    mut reader: tokio::net::unix::OwnedReadHalf,
    routes: Routes,
    metrics_waiters: MetricsWaiters,
    closed: watch::Sender<Option<String>>,
) {
    let reason = loop {
        match nonblocking::read_message::<GuestMessage, _>(&mut reader).await {
            Ok(Some(msg)) => {
                let (exec_id, event, last) = match msg {
                    GuestMessage::Started { exec_id, pid } => {
                        (exec_id, ExecEvent::Started { pid }, false)
                    }
                    GuestMessage::Output {
                        exec_id,
                        stream,
                        data,
                    } => (exec_id, ExecEvent::Output { stream, data }, false),
                    GuestMessage::StdinAck { exec_id, bytes } => {
                        (exec_id, ExecEvent::StdinAck(bytes), false)
                    }
                    GuestMessage::Metrics { token, metrics } => {
                        if let Some(tx) =
                            metrics_waiters.lock().expect("metrics lock").remove(&token)
                        {
                            let _ = tx.send(metrics);
                        }
                        continue;
                    }
                    GuestMessage::Exited { exec_id, status } => {
                        (exec_id, ExecEvent::Exited(status), true)
                    }
                    GuestMessage::Error {
                        exec_id: Some(exec_id),
                        message,
                    } => (exec_id, ExecEvent::Lost(message), true),
                    GuestMessage::Error {
                        exec_id: None,
                        message,
                    } => {
                        tracing::warn!(%message, "guest agent reported an error");
                        continue;
                    }
                    GuestMessage::Hello { .. } | GuestMessage::Pong { .. } => continue,
                };
                let mut routes = routes.lock().expect("routes lock");
                if let Some(routes) = routes.as_mut() {
                    if let Some(tx) = routes.get(&exec_id) {
                        let _ = tx.send(event);
                    }
                    if last {
                        routes.remove(&exec_id);
                    }
                }
            }
            Ok(None) => break "the guest closed the channel".to_owned(),
            Err(e) => break format!("channel read failed: {e}"),
        }
    };
    let open = routes
        .lock()
        .expect("routes lock")
        .take()
        .unwrap_or_default();
    for (_, tx) in open {
        let _ = tx.send(ExecEvent::Lost(reason.clone()));
    }
    let _ = closed.send(Some(reason));
}

#[cfg(test)]
mod tests {
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
