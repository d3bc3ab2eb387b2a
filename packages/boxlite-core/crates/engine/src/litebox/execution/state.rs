//! What an execution's driver task and its consumers ([`Execution`](super::Execution)'s
//! readers, `wait` and drop) share: the per-stream output queues, what was consumed and not yet
//! acknowledged, how the execution ended, and the stdin credit.

use std::collections::VecDeque;
use std::sync::Mutex;

use boxlite_protocol::{ExitStatus, OutputStream, OUTPUT_CHUNK_LEN, OUTPUT_WINDOW};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use crate::agent::AgentError;

/// Consumed output is acknowledged to the agent in batches of this many bytes (well below
/// the window, so the agent never stalls while the host keeps reading).
pub(super) const ACK_BATCH: u64 = OUTPUT_WINDOW / 4;

pub(super) fn stream_index(stream: OutputStream) -> usize {
    match stream {
        OutputStream::Stdout => 0,
        OutputStream::Stderr => 1,
    }
}

/// What the execution's driver task and its consumers share.
#[derive(Default)]
pub(in crate::litebox) struct ExecState {
    /// Output received and not yet consumed, per stream (stdout, stderr).
    pub(super) queues: [VecDeque<Vec<u8>>; 2],
    /// The stream is read by `read_output`; `wait` leaves it alone.
    pub(super) streamed: [bool; 2],
    /// Output gathered by `wait`, per stream (at most the execution's output limit).
    pub(super) collected: [Vec<u8>; 2],
    /// Bytes `wait` read beyond the output limit and dropped, per stream.
    pub(super) dropped: [u64; 2],
    /// Consumed bytes not yet acknowledged to the agent.
    pub(super) unacked: u64,
    pub(super) timed_out: bool,
    /// How it ended: the exit status, or why the channel was lost.
    pub(super) end: Option<std::result::Result<ExitStatus, AgentError>>,
    /// Nobody holds the execution any more: output is acknowledged and dropped.
    pub(super) abandoned: bool,
}

impl ExecState {
    /// Records consumed bytes; returns a batch to acknowledge when one is due.
    pub(super) fn consumed(&mut self, bytes: u64) -> Option<u64> {
        self.unacked += bytes;
        if self.unacked >= ACK_BATCH && self.end.is_none() {
            return Some(std::mem::take(&mut self.unacked));
        }
        None
    }
}

/// Queues `data`, appended to the last queued chunk while that stays small, so a guest
/// sending many tiny frames costs no more host memory than a few large ones.
pub(super) fn push_output(queue: &mut VecDeque<Vec<u8>>, data: Vec<u8>) {
    match queue.back_mut() {
        Some(last) if last.len() + data.len() <= OUTPUT_CHUNK_LEN => last.extend_from_slice(&data),
        _ => queue.push_back(data),
    }
}

pub(in crate::litebox) struct ExecShared {
    pub(super) state: Mutex<ExecState>,
    pub(super) changed: watch::Sender<u64>,
    /// Bytes of stdin that may still be sent before the agent acknowledges earlier ones.
    pub(super) stdin_credit: Semaphore,
    /// When the execution's timeout fires, if it has one: set at the start, re-armed or
    /// disarmed by `set_deadline`, watched by the driver.
    pub(super) deadline: watch::Sender<Option<Instant>>,
    /// A kill was sent: its confirmation (the exit) is due within
    /// [`KILL_CONFIRM_TIMEOUT`](super::driver::KILL_CONFIRM_TIMEOUT).
    pub(super) kill_sent: tokio::sync::Notify,
}

impl ExecShared {
    pub(super) fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }
}
