//! The kernel command line: where the host hands the agent its boot settings
//! (`boxlite.root=`, `boxlite.hostname=`, `boxlite.net=`, ...). A module of its own so that
//! `system` and `network` both read it without importing each other.

use std::fs;

pub fn kernel_cmdline() -> String {
    fs::read_to_string("/proc/cmdline").unwrap_or_default()
}

/// The value of `key=value` on the kernel command line.
pub fn cmdline_value(cmdline: &str, key: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('=').map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::cmdline_value;

    #[test]
    fn reads_values_from_the_kernel_command_line() {
        let cmdline = "console=ttyS0 boxlite.root=/dev/vda boxlite.hostname=box-1 quiet\n";
        assert_eq!(
            cmdline_value(cmdline, "boxlite.root").as_deref(),
            Some("/dev/vda")
        );
        assert_eq!(
            cmdline_value(cmdline, "boxlite.hostname").as_deref(),
            Some("box-1")
        );
        assert_eq!(cmdline_value(cmdline, "boxlite.missing"), None);
        assert_eq!(cmdline_value(cmdline, "boxlite"), None);
    }
}
