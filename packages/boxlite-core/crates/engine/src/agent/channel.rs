//! The state one connection's tasks and calls share: the writer, the open executions and
//! their flow-control accounts, the requests awaiting answers; writes and requests under
//! their deadlines, closing the channel once (and the box's hook when the guest broke it),
//! and the heartbeat that probes the agent while executions are open.
//!
//! A paused VM (see [`Shared::set_paused`]) neither reads nor answers: its deadlines are
//! pause-aware ([`Shared::within`]), and the heartbeat does not probe it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use boxlite_protocol::{encode_frame, GuestMetrics, HostMessage};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot, watch};

use super::{AgentError, Closed, Deadlines, ExecEvent};

/// One open execution: where its events go and its flow-control accounts.
pub(super) struct Route {
    pub(super) events: mpsc::UnboundedSender<ExecEvent>,
    pub(super) output_received: u64,
    pub(super) output_acked: u64,
    pub(super) stdin_sent: u64,
    pub(super) stdin_acked: u64,
}

pub(super) enum Answer {
    Pong,
    Metrics(GuestMetrics),
}

type BrokenHook = Box<dyn Fn(&str) + Send + Sync>;

/// Whether the VM is paused now, and how many times it was paused so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PauseState {
    pub(crate) paused: bool,
    pub(crate) pauses: u64,
}

pub(super) struct Shared {
    pub(super) writer: tokio::sync::Mutex<OwnedWriteHalf>,
    /// Open executions; `None` once the channel is closed.
    pub(super) routes: Mutex<Option<HashMap<u32, Route>>>,
    /// Requests awaiting their answer, by token.
    pub(super) waiters: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    pub(super) next_token: AtomicU64,
    pub(super) errors_logged: AtomicU64,
    pub(super) closed: watch::Sender<Option<Closed>>,
    pub(super) on_broken: OnceLock<BrokenHook>,
    pub(super) deadlines: Deadlines,
    pub(super) pause: watch::Sender<PauseState>,
}

impl Shared {
    /// Records that the VM's vCPUs are stopped (`true`) or run again (`false`).
    pub(super) fn set_paused(&self, paused: bool) {
        self.pause.send_if_modified(|state| {
            if state.paused == paused {
                return false;
            }
            state.paused = paused;
            if paused {
                state.pauses += 1;
            }
            true
        });
    }

    pub(super) fn pause_state(&self) -> PauseState {
        *self.pause.borrow()
    }

    /// Whether the deadline of something armed when the VM had been paused `pauses` times
    /// should not count: the VM is paused now or was paused since. Waits until it runs again
    /// (or the channel closes), so the caller can arm a whole deadline afresh.
    pub(super) async fn paused_since(&self, pauses: u64) -> bool {
        let state = self.pause_state();
        if !state.paused && state.pauses == pauses {
            return false;
        }
        let mut pause = self.pause.subscribe();
        let mut closed = self.closed.subscribe();
        tokio::select! {
            _ = pause.wait_for(|s| !s.paused) => {}
            _ = closed.wait_for(|c| c.is_some()) => {}
        }
        true
    }

    /// `work` within `limit` of the VM's running time: a deadline that runs out while the VM
    /// is paused (or was paused meanwhile) starts again, whole, once it runs. `None` when the
    /// deadline passed with the VM running throughout.
    pub(super) async fn within<T>(
        &self,
        limit: std::time::Duration,
        work: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        tokio::pin!(work);
        loop {
            let pauses = self.pause_state().pauses;
            if let Ok(done) = tokio::time::timeout(limit, &mut work).await {
                return Some(done);
            }
            tokio::select! {
                done = &mut work => return Some(done),
                paused = self.paused_since(pauses) => if !paused { return None },
            }
        }
    }

    pub(super) fn closed(&self) -> Option<Closed> {
        self.closed.borrow().clone()
    }

    /// Closes the channel once: pending executions and requests fail with `error`; an error
    /// that breaks the channel also runs the box's hook (which kills the VM).
    pub(super) fn close(&self, error: AgentError) {
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

    pub(super) fn closed_error(&self) -> AgentError {
        self.closed().map_or(AgentError::Closed, |c| c.error)
    }

    /// Closes the channel with `error` and returns it.
    pub(super) fn fail(&self, error: AgentError) -> AgentError {
        self.close(error.clone());
        error
    }

    /// Writes one frame within the write deadline.
    pub(super) async fn send(&self, msg: &HostMessage) -> Result<(), AgentError> {
        let frame = encode_frame(msg).map_err(|e| AgentError::Encode(Arc::new(e)))?;
        let mut writer = self.writer.lock().await;
        if let Some(closed) = self.closed() {
            return Err(closed.error);
        }
        let write = async {
            writer.write_all(&frame).await?;
            writer.flush().await
        };
        match self.within(self.deadlines.write, write).await {
            Some(Ok(())) => Ok(()),
            // The VM ended (its exit watcher reports that) or the socket failed.
            Some(Err(e)) => Err(self.fail(AgentError::WriteFailed(Arc::new(e)))),
            // Half a frame may be written: the stream cannot be used any more.
            None => Err(self.fail(AgentError::WriteTimedOut {
                after: self.deadlines.write,
            })),
        }
    }

    /// Sends the request `make(token)` and waits for its answer within the answer deadline.
    pub(super) async fn request(
        &self,
        what: &'static str,
        make: impl FnOnce(u64) -> HostMessage,
    ) -> Result<Answer, AgentError> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().expect("waiters lock").insert(token, tx);
        let answer = async {
            self.send(&make(token)).await?;
            match self.within(self.deadlines.answer, rx).await {
                Some(Ok(answer)) => Ok(answer),
                Some(Err(_)) => Err(self.closed_error()),
                None => Err(self.fail(AgentError::AnswerTimedOut {
                    request: what,
                    after: self.deadlines.answer,
                })),
            }
        }
        .await;
        self.waiters.lock().expect("waiters lock").remove(&token);
        answer
    }

    pub(super) fn with_route(&self, exec_id: u32, f: impl FnOnce(&mut Route)) {
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

/// Probes the agent while executions are open (see [`Deadlines::heartbeat`]), never while the
/// VM is paused.
pub(super) async fn heartbeat(shared: Weak<Shared>) {
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
            && !shared.pause_state().paused
            && shared
                .request("liveness probe", |token| HostMessage::Ping { token })
                .await
                .is_err()
        {
            return;
        }
    }
}
