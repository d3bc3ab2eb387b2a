//! Hypervisor backends behind one trait. `qemu` runs each box as a `qemu-system-*` child
//! process; an in-process `krun` backend can implement the same trait later.

pub mod accel;
pub mod qemu;
pub mod qmp;

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::Result;

/// CPU virtualisation used for a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Hvf,
    Whpx,
    /// Pure emulation: always works, much slower.
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Hvf => "hvf",
            Accel::Whpx => "whpx",
            Accel::Tcg => "tcg",
        }
    }

    pub fn parse(s: &str) -> Option<Accel> {
        match s.trim().to_ascii_lowercase().as_str() {
            "kvm" => Some(Accel::Kvm),
            "hvf" => Some(Accel::Hvf),
            "whpx" => Some(Accel::Whpx),
            "tcg" => Some(Accel::Tcg),
            _ => None,
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything a backend needs to start one VM.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub name: String,
    pub accel: Accel,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
    pub cpus: u32,
    pub memory_mib: u32,
    /// The box's root disk (qcow2); `None` boots the agent alone (accelerator probe).
    pub root_disk: Option<PathBuf>,
    /// Unix socket the backend serves the agent's port on; the engine connects to it.
    pub agent_socket: PathBuf,
    /// Unix socket the backend serves its control channel (QMP) on, if any: pause and resume.
    pub qmp_socket: Option<PathBuf>,
    /// Where the guest's serial console is written (a [`crate::logs::RotatingLog`]).
    pub console_log: PathBuf,
    /// Where the VMM's own diagnostics go (a [`crate::logs::RotatingLog`]).
    pub vmm_log: PathBuf,
    /// How the VMM process itself is confined.
    pub confinement: Confinement,
    /// A connected stream socket to a user-mode network backend (passt), if the VM has a
    /// network device.
    pub network_fd: Option<std::os::fd::RawFd>,
    /// Host directories shared with the guest: (mount tag, host path, read-only).
    pub shares: Vec<(String, PathBuf, bool)>,
    /// Start with the vCPUs stopped, waiting for a saved state (`-incoming defer`), which
    /// the engine then loads over the control channel (a snapshot's restore).
    pub incoming: bool,
    /// Where the guest's RAM lives.
    pub guest_memory: GuestMemory,
}

/// Where a VM's guest RAM lives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum GuestMemory {
    /// The VMM's own anonymous memory (a boot, or the restore of a whole saved state).
    #[default]
    Anonymous,
    /// A file the VMM maps shared, so that the guest's memory is written into it: how a
    /// snapshot's memory file is made from its saved state (that guest never runs).
    WrittenToFile(PathBuf),
    /// A file the VMM opens read-only and maps private: pages are read from it and copied
    /// only when the guest writes them, so VMs restored from one snapshot share every page
    /// none of them wrote (VM templating, as in Kata Containers).
    CopyOnWrite(PathBuf),
}

/// Confinement of the VMM process (from `SecurityOptions`).
#[derive(Debug, Clone, Default)]
pub struct Confinement {
    /// The hypervisor's own system-call filter.
    pub seccomp: bool,
    /// An empty directory to chroot into once the VM's files are open (root only).
    pub chroot: Option<PathBuf>,
    /// Drop to this uid:gid once the VM's files are open (root only).
    pub run_as: Option<(u32, u32)>,
    /// Close every inherited descriptor but the standard streams.
    pub close_fds: bool,
}

/// How a VM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmExit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl fmt::Display for VmExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit code {c}"),
            (_, Some(s)) => write!(f, "signal {s}"),
            _ => f.write_str("unknown status"),
        }
    }
}

/// A started VM.
pub trait VmHandle: Send + Sync {
    /// Host process id of the VMM, where there is one.
    fn pid(&self) -> Option<u32>;
    /// Stops the VM at once (no guest shutdown).
    fn kill(&self);
    /// Becomes `Some` when the VM has ended.
    fn exit_watch(&self) -> watch::Receiver<Option<VmExit>>;
}

pub trait Hypervisor: Send + Sync {
    fn name(&self) -> &'static str;
    /// Checks that the backend can run at all (its binaries exist), with a fix in the error.
    fn check_available(&self) -> Result<()>;
    fn launch(&self, spec: &VmSpec) -> Result<Box<dyn VmHandle>>;
    /// The backend's version, recorded in snapshots (a saved state restores only into the
    /// same VMM version).
    fn version(&self) -> Result<String> {
        Ok(format!("{} (unversioned)", self.name()))
    }
}
