//! Why a call on the agent's channel failed or why the channel closed ([`AgentError`]), which
//! of those errors mean the guest broke it, and the clipping of the guest's own text.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use boxlite_protocol::{ProtocolError, OUTPUT_WINDOW};

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
pub(super) const MAX_GUEST_TEXT: usize = 4096;

/// `text` cut to [`MAX_GUEST_TEXT`] bytes (at a character boundary).
pub(super) fn clip(mut text: String) -> String {
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
