//! The box's network interface, configured from the kernel command line the host wrote
//! (`boxlite.net=ADDR/PREFIX,GATEWAY boxlite.dns=A,B`): what passt hands out, set statically so
//! no DHCP client is needed in the image.

use std::io;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::cmdline::cmdline_value;
use crate::log::log;
use crate::ROOTFS;

struct NetConfig {
    address: Ipv4Addr,
    prefix: u8,
    gateway: Ipv4Addr,
    dns: Vec<Ipv4Addr>,
}

fn parse(cmdline: &str) -> Option<NetConfig> {
    let net = cmdline_value(cmdline, "boxlite.net")?;
    let (cidr, gateway) = net.split_once(',')?;
    let (address, prefix) = cidr.split_once('/')?;
    let dns = cmdline_value(cmdline, "boxlite.dns")
        .map(|v| v.split(',').filter_map(|a| a.parse().ok()).collect())
        .unwrap_or_default();
    Some(NetConfig {
        address: address.parse().ok()?,
        prefix: prefix.parse().ok().filter(|p| *p <= 32)?,
        gateway: gateway.parse().ok()?,
        dns,
    })
}

fn sockaddr(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; this is how the ioctls take them.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

#[repr(C)]
struct IfReqAddr {
    name: [u8; libc::IFNAMSIZ],
    addr: libc::sockaddr,
    _pad: [u8; 8],
}

#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// `struct rtentry` of <net/route.h> (glibc's libc crate does not export it).
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

fn name_of(interface: &str) -> [u8; libc::IFNAMSIZ] {
    let mut name = [0u8; libc::IFNAMSIZ];
    name[..interface.len()].copy_from_slice(interface.as_bytes());
    name
}

fn ioctl<T>(fd: libc::c_int, request: libc::c_ulong, arg: &mut T, what: &str) -> io::Result<()> {
    // SAFETY: `arg` is the live, correctly laid-out structure `request` expects.
    if unsafe { libc::ioctl(fd, request, arg as *mut T) } != 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(err.kind(), format!("{what}: {err}")));
    }
    Ok(())
}

fn configure(config: &NetConfig, interface: &str) -> io::Result<()> {
    // SAFETY: a plain datagram socket for the interface ioctls, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let mask = if config.prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(config.prefix))
    };
    let result = (|| {
        let mut req = IfReqAddr {
            name: name_of(interface),
            addr: sockaddr(config.address),
            _pad: [0; 8],
        };
        ioctl(fd, libc::SIOCSIFADDR, &mut req, "set address")?;
        req.addr = sockaddr(Ipv4Addr::from(mask));
        ioctl(fd, libc::SIOCSIFNETMASK, &mut req, "set netmask")?;
        let mut flags = IfReqFlags {
            name: name_of(interface),
            flags: 0,
            _pad: [0; 22],
        };
        ioctl(fd, libc::SIOCGIFFLAGS, &mut flags, "get flags")?;
        flags.flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        ioctl(fd, libc::SIOCSIFFLAGS, &mut flags, "bring up")?;
        let mut route = RtEntry {
            rt_pad1: 0,
            rt_dst: sockaddr(Ipv4Addr::UNSPECIFIED),
            rt_gateway: sockaddr(config.gateway),
            rt_genmask: sockaddr(Ipv4Addr::UNSPECIFIED),
            rt_flags: (libc::RTF_UP | libc::RTF_GATEWAY) as libc::c_ushort,
            rt_pad2: 0,
            rt_pad3: 0,
            rt_pad4: std::ptr::null_mut(),
            rt_metric: 0,
            rt_dev: std::ptr::null_mut(),
            rt_mtu: 0,
            rt_window: 0,
            rt_irtt: 0,
        };
        ioctl(fd, libc::SIOCADDRT, &mut route, "add default route")
    })();
    // SAFETY: closing our socket.
    unsafe { libc::close(fd) };
    result
}

fn write_resolv_conf(dns: &[Ipv4Addr]) -> io::Result<()> {
    let path = format!("{ROOTFS}/etc/resolv.conf");
    // Images often ship it as a symlink into a run directory; the box gets a plain file.
    let _ = std::fs::remove_file(&path);
    let text: String = dns.iter().map(|a| format!("nameserver {a}\n")).collect();
    std::fs::create_dir_all(format!("{ROOTFS}/etc"))?;
    std::fs::write(path, text)
}

/// Configures `eth0` when the host attached a network device; logs what failed.
pub fn setup(cmdline: &str) {
    let Some(config) = parse(cmdline) else {
        return;
    };
    // virtio-net probes while the agent boots.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::path::Path::new("/sys/class/net/eth0").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if let Err(e) = configure(&config, "eth0") {
        log(&format!("network not configured: {e}"));
        return;
    }
    if !config.dns.is_empty() {
        if let Err(e) = write_resolv_conf(&config.dns) {
            log(&format!("resolv.conf not written: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn reads_the_network_from_the_command_line() {
        let c = parse("quiet boxlite.net=192.0.2.2/24,192.0.2.1 boxlite.dns=192.0.2.53,10.0.0.1")
            .unwrap();
        assert_eq!(c.address.to_string(), "192.0.2.2");
        assert_eq!((c.prefix, c.gateway.to_string()), (24, "192.0.2.1".into()));
        assert_eq!(c.dns.len(), 2);
        assert!(parse("quiet").is_none());
        assert!(parse("boxlite.net=1.2.3.4/40,1.2.3.1").is_none());
    }
}
