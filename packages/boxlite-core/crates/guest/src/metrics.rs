//! Resource use inside the guest, read from /proc and the executions' cgroup.

use boxlite_protocol::GuestMetrics;

use crate::system;

fn meminfo_bytes(meminfo: &str, key: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

pub fn collect(execs_started: u64, execs_running: u64) -> GuestMetrics {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let cpu: Vec<u64> = std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .next()
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let at = |i: usize| cpu.get(i).copied().unwrap_or(0) * 1000 / ticks;
    let processes = std::fs::read_dir("/proc").map_or(0, |d| {
        d.flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
            .count() as u64
    });
    let mem_used_by_executions =
        std::fs::read_to_string(format!("{}/memory.current", system::EXECS_CGROUP))
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
    GuestMetrics {
        mem_total: meminfo_bytes(&meminfo, "MemTotal"),
        mem_available: meminfo_bytes(&meminfo, "MemAvailable"),
        mem_used_by_executions,
        // user + nice, system + irq + softirq, idle + iowait
        cpu_user_ms: at(0) + at(1),
        cpu_system_ms: at(2) + at(5) + at(6),
        cpu_idle_ms: at(3) + at(4),
        processes,
        uptime_ms: system::uptime_ms(),
        execs_started,
        execs_running,
    }
}
