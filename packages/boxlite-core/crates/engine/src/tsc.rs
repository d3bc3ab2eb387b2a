//! Host TSC frequency, passed to the guest as `tsc_early_khz=`.
//!
//! Under TCG the guest cannot calibrate its TSC against the emulated PIT reliably; a guest that
//! gets it wrong never receives a timer tick and hangs at boot. Telling it the frequency removes
//! those hangs. `/proc/cpuinfo`'s "cpu MHz" is not guaranteed to be the TSC rate, so we measure.

use std::sync::OnceLock;

/// The host TSC frequency in kHz, measured once per process; `None` off x86_64.
pub fn host_tsc_khz() -> Option<u64> {
    static KHZ: OnceLock<Option<u64>> = OnceLock::new();
    *KHZ.get_or_init(measure)
}

#[cfg(target_arch = "x86_64")]
fn measure() -> Option<u64> {
    fn monotonic_raw_ns() -> u128 {
        // SAFETY: timespec is plain data filled by clock_gettime.
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_RAW, &mut ts) };
        ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
    }
    // Median of a few short windows: one preempted window must not skew the result.
    let mut samples: Vec<u64> = (0..5)
        .map(|_| {
            let (t0, c0) = (monotonic_raw_ns(), unsafe { core::arch::x86_64::_rdtsc() });
            std::thread::sleep(std::time::Duration::from_millis(10));
            let (t1, c1) = (monotonic_raw_ns(), unsafe { core::arch::x86_64::_rdtsc() });
            let ns = (t1 - t0).max(1);
            ((c1.wrapping_sub(c0)) as u128 * 1_000_000 / ns) as u64
        })
        .collect();
    samples.sort_unstable();
    let khz = samples[samples.len() / 2];
    // Round to 1 MHz: the guest only needs it approximately, and a stable value keeps boots
    // reproducible.
    (khz > 0).then(|| (khz + 500) / 1000 * 1000)
}

#[cfg(not(target_arch = "x86_64"))]
fn measure() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn measures_a_plausible_frequency() {
        let khz = super::host_tsc_khz().expect("x86_64 has a TSC");
        assert!((100_000..10_000_000).contains(&khz), "{khz} kHz");
    }
}
