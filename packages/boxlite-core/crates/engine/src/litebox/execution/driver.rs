//! The driver task of an execution: it routes the agent's events into the shared state and
//! enforces the timeout and the kill-confirm deadline even when nobody waits.

use std::sync::Arc;
use std::time::Duration;

use boxlite_protocol::OUTPUT_WINDOW;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::state::{push_output, stream_index, ExecShared};
use crate::agent::{AgentClient, AgentError, ExecEvent};

/// How long the agent may take to confirm a kill (`kill()` or a timeout's) before the box is
/// declared broken.
pub const KILL_CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Routes one execution's events into its shared state, and enforces its timeout and the
/// confirmation of its kill even when nobody waits for it. It never waits on the channel
/// itself (acknowledgements and kills are sent by tasks of their own), so it keeps up with the
/// guest whatever the guest does.
///
/// The timeout is the deadline in `shared.deadline`, read again whenever it changes
/// ([`Execution::set_deadline`](super::Execution::set_deadline)); once it fired, or a kill
/// was sent, only the kill-confirm deadline counts.
pub(super) async fn drive_execution(
    shared: Arc<ExecShared>,
    mut events: mpsc::UnboundedReceiver<ExecEvent>,
    agent: Arc<AgentClient>,
    exec_id: u32,
) {
    let mut deadline = shared.deadline.subscribe();
    let mut kill_deadline: Option<Instant> = None;
    // How many times the VM had been paused when the kill deadline was armed: a paused VM
    // cannot confirm a kill, so its deadline starts again once the VM runs.
    let mut kill_armed_at = 0;
    loop {
        let alarm = kill_deadline.or(*deadline.borrow_and_update());
        let event = tokio::select! {
            event = events.recv() => event.unwrap_or_else(|| {
                ExecEvent::Lost(agent.closed_error().unwrap_or(AgentError::Closed))
            }),
            _ = shared.kill_sent.notified(), if kill_deadline.is_none() => {
                kill_deadline = Some(Instant::now() + KILL_CONFIRM_TIMEOUT);
                kill_armed_at = agent.pauses();
                continue;
            }
            // Re-armed or disarmed: the alarm is computed again. (`shared` holds the sender,
            // so `changed` cannot fail while this task runs.)
            Ok(()) = deadline.changed(), if kill_deadline.is_none() => continue,
            _ = tokio::time::sleep_until(alarm.unwrap_or_else(Instant::now)), if alarm.is_some() => {
                if kill_deadline.is_some() {
                    if agent.paused_since(kill_armed_at).await {
                        kill_deadline = Some(Instant::now() + KILL_CONFIRM_TIMEOUT);
                        kill_armed_at = agent.pauses();
                        continue;
                    }
                    agent.fail(AgentError::KillNotConfirmed {
                        after: KILL_CONFIRM_TIMEOUT,
                    });
                    ExecEvent::Lost(agent.closed_error().unwrap_or(AgentError::Closed))
                } else {
                    {
                        let mut state = shared.state.lock().expect("exec state");
                        // Disarmed or re-armed since the alarm was computed: not yet. (Checked
                        // under the lock `set_deadline` holds, so that a disarm it reports as
                        // taken is never overtaken by the old deadline.)
                        if deadline.borrow().is_none_or(|at| at > Instant::now()) {
                            continue;
                        }
                        // The timeout contract: every process of the execution is dead before
                        // the result is reported; the agent reports the exit once its cgroup
                        // is empty.
                        state.timed_out = true;
                    }
                    kill_deadline = Some(Instant::now() + KILL_CONFIRM_TIMEOUT);
                    kill_armed_at = agent.pauses();
                    let agent = agent.clone();
                    // A failed send closes the channel, which ends this execution as lost.
                    tokio::spawn(async move { agent.kill_tree(exec_id).await });
                    continue;
                }
            }
        };
        let mut ack = None;
        let mut over = false;
        {
            let mut state = shared.state.lock().expect("exec state");
            match event {
                ExecEvent::Output { stream, data } => {
                    if state.abandoned {
                        ack = state.consumed(data.len() as u64);
                    } else {
                        push_output(&mut state.queues[stream_index(stream)], data);
                    }
                }
                // The agent client checked that no more is acknowledged than was sent.
                ExecEvent::StdinAck(bytes) => shared
                    .stdin_credit
                    .add_permits(bytes.min(OUTPUT_WINDOW) as usize),
                ExecEvent::Exited(status) => {
                    state.end = Some(Ok(status));
                    over = true;
                }
                ExecEvent::Lost(reason) => {
                    state.end = Some(Err(reason));
                    over = true;
                }
            }
        }
        if over {
            shared.stdin_credit.close();
        }
        shared.notify();
        if let Some(bytes) = ack {
            let agent = agent.clone();
            tokio::spawn(async move { agent.ack_output(exec_id, bytes).await });
        }
        if over {
            return;
        }
    }
}
