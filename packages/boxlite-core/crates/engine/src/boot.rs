//! What every VM boots with: the kernel command line and the timeouts.

use std::time::Duration;

use crate::hypervisor::Accel;
use crate::tsc;

/// How long a boot may take before the box is declared failed.
pub fn boot_timeout(accel: Accel) -> Duration {
    if let Some(secs) = std::env::var("BOXLITE_BOOT_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        return Duration::from_secs(secs);
    }
    match accel {
        // Emulation on a busy 2-core host can be 20x slower than a quiet one.
        Accel::Tcg => Duration::from_secs(90),
        _ => Duration::from_secs(30),
    }
}

/// The kernel flags that choose the guest's clock on `accel` (part of the boot cache key: a
/// snapshot keeps the clock its guest booted with).
///
/// Under TCG the guest's TSC is the host's (QEMU reads the host counter), while its timer
/// ticks arrive late whenever the host is busy: the kernel's watchdog then blames the TSC,
/// marks it unstable and falls back to counting ticks, a 4 ms clock that loses time. A box
/// booted on a busy host kept that clock for life, and so did every box restored from its
/// snapshot.
pub fn clock_flags(accel: Accel) -> Option<&'static str> {
    (accel == Accel::Tcg).then_some("tsc=reliable")
}

/// The guest kernel command line of a VM on `accel`. `root` is the agent's root disk device,
/// if any.
pub fn kernel_cmdline(accel: Accel, hostname: &str, root: Option<&str>) -> String {
    let mut parts = vec![
        "console=ttyS0".to_owned(),
        "8250.nr_uarts=1".to_owned(),
        "quiet".to_owned(),
        // A panic ends the VM at once; `-no-reboot` turns the reboot into a QEMU exit.
        "panic=-1".to_owned(),
        "reboot=t".to_owned(),
        "random.trust_cpu=on".to_owned(),
        // Under TCG on a loaded host the IO-APIC timer check can see no tick in its short
        // window and panic ("IO-APIC + timer doesn't work"); the timer does work.
        "no_timer_check".to_owned(),
    ];
    // Without it the guest may fail to calibrate its TSC under TCG and hang at boot.
    if let Some(khz) = tsc::host_tsc_khz() {
        parts.push(format!("tsc_early_khz={khz}"));
    }
    parts.extend(clock_flags(accel).map(str::to_owned));
    parts.push(format!("boxlite.hostname={hostname}"));
    if let Some(root) = root {
        parts.push(format!("boxlite.root={root}"));
    }
    parts.join(" ")
}
