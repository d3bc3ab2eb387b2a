//! Starting an execution: [`ExecSpec`] and [`LiteBox::exec`], which merges the image's, the
//! box's and the call's environment and working directory and hands the started execution to
//! [`Execution::start`] (its driver task; see `execution`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use boxlite_protocol::{Builtin, ExecRequest};

use super::{Execution, LiteBox};
use crate::error::Result;

impl LiteBox {
    /// Starts `program` with `args` in the box.
    pub async fn exec(self: &Arc<Self>, spec: ExecSpec) -> Result<Execution> {
        let running = self.running("exec")?;
        let mut env = self.image.env.clone();
        for (k, v) in self.options.env.iter().chain(spec.env.iter()) {
            env.retain(|(existing, _)| existing != k);
            env.push((k.clone(), v.clone()));
        }
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.push((
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ));
        }
        // Names are resolved by the agent in the box's own /etc/passwd; the agent also sets
        // HOME from it when the environment has none.
        let user = spec
            .user
            .or_else(|| self.image.user.clone())
            .filter(|u| !u.is_empty());
        let working_dir = spec
            .working_dir
            .or_else(|| self.options.working_dir.clone())
            .or_else(|| self.image.working_dir.clone())
            .unwrap_or_else(|| "/".into());
        let timeout = spec.timeout;
        let output_limit = spec
            .max_output_bytes
            .unwrap_or(self.options.max_output_bytes)
            .min(usize::MAX as u64) as usize;
        let stdin_open = spec.stdin || spec.tty.is_some();
        let tty = spec.tty.is_some();
        let request = ExecRequest {
            exec_id: 0,
            program: spec.program,
            args: spec.args,
            env,
            working_dir,
            stdin: stdin_open,
            user,
            tty: spec.tty,
            limits: self.options.security.exec_limits(),
            builtin: spec.builtin,
        };
        let started = running
            .agent
            .exec(request)
            .await
            .map_err(|e| self.channel_error(e))?;
        self.execs_started.fetch_add(1, Ordering::Relaxed);
        Ok(Execution::start(
            self.clone(),
            running.agent.clone(),
            started,
            tty,
            stdin_open,
            output_limit,
            timeout,
        ))
    }
}

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct ExecSpec {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    /// Keep stdin open for [`Execution::write_stdin`]; otherwise the process reads `/dev/null`.
    pub stdin: bool,
    /// Kill the execution (every process it started) when it runs longer than this.
    pub timeout: Option<Duration>,
    /// Run on a pseudo-terminal of this size (rows, columns).
    pub tty: Option<(u16, u16)>,
    /// One of the agent's own operations instead of `program` (copying files).
    pub builtin: Option<Builtin>,
    /// Bytes of each stream kept in the result of `wait` (default: the box's
    /// `max_output_bytes`); the rest is read and dropped.
    pub max_output_bytes: Option<u64>,
}
