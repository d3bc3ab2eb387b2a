//! A box's resource use: the guest's figures, the VMM process's memory and CPU time on the
//! host (from /proc), executions started and the stages of its last start.

use std::sync::atomic::Ordering;

use boxlite_protocol::GuestMetrics;
use serde::Serialize;

use super::{LiteBox, StartTimings};
use crate::error::Result;

/// A box's resource use: the guest's view, the VMM process on the host, executions and the
/// stages of its last start.
#[derive(Debug, Clone, Serialize)]
pub struct BoxMetrics {
    pub guest: GuestMetrics,
    /// Resident memory of the VMM process on the host, in bytes.
    pub vmm_rss_bytes: u64,
    /// CPU time the VMM process used on the host (user + system), in milliseconds.
    pub vmm_cpu_ms: u64,
    /// Executions started through this handle's runtime since the box started.
    pub execs_started: u64,
    pub timings: StartTimings,
}

/// RSS (bytes) and CPU time (ms) of a host process, from /proc.
pub(crate) fn process_usage(pid: u32) -> (u64, u64) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024);
    // Fields after the command name (which may hold spaces): utime is the 14th, stime the 15th.
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            // SAFETY: sysconf has no preconditions.
            let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
            Some((utime + stime) * 1000 / ticks)
        })
        .unwrap_or(0);
    (rss, cpu)
}

impl LiteBox {
    /// Executions started since the box was created.
    pub fn execs_started(&self) -> u64 {
        self.execs_started.load(Ordering::Relaxed)
    }

    /// Resource use of the running box.
    pub async fn metrics(&self) -> Result<BoxMetrics> {
        let running = self.running("read metrics of")?;
        let guest = running
            .agent
            .metrics()
            .await
            .map_err(|e| self.channel_error(e))?;
        let (vmm_rss_bytes, vmm_cpu_ms) = running.vm.pid().map_or((0, 0), process_usage);
        Ok(BoxMetrics {
            guest,
            vmm_rss_bytes,
            vmm_cpu_ms,
            execs_started: self.execs_started.load(Ordering::Relaxed),
            timings: self.state.lock().expect("state lock").timings.clone(),
        })
    }
}
