//! User-mode networking through `passt`: outbound traffic, DNS, and port forwards bound to
//! 127.0.0.1, without root, tap devices or bridges.
//!
//! QEMU's built-in user networking lets the guest reach every service on the host (10.0.2.2 is
//! the host's loopback), with no switch for only that. passt gives the guest the host's own
//! address and gateway: the host's address is then the guest's own (a connection to it stays in
//! the guest), and `--no-map-gw` keeps the gateway address from leading to the host's loopback,
//! so host services are reachable only through explicitly forwarded ports. passt and QEMU talk
//! over a socket pair the engine creates, so nothing is left in the file system, and passt
//! exits when QEMU closes its end (`--one-off`).
//!
//! passt runs under the engine's egress filter ([`crate::egress`]): it never reaches an
//! address of the host, a link-local address, or (with an allow-list) anything not listed.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::egress;
use crate::error::{Error, IoContext, Result};
use crate::host_interfaces;
use crate::logs;
use crate::options::PortForward;

/// The guest's IPv4 configuration, as passt hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestNet {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub dns: Vec<Ipv4Addr>,
}

impl GuestNet {
    /// The kernel command-line arguments the guest agent configures `eth0` from.
    pub fn cmdline(&self) -> String {
        let mut arg = format!(
            "boxlite.net={}/{},{}",
            self.address, self.prefix, self.gateway
        );
        if !self.dns.is_empty() {
            let dns: Vec<String> = self.dns.iter().map(Ipv4Addr::to_string).collect();
            arg.push_str(&format!(" boxlite.dns={}", dns.join(",")));
        }
        arg
    }
}

/// The host's default route from `/proc/net/route`: (interface, gateway).
fn default_route(route_table: &str) -> Option<(String, Ipv4Addr)> {
    route_table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 3 || fields[1] != "00000000" {
            return None;
        }
        let gateway = u32::from_str_radix(fields[2], 16).ok()?;
        // The table holds addresses in host (little-endian) byte order.
        Some((fields[0].to_owned(), Ipv4Addr::from(gateway.swap_bytes())))
    })
}

/// IPv4 address and prefix length of `interface`.
fn interface_address(interface: &str) -> Option<(Ipv4Addr, u8)> {
    host_interfaces::interface_addresses()
        .into_iter()
        .find_map(|a| match a.address {
            IpAddr::V4(address) if a.interface == interface => Some((address, a.prefix_len()?)),
            _ => None,
        })
}

/// Non-loopback IPv4 name servers of the host (a loopback resolver is not reachable from the
/// guest; passt would need to forward it, which the host's gateway address cannot carry here).
fn name_servers(resolv_conf: &str) -> Vec<Ipv4Addr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|v| v.trim().parse::<Ipv4Addr>().ok())
        .filter(|a| !a.is_loopback())
        .collect()
}

/// What passt will give the guest: the host's address on its default route, and its gateway.
pub fn guest_config() -> Option<GuestNet> {
    let (interface, gateway) = default_route(&std::fs::read_to_string("/proc/net/route").ok()?)?;
    let (address, prefix) = interface_address(&interface)?;
    Some(GuestNet {
        address,
        prefix,
        gateway,
        dns: name_servers(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()),
    })
}

/// `BOXLITE_PASST`, else `passt` on PATH.
fn passt_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("BOXLITE_PASST") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            return Err(Error::PasstNotFound(format!(
                "BOXLITE_PASST is {}, which is not a file",
                path.display()
            )));
        }
        return Ok(path);
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join("passt"))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::PasstNotFound("`passt` was not found on PATH".into()))
}

/// passt's arguments: one client on descriptor 3, no gateway-to-loopback mapping, the forwards.
pub fn passt_arguments(ports: &[PortForward]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--foreground",
        "--quiet",
        "--one-off",
        "--no-map-gw",
        "--fd",
        "3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for port in ports {
        let flag = if port.protocol == "udp" { "-u" } else { "-t" };
        args.push(flag.into());
        args.push(format!("127.0.0.1/{}:{}", port.host_port, port.guest_port));
    }
    args
}

/// How long a host port may stay taken before a start is refused: the passt of the box's last
/// run (a kept box stopped from another process) exits on its own, a moment after its VM.
const PORT_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Refuses forwards whose host port something on 127.0.0.1 already holds: passt would start
/// without that forward and the box would boot with it silently missing (a second desktop on
/// port 3000 showing the first). Each port is bound here and released at once; passt binds it
/// a moment later.
fn check_host_ports_free(ports: &[PortForward]) -> Result<()> {
    let deadline = std::time::Instant::now() + PORT_RELEASE_WAIT;
    for port in ports {
        let address = (std::net::Ipv4Addr::LOCALHOST, port.host_port);
        loop {
            let bound = if port.protocol == "udp" {
                std::net::UdpSocket::bind(address).map(drop)
            } else {
                std::net::TcpListener::bind(address).map(drop)
            };
            match bound {
                Ok(()) => break,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50))
                }
                Err(e) => {
                    return Err(Error::Conflict(format!(
                        "host port {}/{} is not free on 127.0.0.1 ({e}): another box or program holds it. Pick another host port for guest port {}, or stop what holds it",
                        port.host_port, port.protocol, port.guest_port
                    )))
                }
            }
        }
    }
    Ok(())
}

/// A running passt for one box, and QEMU's end of their socket pair.
pub struct Passt {
    child: Child,
    /// Handed to QEMU as its `-netdev stream` descriptor, then closed here.
    qemu_end: Option<OwnedFd>,
}

impl Passt {
    /// Starts passt with its log in `log`, its egress decided by `policy` on a supervisor
    /// thread named after box `id`; with `detached` (a kept box, which may outlive this
    /// process), by a supervisor process of its own when one can be started (see
    /// [`egress::detached`]), its log beside `log`.
    pub fn start(
        ports: &[PortForward],
        log: &Path,
        policy: egress::Policy,
        id: &str,
        detached: Option<&egress::detached::SupervisorSpec>,
    ) -> Result<Passt> {
        let binary = passt_binary()?;
        check_host_ports_free(ports)?;
        let pending = detached.and_then(|spec| {
            match egress::detached::Pending::start(spec, &log.with_file_name("egress.log")) {
                Ok(pending) => Some(pending),
                Err(e) => {
                    tracing::warn!(id, error = %e, "no supervisor process for a kept box's network: it is supervised by this process, and stops when it exits");
                    None
                }
            }
        });
        let ptracer = pending.as_ref().map(|p| p.pid() as libc::c_ulong);
        let (qemu_end, passt_end) = UnixStream::pair().context(|| "socketpair for passt".into())?;
        let (qemu_end, passt_end) = (OwnedFd::from(qemu_end), OwnedFd::from(passt_end));
        // Its messages (some of which the guest's traffic can cause) go through a pipe into a
        // capped log; the draining task ends with passt.
        let (log_pipe, _drain) = logs::capped_pipe(log, logs::PROCESS_LOG_BYTES)?;
        let mut command = Command::new(&binary);
        command
            .args(passt_arguments(ports))
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::from(
                log_pipe.try_clone().context(|| "passt log".into())?,
            ))
            .stderr(Stdio::from(log_pipe))
            .process_group(0);
        let source = passt_end.as_raw_fd();
        // The filter is built before fork; the child installs it and hands the engine its
        // listener (report: child to parent, ack: parent to child).
        // SAFETY: geteuid has no preconditions.
        let prog = egress::filter(unsafe { libc::geteuid() } != 0);
        let (report_r, report_w) = pipe().context(|| "pipe for passt's filter".into())?;
        let (ack_r, ack_w) = pipe().context(|| "pipe for passt's filter".into())?;
        let pipes = egress::HandOver {
            report: report_w.as_raw_fd(),
            ack: ack_r.as_raw_fd(),
            parent_ends: [report_r.as_raw_fd(), ack_w.as_raw_fd()],
        };
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // First, while the pipes still sit where the parent left them.
                egress::install_in_child(&prog, pipes)?;
                if let Some(pid) = ptracer {
                    // Under Yama's ptrace_scope=1 only an ancestor may read passt's memory; the
                    // supervisor process is not one. Fails (harmlessly) without Yama.
                    libc::prctl(libc::PR_SET_PTRACER, pid, 0, 0, 0);
                }
                // A log nobody drains any more (the owner died, the box was kept) must not
                // kill the box's network.
                libc::signal(libc::SIGPIPE, libc::SIG_IGN);
                place_fds(&[source])
            });
        }
        let taker = std::thread::spawn(move || {
            let listener = egress::take_listener(report_r)?;
            // SAFETY: one byte to the child from a descriptor we own.
            if unsafe { libc::write(ack_w.as_raw_fd(), [1u8].as_ptr().cast(), 1) } != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(listener)
        });
        let spawned = command.spawn();
        // Our copies: once they are closed, a child that died early cannot block the taker.
        drop((report_w, ack_r));
        let taken = taker.join().expect("listener taker panicked");
        let (child, listener) = match (spawned, taken) {
            (Ok(child), Ok(listener)) => (child, listener),
            // The child ends its wait when the taker gives up: the taker's error is the cause.
            (Err(spawn), Err(take)) => {
                return Err(Error::Io {
                    context: format!(
                        "start {}: {spawn}; taking its seccomp listener failed",
                        binary.display()
                    ),
                    source: take,
                })
            }
            (Err(spawn), Ok(_)) => {
                return Err(spawn).context(|| format!("start {}", binary.display()))
            }
            (Ok(mut child), Err(take)) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(take).context(|| "take passt's seccomp listener".into());
            }
        };
        let listener = match pending {
            Some(pending) => match pending.hand_over(listener) {
                Ok(()) => None,
                Err((listener, e)) => {
                    tracing::warn!(id, error = %e, "could not hand passt's listener to its supervisor process: supervising it here");
                    Some(listener)
                }
            },
            None => Some(listener),
        };
        if let Some(listener) = listener {
            let supervisor = egress::Supervisor::new(listener, policy, id.to_owned());
            std::thread::Builder::new()
                .name(format!("egress-{}", &id[..12.min(id.len())]))
                .spawn(move || supervisor.run())
                .context(|| "start the egress supervisor".into())?;
        }
        drop(passt_end);
        Ok(Passt {
            child,
            qemu_end: Some(qemu_end),
        })
    }

    /// The descriptor QEMU's network device is to use, until it is closed here.
    pub fn qemu_fd(&self) -> Option<RawFd> {
        self.qemu_end.as_ref().map(AsRawFd::as_raw_fd)
    }

    pub fn close_qemu_end(&mut self) {
        self.qemu_end = None;
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Passt {
    fn drop(&mut self) {
        // It exits by itself once QEMU is gone; this covers a VM that never started.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills two fresh descriptors that we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// In a child before exec: puts `sources` at descriptors 3, 4, ... (without close-on-exec),
/// and marks every higher descriptor close-on-exec.
pub fn place_fds(sources: &[RawFd]) -> std::io::Result<()> {
    // SAFETY: fcntl/dup2/close_range on descriptors of this (forked) process.
    unsafe {
        // First out of the way, so a source already sitting at a target is not clobbered.
        let mut moved = Vec::with_capacity(sources.len());
        for &fd in sources {
            let high = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 64);
            if high < 0 {
                return Err(std::io::Error::last_os_error());
            }
            moved.push(high);
        }
        for (i, &fd) in moved.iter().enumerate() {
            if libc::dup2(fd, 3 + i as RawFd) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        libc::syscall(
            libc::SYS_close_range,
            3 + sources.len() as u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_default_route_and_name_servers() {
        let table = "Iface\tDestination\tGateway \tFlags\nlo\t0000007F\t00000000\t0001\neth0\t00000000\t010200C0\t0003\n";
        assert_eq!(
            default_route(table),
            Some(("eth0".into(), Ipv4Addr::new(192, 0, 2, 1)))
        );
        assert_eq!(default_route("Iface\tDestination\n"), None);
        let resolv = "# x\nnameserver 127.0.0.53\nnameserver 10.1.2.3\nsearch lan\n";
        assert_eq!(name_servers(resolv), vec![Ipv4Addr::new(10, 1, 2, 3)]);
    }

    #[test]
    fn forwards_bind_to_loopback() {
        let args = passt_arguments(&[
            PortForward {
                host_port: 8080,
                guest_port: 80,
                protocol: "tcp".into(),
            },
            PortForward {
                host_port: 5353,
                guest_port: 53,
                protocol: "udp".into(),
            },
        ])
        .join(" ");
        assert!(args.contains("--no-map-gw"), "{args}");
        assert!(args.contains("-t 127.0.0.1/8080:80"), "{args}");
        assert!(args.contains("-u 127.0.0.1/5353:53"), "{args}");
    }

    #[test]
    fn guest_config_renders_to_the_command_line() {
        let net = GuestNet {
            address: Ipv4Addr::new(192, 0, 2, 2),
            prefix: 24,
            gateway: Ipv4Addr::new(192, 0, 2, 1),
            dns: vec![Ipv4Addr::new(192, 0, 2, 53)],
        };
        assert_eq!(
            net.cmdline(),
            "boxlite.net=192.0.2.2/24,192.0.2.1 boxlite.dns=192.0.2.53"
        );
    }
}
