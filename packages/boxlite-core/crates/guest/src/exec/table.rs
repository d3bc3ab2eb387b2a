//! The execution table: each running execution by its id and by its process id, with what
//! the agent holds for it (stdin, output credit, terminal, exit pipe, cgroup). The reaper
//! reaps and `spawn` registers under the table's lock (see the parent module).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;

use super::input::StdinOp;
use super::output::Credit;

pub(super) struct Entry {
    pub(super) pid: i32,
    pub(super) stdin: Option<mpsc::Sender<StdinOp>>,
    pub(super) credit: Arc<Credit>,
    /// The terminal's master side, for resizing (TTY executions only).
    pub(super) tty_master: Option<OwnedFd>,
    /// Write end of the pipe on which the reaper hands over the raw wait status.
    pub(super) exit_notify: OwnedFd,
    /// The execution's own cgroup (absent only where cgroups are unavailable).
    pub(super) cgroup: Option<PathBuf>,
    /// Set by a kill of the whole tree: the exit is reported once the cgroup is empty.
    pub(super) killed: bool,
}

#[derive(Default)]
pub(super) struct Table {
    pub(super) by_id: HashMap<u32, Entry>,
    pub(super) by_pid: HashMap<i32, u32>,
}
