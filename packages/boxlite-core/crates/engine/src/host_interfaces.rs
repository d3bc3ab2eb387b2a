//! The addresses of this host's network interfaces (this network namespace), read with
//! `getifaddrs`: the one place the engine walks that C list.
//!
//! Used by the egress policy (every host address is refused) and by the guest network set-up
//! (the address of the default route's interface).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One address of one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddress {
    pub interface: String,
    pub address: IpAddr,
    /// The network mask (same family as `address`), when the kernel reports one.
    pub netmask: Option<IpAddr>,
    /// The broadcast address, on broadcast links only.
    pub broadcast: Option<IpAddr>,
}

impl InterfaceAddress {
    /// The prefix length `netmask` stands for.
    pub fn prefix_len(&self) -> Option<u8> {
        match self.netmask? {
            IpAddr::V4(mask) => Some(u32::from(mask).count_ones() as u8),
            IpAddr::V6(mask) => Some(u128::from(mask).count_ones() as u8),
        }
    }
}

/// Every IPv4 and IPv6 address of every interface, read afresh; empty when the list cannot be
/// read.
pub fn interface_addresses() -> Vec<InterfaceAddress> {
    let mut found = Vec::new();
    let mut addrs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list that is only read here and freed once, below; every
    // pointer in it is either null or valid until then.
    unsafe {
        if libc::getifaddrs(&mut addrs) != 0 {
            return found;
        }
        let mut cursor = addrs;
        while !cursor.is_null() {
            let entry = &*cursor;
            cursor = entry.ifa_next;
            let Some(address) = socket_address(entry.ifa_addr) else {
                continue;
            };
            // ifa_ifu is the broadcast address on broadcast links (the peer's on others).
            let broadcast = if entry.ifa_flags & libc::IFF_BROADCAST as u32 != 0 {
                socket_address(entry.ifa_ifu)
            } else {
                None
            };
            found.push(InterfaceAddress {
                interface: std::ffi::CStr::from_ptr(entry.ifa_name)
                    .to_string_lossy()
                    .into_owned(),
                address,
                netmask: socket_address(entry.ifa_netmask),
                broadcast,
            });
        }
        libc::freeifaddrs(addrs);
    }
    found
}

/// The IP address in `sa`, if it is an IPv4 or IPv6 socket address.
///
/// # Safety
/// `sa` is null or points to a socket address as large as its family says.
unsafe fn socket_address(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    match (*sa).sa_family as i32 {
        libc::AF_INET => {
            let sin = &*(sa as *const libc::sockaddr_in);
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                sin.sin_addr.s_addr,
            ))))
        }
        libc::AF_INET6 => {
            let sin6 = &*(sa as *const libc::sockaddr_in6);
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed_with_its_prefix() {
        let addrs = interface_addresses();
        let lo = addrs
            .iter()
            .find(|a| a.address == IpAddr::V4(Ipv4Addr::LOCALHOST))
            .unwrap_or_else(|| panic!("no 127.0.0.1 in {addrs:?}"));
        assert_eq!(lo.interface, "lo");
        assert_eq!(lo.prefix_len(), Some(8));
        assert_eq!(lo.broadcast, None, "lo is not a broadcast link");
    }
}
