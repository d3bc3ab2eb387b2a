//! Runtime and box options as the bindings hand them over (JSON from Python), validated here:
//! the engine is the one place that decides what is in range.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RuntimeOptions {
    /// `BOXLITE_HOME`, else `~/.boxlite`.
    pub home_dir: Option<PathBuf>,
    /// Directory holding `vmlinux` and `initramfs.cpio` (the Python package passes its own).
    pub guest_dir: Option<PathBuf>,
    /// Registry mirrors and per-registry credentials (mirrors from `BOXLITE_REGISTRY_MIRRORS`
    /// are tried after these).
    #[serde(flatten)]
    pub registry: crate::image::registry::RegistryOptions,
    /// What preparing one image may write (`image_max_bytes`, `image_max_entries`).
    #[serde(flatten)]
    pub image_limits: crate::image::ImageLimits,
}

/// Smallest `image_max_bytes` and `image_max_entries` accepted.
pub const IMAGE_LIMITS_MIN: (u64, u64) = (1 << 20, 16);

impl RuntimeOptions {
    /// The image limits, checked.
    pub fn image_limits(&self) -> Result<crate::image::ImageLimits> {
        let limits = self.image_limits;
        let (min_bytes, min_entries) = IMAGE_LIMITS_MIN;
        if limits.image_max_bytes < min_bytes {
            return Err(Error::InvalidOption(format!(
                "image_max_bytes={} is too small: use at least {min_bytes} (1 MiB)",
                limits.image_max_bytes
            )));
        }
        if limits.image_max_entries < min_entries {
            return Err(Error::InvalidOption(format!(
                "image_max_entries={} is too small: use at least {min_entries}",
                limits.image_max_entries
            )));
        }
        Ok(limits)
    }

    /// The registry options with the mirrors of `BOXLITE_REGISTRY_MIRRORS` added.
    pub fn registry_with_env(&self) -> Result<crate::image::registry::RegistryOptions> {
        use crate::image::registry::{parse_mirrors_env, MIRRORS_ENV};
        let mut registry = self.registry.clone();
        if let Ok(value) = std::env::var(MIRRORS_ENV) {
            let from_env =
                parse_mirrors_env(&value).map_err(|e| Error::InvalidOption(e.to_string()))?;
            for (name, urls) in from_env {
                let list = registry.registry_mirrors.entry(name).or_default();
                for url in urls {
                    if !list.contains(&url) {
                        list.push(url);
                    }
                }
            }
        }
        for r in &registry.image_registries {
            if r.host.is_empty() || r.host.contains('/') {
                return Err(Error::InvalidOption(format!(
                    "image_registries: host {:?} must be a host name with an optional port, e.g. ghcr.io or 127.0.0.1:5000",
                    r.host
                )));
            }
        }
        Ok(registry)
    }
}

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
}

/// `(host_path, guest_path, mode)`: a host directory shared into the box at `guest_path`;
/// mode `ro` is read-only for the box (enforced by QEMU as well as by the guest's mount).
/// What the box sets (owners, modes, device nodes, symlinks) is kept in extended attributes,
/// so files the box creates are plain files owned by the user running the box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub host_path: PathBuf,
    pub guest_path: String,
    /// `ro` or `rw`.
    pub mode: String,
}

/// Whether `dir`'s file system stores `user.*` extended attributes: QEMU's `mapped-xattr` 9p
/// model keeps the guest's owners, modes, device nodes and symlinks there.
fn stores_user_xattrs(dir: &std::path::Path) -> bool {
    match xattr::get(dir, "user.boxlite.probe") {
        Err(e) => e.raw_os_error() != Some(libc::EOPNOTSUPP),
        // Set or not: the file system keeps them.
        Ok(_) => true,
    }
}

/// Most volumes one box may have (one virtio device each).
pub const MAX_VOLUMES: usize = 8;

/// The box's network as upstream's `NetworkSpec` describes it: `mode` `enabled` (default) or
/// `disabled` (no network device, as `network_enabled=False`), and `allow_net`, the host
/// names, `*.domain` wildcards, addresses and CIDR networks the box may reach (empty: any
/// destination but the host's own addresses and link-local ones, which are never reachable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkSpec {
    pub mode: String,
    pub allow_net: Vec<String>,
}

impl Default for NetworkSpec {
    fn default() -> Self {
        NetworkSpec {
            mode: "enabled".into(),
            allow_net: Vec::new(),
        }
    }
}

/// Most `allow_net` entries.
pub const MAX_ALLOW_NET: usize = 256;

impl NetworkSpec {
    fn validate(&self) -> Result<()> {
        let invalid = |msg: String| Err(Error::InvalidOption(msg));
        if self.mode != "enabled" && self.mode != "disabled" {
            return invalid(format!(
                "network.mode={:?}: use \"enabled\" or \"disabled\"",
                self.mode
            ));
        }
        if self.allow_net.len() > MAX_ALLOW_NET {
            return invalid(format!(
                "network.allow_net: {} entries given, at most {MAX_ALLOW_NET} are supported (use CIDR networks or *.domain wildcards)",
                self.allow_net.len()
            ));
        }
        for entry in &self.allow_net {
            crate::egress::AllowRule::parse(entry).map_err(Error::InvalidOption)?;
        }
        Ok(())
    }
}

/// `(host_port, guest_port, protocol)`: connections to 127.0.0.1:host_port on the host reach
/// guest_port in the box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortForward {
    pub host_port: u16,
    pub guest_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

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

    fn validate(&self) -> Result<()> {
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
        let mut host_ports = std::collections::HashSet::new();
        for port in &self.ports {
            if port.host_port == 0 || port.guest_port == 0 {
                return invalid(format!(
                    "ports: ({}, {}, {:?}): ports are 1 to 65535",
                    port.host_port, port.guest_port, port.protocol
                ));
            }
            if port.protocol != "tcp" && port.protocol != "udp" {
                return invalid(format!(
                    "ports: protocol {:?} is not supported: use \"tcp\" or \"udp\"",
                    port.protocol
                ));
            }
            if !host_ports.insert((port.host_port, port.protocol.clone())) {
                return invalid(format!(
                    "ports: host port {}/{} is forwarded twice",
                    port.host_port, port.protocol
                ));
            }
        }
        if self.volumes.len() > MAX_VOLUMES {
            return invalid(format!(
                "volumes: {} given, at most {MAX_VOLUMES} are supported",
                self.volumes.len()
            ));
        }
        let mut guest_paths = std::collections::HashSet::new();
        for v in &self.volumes {
            if !v.host_path.is_dir() {
                return invalid(format!(
                    "volumes: {} is not a directory on the host (volumes share directories; use copy_in for files)",
                    v.host_path.display()
                ));
            }
            if !v.guest_path.starts_with('/')
                || v.guest_path == "/"
                || v.guest_path.split('/').any(|c| c == "..")
            {
                return invalid(format!(
                    "volumes: the box path {:?} must be absolute, not / and without '..'",
                    v.guest_path
                ));
            }
            if v.mode != "ro" && v.mode != "rw" {
                return invalid(format!(
                    "volumes: mode {:?} for {}: use \"ro\" or \"rw\"",
                    v.mode, v.guest_path
                ));
            }
            if v.mode == "rw" && !stores_user_xattrs(&v.host_path) {
                return invalid(format!(
                    "volumes: {} is on a file system without user extended attributes, where a \
                     read-write volume keeps the box's owners, modes and special files (never on \
                     the host's files): share a directory on ext4, xfs, btrfs or tmpfs, or mount \
                     this one \"ro\"",
                    v.host_path.display()
                ));
            }
            if !guest_paths.insert(v.guest_path.trim_end_matches('/').to_owned()) {
                return invalid(format!("volumes: {} is mounted twice", v.guest_path));
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with_image() -> BoxOptions {
        BoxOptions {
            rootfs_path: Some("/img".into()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_follow_the_reference_documentation() {
        let o = BoxOptions::default();
        assert_eq!((o.cpus, o.memory_mib, o.auto_remove), (1, 2048, true));
        with_image().validate().unwrap();
    }

    #[test]
    fn out_of_range_options_name_the_allowed_range() {
        let err = BoxOptions {
            memory_mib: 64,
            ..with_image()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("memory_mib=64") && err.contains("128 to 65536"),
            "{err}"
        );
        let err = BoxOptions {
            cpus: 0,
            ..with_image()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("cpus=0"), "{err}");
        let err = BoxOptions {
            working_dir: Some("rel".into()),
            ..with_image()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("absolute"), "{err}");
        let err = BoxOptions::default().validate().unwrap_err().to_string();
        assert!(err.contains("no image"), "{err}");
        let err = BoxOptions {
            copy_out_max_bytes: 100,
            ..with_image()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("copy_out_max_bytes=100"), "{err}");
        let err = BoxOptions {
            max_output_bytes: MAX_OUTPUT_BYTES_MAX + 1,
            ..with_image()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("max_output_bytes") && err.contains("1 GiB"),
            "{err}"
        );
    }
}
