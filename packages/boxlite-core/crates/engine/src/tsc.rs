//! Host TSC frequency, passed to the guest as `tsc_early_khz=`.
//!
//! Under TCG the guest cannot calibrate its TSC against the emulated PIT reliably; a guest that
//! gets it wrong never receives a timer tick and hangs at boot. Telling it the frequency removes
//! those hangs. With no other reference to refine it against, the guest keeps this frequency as
//! its TSC's: its clock is as accurate as the figure. `/proc/cpuinfo`'s "cpu MHz" is not
//! guaranteed to be the TSC rate, so we measure.

use std::sync::{Once, OnceLock};

/// The host TSC frequency in kHz, measured once per process; `None` off x86_64. The
/// measurement takes 100 ms: a call while [`measure_in_background`] runs waits for its result.
pub fn host_tsc_khz() -> Option<u64> {
    static KHZ: OnceLock<Option<u64>> = OnceLock::new();
    *KHZ.get_or_init(measure)
}

/// Starts the measurement on a thread of its own (once per process), so that the first box's
/// command line does not wait for it on an async worker.
pub fn measure_in_background() {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("tsc-measure".into())
            .spawn(|| {
                host_tsc_khz();
            });
        if let Err(e) = spawned {
            // The first command line measures it instead.
            tracing::debug!("no thread to measure the TSC on: {e}");
        }
    });
}

#[cfg(target_arch = "x86_64")]
fn measure() -> Option<u64> {
    // The host's NTP-disciplined clock (not the raw one): guest time should follow the
    // host's wall clock.
    fn monotonic_ns() -> u128 {
        // SAFETY: timespec is plain data filled by clock_gettime.
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
    }
    // The clock read between two TSC reads, paired with their midpoint. The first read after
    // a sleep runs from cold caches and lands about 1 us late (50 ppm over 20 ms): it is
    // discarded.
    fn paired() -> (u128, u64) {
        let read = || {
            // SAFETY: rdtsc has no preconditions on x86_64.
            let before = unsafe { core::arch::x86_64::_rdtsc() };
            let ns = monotonic_ns();
            let after = unsafe { core::arch::x86_64::_rdtsc() };
            (ns, before + (after.wrapping_sub(before)) / 2)
        };
        let _ = read();
        read()
    }
    // Median of a few windows: one preempted window must not skew the result. The windows
    // agree within a few ppm; the guest's clock runs off by as much as the figure is (it was
    // rounded to 1 MHz: 170 ppm, 0.6 s an hour, on our hosts).
    let mut samples: Vec<u64> = (0..5)
        .map(|_| {
            let (t0, c0) = paired();
            std::thread::sleep(std::time::Duration::from_millis(20));
            let (t1, c1) = paired();
            let ns = (t1 - t0).max(1);
            ((c1.wrapping_sub(c0)) as u128 * 1_000_000 / ns) as u64
        })
        .collect();
    samples.sort_unstable();
    let khz = samples[samples.len() / 2];
    (khz > 0).then_some(khz)
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
