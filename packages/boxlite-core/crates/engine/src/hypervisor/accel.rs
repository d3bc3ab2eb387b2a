//! Choosing the accelerator: `BOXLITE_ACCEL` if set, else a real probe boot, cached per host.
//!
//! A probe must boot, not just open `/dev/kvm`: on nested paravirtualised hosts `/dev/kvm`
//! opens and `KVM_CREATE_VM` succeeds, yet no stock guest kernel boots.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Accel, Hypervisor, VmExit, VmSpec};
use crate::agent::{AgentClient, ConnectError};
use crate::assets::GuestAssets;
use crate::boot;
use crate::error::{Error, Result};

/// The accelerator boxes run on, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccelChoice {
    pub accel: Accel,
    pub reason: String,
}

#[derive(Serialize, Deserialize)]
struct CachedVerdict {
    key: String,
    choice: AccelChoice,
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

fn host_kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Says once per process that boxes are emulated: a warning when the probe chose TCG (the user
/// may fix KVM), information only when the user asked for it with `BOXLITE_ACCEL`.
fn warn_once(choice: &AccelChoice, forced: bool) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if choice.accel != Accel::Tcg || WARNED.swap(true, Ordering::Relaxed) {
        return;
    }
    if forced {
        tracing::info!("boxes run under TCG emulation: {}", choice.reason);
    } else {
        tracing::warn!(
            "boxes run under TCG emulation (much slower than hardware virtualisation): {}. \
             Set BOXLITE_ACCEL=tcg to skip the hardware check.",
            choice.reason
        );
    }
}

/// Picks the accelerator for this host. `scratch` is a private directory for the probe VM's
/// files; `cache` the verdict file.
pub async fn choose(
    hypervisor: &dyn Hypervisor,
    assets: &GuestAssets,
    scratch: &Path,
    cache: &Path,
) -> Result<AccelChoice> {
    if let Ok(forced) = std::env::var("BOXLITE_ACCEL") {
        let accel = Accel::parse(&forced).ok_or_else(|| {
            Error::InvalidOption(format!(
                "BOXLITE_ACCEL={forced:?}: use kvm, hvf, whpx or tcg"
            ))
        })?;
        let choice = AccelChoice {
            accel,
            reason: "forced by BOXLITE_ACCEL".into(),
        };
        warn_once(&choice, true);
        return Ok(choice);
    }
    let key = format!(
        "{}|{}|{}",
        host_kernel_release(),
        hypervisor.name(),
        assets.fingerprint()
    );
    if let Ok(cached) = std::fs::read(cache)
        .map_err(|_| ())
        .and_then(|b| serde_json::from_slice::<CachedVerdict>(&b).map_err(|_| ()))
    {
        if cached.key == key {
            warn_once(&cached.choice, false);
            return Ok(cached.choice);
        }
    }
    let choice = probe(hypervisor, assets, scratch).await;
    let _ = std::fs::write(
        cache,
        serde_json::to_vec_pretty(&CachedVerdict {
            key,
            choice: choice.clone(),
        })
        .unwrap_or_default(),
    );
    warn_once(&choice, false);
    Ok(choice)
}

/// The hardware accelerator this platform would use.
fn hardware_accel() -> Option<Accel> {
    if cfg!(target_os = "linux") {
        Some(Accel::Kvm)
    } else if cfg!(target_os = "macos") {
        Some(Accel::Hvf)
    } else if cfg!(target_os = "windows") {
        Some(Accel::Whpx)
    } else {
        None
    }
}

async fn probe(hypervisor: &dyn Hypervisor, assets: &GuestAssets, scratch: &Path) -> AccelChoice {
    let tcg = |reason: String| AccelChoice {
        accel: Accel::Tcg,
        reason,
    };
    let Some(accel) = hardware_accel() else {
        return tcg("no hardware accelerator on this platform".into());
    };
    if accel == Accel::Kvm {
        if let Err(e) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
        {
            return tcg(format!(
                "/dev/kvm cannot be opened ({e}); enable virtualisation and add your user to the `kvm` group"
            ));
        }
    }
    match boot_agent_only(hypervisor, assets, scratch, accel).await {
        Ok(took) => AccelChoice {
            accel,
            reason: format!("a test guest booted on {accel} in {} ms", took.as_millis()),
        },
        Err(why) => tcg(format!(
            "{accel} is present but a test guest did not boot on it ({why})"
        )),
    }
}

/// Why a bare boot (the accelerator probe, the benchmark's baseline) failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The VMM could not be started.
    #[error("{0}")]
    Launch(#[source] Error),
    #[error("the VM ended with {0}")]
    VmExited(VmExit),
    #[error("no answer within {} s", .0.as_secs())]
    TimedOut(Duration),
    /// The agent's hello was missing or wrong (the agent client's words).
    #[error("{0}")]
    Protocol(String),
    /// The failure, with the first line the VMM logged (e.g. KVM_EXIT_INTERNAL_ERROR).
    #[error("{error}; QEMU: {vmm_log}")]
    VmmSaid {
        #[source]
        error: Box<ProbeError>,
        vmm_log: String,
    },
}

/// Boots the kernel and initramfs alone (no root disk) until the agent's hello, then shuts the
/// VM down. Returns the time from launch to the hello: the bare boot the benchmarks compare
/// box start-up against, and the accelerator probe.
pub async fn boot_agent_only(
    hypervisor: &dyn Hypervisor,
    assets: &GuestAssets,
    scratch: &Path,
    accel: Accel,
) -> Result<Duration, ProbeError> {
    let _ = std::fs::create_dir_all(scratch);
    let file = |name: &str| -> PathBuf { scratch.join(name) };
    let socket = file("probe.sock");
    let _ = std::fs::remove_file(&socket);
    let spec = VmSpec {
        name: "accel-probe".into(),
        accel,
        kernel: assets.kernel.clone(),
        initrd: assets.initrd.clone(),
        cmdline: boot::kernel_cmdline(accel, "probe", None),
        cpus: 1,
        memory_mib: 256,
        root_disk: None,
        agent_socket: socket.clone(),
        qmp_socket: None,
        console_log: file("probe-console.log"),
        vmm_log: file("probe-vmm.log"),
        confinement: Default::default(),
        network_fd: None,
        shares: Vec::new(),
        incoming: false,
        guest_memory: Default::default(),
    };
    let launched = tokio::time::Instant::now();
    let vm = hypervisor.launch(&spec).map_err(ProbeError::Launch)?;
    let deadline = launched + PROBE_TIMEOUT;
    let result = match AgentClient::connect(&socket, deadline, vm.exit_watch()).await {
        Ok((agent, _hello)) => {
            let elapsed = launched.elapsed();
            let _ = agent.shutdown().await;
            Ok(elapsed)
        }
        Err(ConnectError::VmExited(exit)) => Err(ProbeError::VmExited(exit)),
        Err(ConnectError::TimedOut) => Err(ProbeError::TimedOut(PROBE_TIMEOUT)),
        Err(ConnectError::Protocol(p) | ConnectError::StateNotLoaded(p)) => {
            Err(ProbeError::Protocol(p))
        }
    };
    let mut exit = vm.exit_watch();
    if tokio::time::timeout(Duration::from_secs(5), exit.wait_for(|e| e.is_some()))
        .await
        .is_err()
    {
        vm.kill();
        let _ = exit.wait_for(|e| e.is_some()).await;
    }
    // What the VMM said is the most useful part of a failure (e.g. KVM_EXIT_INTERNAL_ERROR).
    let result = result.map_err(|why| {
        let log = std::fs::read_to_string(&spec.vmm_log).unwrap_or_default();
        match log.lines().map(str::trim).find(|l| !l.is_empty()) {
            Some(first) => ProbeError::VmmSaid {
                error: Box::new(why),
                vmm_log: first.to_owned(),
            },
            None => why,
        }
    });
    let _ = std::fs::remove_dir_all(scratch);
    result
}
