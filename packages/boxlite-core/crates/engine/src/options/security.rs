//! How tightly a box is confined ([`SecurityOptions`]): the VMM's jail and seccomp filter,
//! the descriptors it inherits, and the limits of every process the box runs.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How tightly a box is confined; the presets are `development()`, `standard()` (the default)
/// and `maximum()` on the Python side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecurityOptions {
    /// Confine the VMM process: when the engine runs as root, QEMU chroots into an empty
    /// directory and drops to uid/gid 65534 once its files are open. Unprivileged, QEMU already
    /// runs as the calling user and cannot chroot; the flag then adds nothing, nor for a box with
    /// volumes (QEMU's 9p server reaches them by path).
    pub jailer_enabled: bool,
    /// QEMU's seccomp filter (`-sandbox on`: obsolete system calls, spawning processes and
    /// changing resource controls are denied; raising privileges too unless the jailer drops
    /// them).
    pub seccomp_enabled: bool,
    /// `RLIMIT_NOFILE` of every process the box runs.
    pub max_open_files: Option<u64>,
    /// `RLIMIT_FSIZE` (bytes) of every process the box runs.
    pub max_file_size: Option<u64>,
    /// Processes and threads one execution may have alive at once (its cgroup's `pids.max`).
    pub max_processes: Option<u64>,
    /// `RLIMIT_AS` (bytes of virtual memory) of every process the box runs.
    pub max_memory: Option<u64>,
    /// `RLIMIT_CPU` (seconds of CPU time) of every process the box runs.
    pub max_cpu_time: Option<u64>,
    /// Give the box a network device. False means none at all.
    pub network_enabled: bool,
    /// Start the VMM with no descriptor of the calling process except its standard streams.
    pub close_fds: bool,
}

impl Default for SecurityOptions {
    fn default() -> Self {
        SecurityOptions {
            jailer_enabled: true,
            seccomp_enabled: true,
            max_open_files: None,
            max_file_size: None,
            max_processes: None,
            max_memory: None,
            max_cpu_time: None,
            network_enabled: true,
            close_fds: true,
        }
    }
}

impl SecurityOptions {
    /// The limits of every execution, as the guest applies them.
    pub fn exec_limits(&self) -> boxlite_protocol::ExecLimits {
        boxlite_protocol::ExecLimits {
            max_open_files: self.max_open_files,
            max_file_size: self.max_file_size,
            max_processes: self.max_processes,
            max_memory: self.max_memory,
            max_cpu_time: self.max_cpu_time,
        }
    }

    pub(super) fn validate(&self) -> Result<()> {
        for (name, value, min) in [
            ("max_open_files", self.max_open_files, 16),
            ("max_file_size", self.max_file_size, 1),
            ("max_processes", self.max_processes, 1),
            ("max_memory", self.max_memory, 16 << 20),
            ("max_cpu_time", self.max_cpu_time, 1),
        ] {
            if let Some(v) = value {
                if v < min {
                    return Err(Error::InvalidOption(format!(
                        "security.{name}={v} is too small: use at least {min}, or None for no limit"
                    )));
                }
            }
        }
        Ok(())
    }
}
