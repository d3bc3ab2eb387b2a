//! Connecting: the agent's socket (QEMU creates it shortly after it starts), the guest's
//! hello and its protocol version, the host's hello with its clock, and the start of the
//! connection's two tasks (the reader and the heartbeat).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use boxlite_protocol::{
    nonblocking, GuestMessage, HostMessage, ENTROPY_HALF, MAX_GUEST_FRAME_LEN, PROTOCOL_VERSION,
};
use tokio::net::UnixStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::channel::{heartbeat, Shared};
use super::error::clip;
use super::reader::read_loop;
use super::{AgentClient, Deadlines, GuestHello};
use crate::hypervisor::VmExit;

/// Why connecting to the agent failed.
#[derive(Debug)]
pub enum ConnectError {
    /// The VM ended before the agent answered.
    VmExited(VmExit),
    TimedOut,
    /// The guest spoke out of protocol (another version, no hello, a broken frame).
    Protocol(String),
    /// A restore's saved state did not load into the VMM (the caller's, before connecting).
    StateNotLoaded(String),
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
        vm_exit: watch::Receiver<Option<VmExit>>,
        deadlines: Deadlines,
    ) -> Result<(AgentClient, GuestHello), ConnectError> {
        Self::connect_inner(socket, deadline, vm_exit, deadlines, false).await
    }

    /// [`AgentClient::connect`] to a guest restored from a snapshot: the host speaks first
    /// ([`HostMessage::HelloAgain`]), since the restored agent may still be reading the
    /// connection it had when the snapshot was taken and would not notice this one.
    pub async fn connect_restored(
        socket: &Path,
        deadline: Instant,
        vm_exit: watch::Receiver<Option<VmExit>>,
    ) -> Result<(AgentClient, GuestHello), ConnectError> {
        Self::connect_inner(socket, deadline, vm_exit, Deadlines::default(), true).await
    }

    async fn connect_inner(
        socket: &Path,
        deadline: Instant,
        mut vm_exit: watch::Receiver<Option<VmExit>>,
        deadlines: Deadlines,
        hello_again: bool,
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
            if hello_again {
                nonblocking::write_message(&mut writer, &HostMessage::HelloAgain)
                    .await
                    .map_err(|e| ConnectError::Protocol(e.to_string()))?;
            }
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
                    unix_time_ns: super::unix_time_ns_now(),
                    entropy: fresh_entropy().map_err(|e| {
                        ConnectError::Protocol(format!(
                            "cannot read fresh randomness for the guest from the host's getrandom: {e}"
                        ))
                    })?,
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
            pause: watch::channel(Default::default()).0,
        });
        tokio::spawn(read_loop(reader, shared.clone()));
        tokio::spawn(heartbeat(Arc::downgrade(&shared)));
        let client = AgentClient {
            shared,
            next_exec_id: AtomicU32::new(first_exec_id()),
        };
        Ok((client, hello))
    }
}

/// [`boxlite_protocol::ENTROPY_LEN`] bytes from the host's kernel for the guest's, sent with
/// every hello: a guest restored from a snapshot (or forked) starts with the random state it
/// was saved with, the same in every copy, until it gets these.
fn fresh_entropy() -> std::io::Result<[[u8; ENTROPY_HALF]; 2]> {
    let mut halves = [[0u8; ENTROPY_HALF]; 2];
    for half in &mut halves {
        let mut filled = 0;
        while filled < half.len() {
            let rest = &mut half[filled..];
            // SAFETY: getrandom writes at most `rest.len()` bytes into `rest`.
            let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            filled += n as usize;
        }
    }
    Ok(halves)
}

/// Where a connection's execution ids start: at random in the lower half of the range. The
/// guest may still run executions a previous connection started (a box reattached, or
/// restored from a snapshot with executions running); their ids must not be reused.
fn first_exec_id() -> u32 {
    let mut bytes = [0u8; 4];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        return 1;
    }
    1 + (u32::from_ne_bytes(bytes) >> 1)
}
