//! Pausing and resuming a box: its VMM's vCPUs stopped and started again over the VMM's
//! control channel (QMP `stop` and `cont`, see [`crate::hypervisor::qmp`]).
//!
//! While a box is paused, its guest runs nothing: executions freeze where they are, and the
//! agent neither reads nor answers. The channel knows (`AgentClient::set_paused`): its
//! liveness probe waits, and its deadlines (a write, an answer, a kill's confirmation) start
//! again once the box runs, so a paused box is never declared broken for its silence. An
//! execution's own timeout is host time and keeps counting: one that runs out while the box is
//! paused fires then, and the execution is killed (and reported timed out) as soon as the box
//! runs again. New executions, copies and file operations on a paused box fail at once with
//! an error that names `resume()`; `stop()` resumes the box first so its guest powers off
//! cleanly.

use std::sync::Arc;

use super::{BoxStatus, LiteBox, Running};
use crate::error::{Error, Result};

impl LiteBox {
    /// Stops the box's vCPUs (QMP `stop`). Pausing a paused box does nothing; a box that is
    /// not running is refused.
    pub async fn pause(&self) -> Result<()> {
        let _lifecycle = self.lifecycle.lock().await;
        let running = match self.running_or_paused("pause")? {
            (_, BoxStatus::Paused) => return Ok(()),
            (running, _) => running,
        };
        // Before the vCPUs stop: from now on, silence is not a failure.
        running.agent.set_paused(true);
        if let Err(e) = self.control(&running, "stop").await {
            running.agent.set_paused(false);
            return Err(e);
        }
        self.set_status_if_current(&running, BoxStatus::Paused);
        tracing::info!(id = %self.id, "box paused");
        Ok(())
    }

    /// Starts the box's vCPUs again (QMP `cont`). Resuming a running box does nothing; a box
    /// that is neither running nor paused is refused.
    pub async fn resume(&self) -> Result<()> {
        let _lifecycle = self.lifecycle.lock().await;
        let running = match self.running_or_paused("resume")? {
            (_, BoxStatus::Running) => return Ok(()),
            (running, _) => running,
        };
        self.control(&running, "cont").await?;
        running.agent.set_paused(false);
        // The guest's clock stood still while paused.
        if let Err(e) = running.agent.set_clock_now().await {
            tracing::warn!(id = %self.id, error = %e, "the resumed guest's clock was not set");
        }
        self.set_status_if_current(&running, BoxStatus::Running);
        tracing::info!(id = %self.id, "box resumed");
        Ok(())
    }

    /// The box's VM and whether it is running or paused; any other state is an error naming
    /// `action`.
    pub(super) fn running_or_paused(&self, action: &str) -> Result<(Arc<Running>, BoxStatus)> {
        let state = self.state.lock().expect("state lock");
        match (&state.running, state.status) {
            (Some(r), status @ (BoxStatus::Running | BoxStatus::Paused)) => Ok((r.clone(), status)),
            (_, BoxStatus::Crashed) => Err(Error::BoxDied {
                id: self.id.clone(),
                reason: state
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "the VM ended".into()),
            }),
            (_, status) => Err(Error::BoxNotRunning {
                id: self.id.clone(),
                state: status.as_str().into(),
                action: action.into(),
            }),
        }
    }

    fn set_status_if_current(&self, running: &Arc<Running>, status: BoxStatus) {
        {
            let mut state = self.state.lock().expect("state lock");
            if !state
                .running
                .as_ref()
                .is_some_and(|r| Arc::ptr_eq(r, running))
            {
                return;
            }
            state.status = status;
        }
        if let Err(e) = self.write_config() {
            tracing::warn!(id = %self.id, error = %e, "could not record the box's state");
        }
    }

    /// Runs the QMP `command` (`stop` or `cont`) on `running`'s VMM, connecting its control
    /// channel on first use. A failed channel is dropped (the next call connects again).
    pub(super) async fn control(&self, running: &Running, command: &str) -> Result<()> {
        let error = |reason: String| Error::Vmm {
            id: self.id.clone(),
            reason,
        };
        if running.qmp_socket.is_none() {
            return Err(error(format!(
                "its VMM has no control channel: {command} is not possible"
            )));
        }
        let result = running
            .on_qmp(async |qmp| qmp.execute(command, None).await)
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                if let Some(exit) = running.vm.exit_watch().borrow().clone() {
                    return Err(error(format!("its VM has ended ({exit})")));
                }
                Err(error(format!("`{command}` failed: {e}")))
            }
        }
    }
}
