//! A box's options ([`BoxOptions`]): its size, image, environment, output and copy limits,
//! with their ranges, and the validation of the whole (which checks the security, network,
//! port and volume options through their own modules).

use serde::{Deserialize, Serialize};

use super::network::validate_ports;
use super::volume::validate_volumes;
use super::{NetworkSpec, PortForward, SecurityOptions, Volume};
use crate::error::{Error, Result};

/// Smallest and largest guest memory, as the reference documentation states.
pub const MEMORY_MIB_RANGE: (u32, u32) = (128, 65536);

/// Bytes of each output stream an execution's result keeps by default (`max_output_bytes`).
pub const MAX_OUTPUT_BYTES_DEFAULT: u64 = 4 << 20;

/// Largest `max_output_bytes`: a result is held in host memory.
pub const MAX_OUTPUT_BYTES_MAX: u64 = 1 << 30;

/// Largest `disk_size_gb` (the base disk is a sparse file; ext4's metadata grows with it).
pub const DISK_SIZE_GB_MAX: u32 = 1024;

/// Default `copy_out_max_bytes`: 4 GiB, the default free space of a box's disk.
pub const COPY_OUT_MAX_BYTES_DEFAULT: u64 = 4 << 30;

/// Smallest `copy_out_max_bytes`: an archive's headers alone take 512 bytes per entry.
pub const COPY_OUT_MAX_BYTES_MIN: u64 = 64 << 10;
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct BoxOptions {
    /// Image reference, or the path of an OCI image layout.
    pub image: Option<String>,
    /// Path of an OCI image layout (optionally `path:tag`).
    pub rootfs_path: Option<String>,
    pub name: Option<String>,
    pub cpus: u32,
    pub memory_mib: u32,
    /// Working directory of executions (default: the image's, else `/`).
    pub working_dir: Option<String>,
    /// Environment of every execution, on top of the image's.
    pub env: Vec<(String, String)>,
    /// Delete the box's disk and state when it stops.
    pub auto_remove: bool,
    /// Free space of the box's root file system in GiB (default: 4 GiB); the disk is sparse,
    /// so only what the box writes takes room on the host.
    pub disk_size_gb: Option<u32>,
    pub security: SecurityOptions,
    /// Give the box a network device (also needs `security.network_enabled`).
    pub network_enabled: bool,
    /// Host ports forwarded into the box, bound to 127.0.0.1.
    pub ports: Vec<PortForward>,
    /// What the box's network may reach (`mode`, `allow_net`).
    pub network: NetworkSpec,
    /// Host directories shared into the box.
    pub volumes: Vec<Volume>,
    /// The most bytes one `copy_out` may write on the host: the box's archive, file contents
    /// plus 512 bytes of header per entry (default [`COPY_OUT_MAX_BYTES_DEFAULT`]).
    pub copy_out_max_bytes: u64,
    /// Bytes of stdout (and, separately, of stderr) an execution's result keeps; the rest is
    /// read and dropped, and the result says it was truncated.
    pub max_output_bytes: u64,
    /// Restore the box from this snapshot (name or id) instead of booting it: its memory,
    /// processes and disk as they were. The VM's shape (image, cpus, memory, network device)
    /// is the snapshot's; volumes are refused.
    pub snapshot: Option<String>,
}
impl Default for BoxOptions {
    fn default() -> Self {
        BoxOptions {
            image: None,
            rootfs_path: None,
            name: None,
            cpus: 1,
            memory_mib: 2048,
            working_dir: None,
            env: Vec::new(),
            auto_remove: true,
            disk_size_gb: None,
            security: SecurityOptions::default(),
            network_enabled: true,
            ports: Vec::new(),
            network: NetworkSpec::default(),
            volumes: Vec::new(),
            snapshot: None,
            copy_out_max_bytes: COPY_OUT_MAX_BYTES_DEFAULT,
            max_output_bytes: MAX_OUTPUT_BYTES_DEFAULT,
        }
    }
}

impl BoxOptions {
    /// Whether the box gets a network device.
    pub fn network(&self) -> bool {
        self.network_enabled && self.security.network_enabled && self.network.mode == "enabled"
    }
}

/// Checks a `max_output_bytes` (of a box or of one call).
pub fn check_max_output_bytes(bytes: u64) -> Result<u64> {
    if bytes > MAX_OUTPUT_BYTES_MAX {
        return Err(Error::InvalidOption(format!(
            "max_output_bytes={bytes} is out of range: use 0 to {MAX_OUTPUT_BYTES_MAX} (1 GiB); read larger output as a stream (execution.stdout()) or with copy_out"
        )));
    }
    Ok(bytes)
}

/// An execution timeout in seconds, which must be positive and finite.
pub fn timeout_from_secs(secs: f64) -> Result<std::time::Duration> {
    if !(secs.is_finite() && secs > 0.0) {
        return Err(Error::InvalidOption(format!(
            "timeout={secs}: use a positive number of seconds, or None for no timeout"
        )));
    }
    std::time::Duration::try_from_secs_f64(secs)
        .map_err(|e| Error::InvalidOption(format!("timeout={secs}: {e}")))
}

fn host_cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}
impl BoxOptions {
    pub fn validate(&self) -> Result<()> {
        let invalid = |msg: String| Err(Error::InvalidOption(msg));
        let max_cpus = host_cpus();
        if self.cpus < 1 || self.cpus > max_cpus {
            return invalid(format!(
                "cpus={} is out of range: use 1 to {max_cpus} (this host's CPU count)",
                self.cpus
            ));
        }
        let (lo, hi) = MEMORY_MIB_RANGE;
        if self.memory_mib < lo || self.memory_mib > hi {
            return invalid(format!(
                "memory_mib={} is out of range: use {lo} to {hi}",
                self.memory_mib
            ));
        }
        if self.image.is_none() && self.rootfs_path.is_none() {
            return invalid("no image: pass image=... (a reference or an OCI layout path) or rootfs_path=... (an OCI layout)".into());
        }
        if let Some(gb) = self.disk_size_gb {
            if !(1..=DISK_SIZE_GB_MAX).contains(&gb) {
                return invalid(format!(
                    "disk_size_gb={gb} is out of range: use 1 to {DISK_SIZE_GB_MAX}"
                ));
            }
        }
        if self.copy_out_max_bytes < COPY_OUT_MAX_BYTES_MIN {
            return invalid(format!(
                "copy_out_max_bytes={} is too small: use at least {COPY_OUT_MAX_BYTES_MIN} (64 KiB)",
                self.copy_out_max_bytes
            ));
        }
        if let Some(dir) = &self.working_dir {
            if !dir.starts_with('/') {
                return invalid(format!(
                    "working_dir={dir:?} must be an absolute path inside the box"
                ));
            }
        }
        for (key, _) in &self.env {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return invalid(format!("environment variable name {key:?} is not valid"));
            }
        }
        self.security.validate()?;
        self.network.validate()?;
        if !self.network.allow_net.is_empty() && !self.network() {
            return invalid(
                "network.allow_net needs the network: remove allow_net, or enable the network (network_enabled, security.network_enabled and network.mode)".into(),
            );
        }
        check_max_output_bytes(self.max_output_bytes)?;
        validate_ports(&self.ports)?;
        validate_volumes(&self.volumes, self.network())?;
        if !self.ports.is_empty() && !self.network() {
            return invalid(
                "ports need the network: remove ports=..., or enable the network (network_enabled and security.network_enabled)".into(),
            );
        }
        if let Some(name) = &self.name {
            let ok = !name.is_empty()
                && name.len() <= 63
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
            if !ok {
                return invalid(format!(
                    "name={name:?}: use 1 to 63 letters, digits, '-', '_' or '.'"
                ));
            }
        }
        Ok(())
    }
}
