//! Starting an execution: checks the request, resolves the user, sets up the cgroup, stdio,
//! output credit and exit pipe, spawns the process (or a builtin) and registers it in the
//! table under its lock, then starts the pumps.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};

use boxlite_protocol::{
    ExecLimits, ExecRequest, ExitStatus, GuestMessage, OutputStream, EXIT_CANNOT_EXECUTE,
    EXIT_COMMAND_NOT_FOUND,
};

use super::cgroup::{create_cgroup, release_cgroup};
use super::output::Credit;
use super::stdio::{pipe, ExecStdio};
use super::table::Entry;
use super::Executions;
use crate::{builtin, spawn, users, ROOTFS};

impl Executions {
    fn spawn_failed(&self, exec_id: u32, code: i32, message: String) {
        self.send(GuestMessage::Output {
            exec_id,
            stream: OutputStream::Stderr,
            data: format!("boxlite: {message}\n").into_bytes(),
        });
        self.send(GuestMessage::Exited {
            exec_id,
            status: ExitStatus::SpawnFailed { code, message },
        });
    }

    pub(super) fn spawn(&self, req: ExecRequest) {
        let exec_id = req.exec_id;
        if !self.has_rootfs {
            return self.spawn_failed(
                exec_id,
                EXIT_COMMAND_NOT_FOUND,
                "this VM has no root file system".into(),
            );
        }
        if self
            .table
            .lock()
            .expect("table lock")
            .by_id
            .contains_key(&exec_id)
        {
            return self.send(GuestMessage::Error {
                exec_id: Some(exec_id),
                message: "duplicate execution id".into(),
            });
        }
        self.started.fetch_add(1, Ordering::Relaxed);
        let working_dir = if req.working_dir.is_empty() {
            "/".to_owned()
        } else {
            req.working_dir.clone()
        };
        // Docker creates a missing working directory; so do we.
        let _ = std::fs::create_dir_all(format!("{ROOTFS}{working_dir}"));
        let to_c = |s: &str| CString::new(s).ok();
        let argv: Option<Vec<CString>> = std::iter::once(req.program.as_str())
            .chain(req.args.iter().map(String::as_str))
            .map(to_c)
            .collect();
        let identity = match req.user.as_deref().map(users::resolve).transpose() {
            Ok(identity) => identity.filter(|i| i.uid != 0 || i.gid != 0 || !i.groups.is_empty()),
            Err(message) => return self.spawn_failed(exec_id, EXIT_CANNOT_EXECUTE, message),
        };
        let mut env = req.env.clone();
        if !env.iter().any(|(k, _)| k == "HOME") {
            let home = match &identity {
                None => "/root".to_owned(),
                Some(i) => i.home.clone().unwrap_or_else(|| "/".to_owned()),
            };
            env.push(("HOME".into(), home));
        }
        let envp: Option<Vec<CString>> =
            env.iter().map(|(k, v)| to_c(&format!("{k}={v}"))).collect();
        let (Some(argv), Some(envp), Some(root), Some(cwd)) =
            (argv, envp, to_c(ROOTFS), to_c(&working_dir))
        else {
            return self.spawn_failed(
                exec_id,
                EXIT_CANNOT_EXECUTE,
                "a NUL byte in the command, environment or working directory".into(),
            );
        };
        let path_var = req
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str());
        let stdio = match ExecStdio::open(req.stdin, req.tty) {
            Ok(stdio) => stdio,
            Err(e) => {
                return self.spawn_failed(
                    exec_id,
                    EXIT_CANNOT_EXECUTE,
                    format!("cannot set up stdio: {e}"),
                )
            }
        };
        let credit = match Credit::new() {
            Ok(c) => Arc::new(c),
            Err(e) => {
                return self.spawn_failed(
                    exec_id,
                    EXIT_CANNOT_EXECUTE,
                    format!("cannot create an eventfd: {e}"),
                )
            }
        };
        let (cgroup, cgroup_procs) = create_cgroup(req.limits.max_processes).unzip();
        let request = spawn::SpawnRequest {
            cgroup_procs: cgroup_procs.as_ref().map(AsRawFd::as_raw_fd),
            candidates: spawn::candidates(&req.program, path_var),
            argv,
            envp,
            root,
            cwd,
            user: identity.as_ref().map(|i| (i.uid, i.gid)),
            groups: identity
                .as_ref()
                .map(|i| i.groups.clone())
                .unwrap_or_default(),
            stdio: stdio.child_fds(),
            tty: req.tty.is_some(),
            rlimits: rlimits(&req.limits),
        };
        let (notify_rx, notify_tx) = match pipe() {
            Ok(p) => p,
            Err(e) => {
                return self.spawn_failed(
                    exec_id,
                    EXIT_CANNOT_EXECUTE,
                    format!("cannot create a pipe: {e}"),
                )
            }
        };
        let mut table = self.table.lock().expect("table lock");
        let started = match &req.builtin {
            None => spawn::spawn(&request),
            Some(op) => {
                let op = op.clone();
                spawn::fork_run(&request, move || builtin::run(&op))
            }
        };
        let pid = match started {
            Ok(pid) => pid,
            Err(failure) => {
                drop(table);
                if let Some(dir) = cgroup {
                    release_cgroup(dir);
                }
                let program = &req.program;
                let (code, message) = match (failure.stage, failure.error.raw_os_error()) {
                    (5, Some(libc::ENOENT)) => (
                        EXIT_COMMAND_NOT_FOUND,
                        format!("{program}: command not found"),
                    ),
                    (5, _) => (
                        EXIT_CANNOT_EXECUTE,
                        format!("{program}: cannot execute: {}", failure.error),
                    ),
                    (3, _) => (
                        EXIT_CANNOT_EXECUTE,
                        format!(
                            "cannot enter working directory {working_dir}: {}",
                            failure.error
                        ),
                    ),
                    (4, _) => (
                        EXIT_CANNOT_EXECUTE,
                        format!("cannot switch to user {:?}: {}", req.user, failure.error),
                    ),
                    (7, _) => (
                        EXIT_CANNOT_EXECUTE,
                        format!("cannot set resource limits: {}", failure.error),
                    ),
                    _ => (
                        EXIT_CANNOT_EXECUTE,
                        format!("{program}: cannot start: {}", failure.error),
                    ),
                };
                return self.spawn_failed(exec_id, code, message);
            }
        };
        let ExecStdio {
            child,
            stdin_host,
            outputs,
            tty_master,
        } = stdio;
        drop(child);
        let stdin_tx = stdin_host.map(|stdin| {
            let (tx, rx) = mpsc::channel();
            let this = self.clone();
            let is_tty = tty_master.is_some();
            crate::workers::run(move || {
                this.pump_stdin(exec_id, std::fs::File::from(stdin), rx, is_tty)
            });
            tx
        });
        table.by_id.insert(
            exec_id,
            Entry {
                pid,
                stdin: stdin_tx,
                credit: credit.clone(),
                tty_master,
                exit_notify: notify_tx,
                cgroup,
                killed: false,
            },
        );
        table.by_pid.insert(pid, exec_id);
        drop(table);
        let _ = self.spawned.send(());

        let this = self.clone();
        crate::workers::run(move || this.pump_output(exec_id, outputs, notify_rx, credit));
    }
}

/// Limits as setrlimit(2) resources.
fn rlimits(limits: &ExecLimits) -> Vec<(spawn::RlimitResource, u64)> {
    [
        (libc::RLIMIT_NOFILE, limits.max_open_files),
        (libc::RLIMIT_FSIZE, limits.max_file_size),
        (libc::RLIMIT_AS, limits.max_memory),
        (libc::RLIMIT_CPU, limits.max_cpu_time),
    ]
    .into_iter()
    .filter_map(|(resource, value)| Some((resource, value?)))
    .collect()
}
