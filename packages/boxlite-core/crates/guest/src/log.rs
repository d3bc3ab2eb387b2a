//! The agent's own log: lines on the kernel console. A module of its own so that every other
//! module (boot, network, channel, executions) logs without importing `system`.

use std::fs;
use std::io::Write;

/// Writes a line to the kernel console (the host keeps it in the box's console log).
pub fn log(msg: &str) {
    if let Ok(mut kmsg) = fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ = writeln!(kmsg, "boxlite-guest: {msg}");
    } else {
        eprintln!("boxlite-guest: {msg}");
    }
}
