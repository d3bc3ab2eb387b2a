//! The read task: each frame from the guest is routed to its execution (or answers a
//! request), and the flow-control accounts are checked on the way: output beyond the window
//! or stdin acknowledged beyond what was sent is a protocol violation that closes the channel.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use boxlite_protocol::{
    nonblocking, ExitStatus, GuestMessage, ProtocolError, MAX_GUEST_FRAME_LEN, OUTPUT_WINDOW,
};
use tokio::net::unix::OwnedReadHalf;

use super::channel::{Answer, Shared};
use super::error::clip;
use super::{AgentError, ExecEvent};

/// Errors of the agent logged as warnings per connection; later ones go to the debug log, so
/// a guest cannot flood the host's log.
const MAX_LOGGED_ERRORS: u64 = 20;

impl Shared {
    /// Routes one message from the guest; `Err` is a protocol violation.
    pub(super) fn route(&self, msg: GuestMessage) -> Result<(), AgentError> {
        let (exec_id, event, last) = match msg {
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

    pub(super) fn answer(&self, token: u64, answer: Answer) {
        if let Some(tx) = self.waiters.lock().expect("waiters lock").remove(&token) {
            let _ = tx.send(answer);
        }
    }
}

pub(super) async fn read_loop(mut reader: OwnedReadHalf, shared: Arc<Shared>) {
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
