//! The supervisor: answers passt's trapped `connect`/`send*` calls, reading each destination
//! (and a DNS question) from passt's memory and deciding with the [`Policy`].

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};

use super::policy::{host_addresses, Policy, Refusal};

/// Most messages of one `sendmmsg` inspected; a larger batch is refused.
const MAX_BATCH: usize = 1024;
/// Most bytes of a datagram inspected for a DNS query.
const MAX_DNS: usize = 1500;

/// Answers passt's trapped calls until passt is gone.
pub struct Supervisor {
    listener: OwnedFd,
    policy: Policy,
    id: String,
    refusals: u64,
}

/// Refusals logged one by one; after these, only every 1000th (a guest can try millions).
const LOGGED_REFUSALS: u64 = 20;

/// Why the supervisor refused a call; its kind decides how loudly it is logged.
#[derive(Debug, thiserror::Error)]
enum Refused {
    /// A unix socket address. passt itself tries one (its syslog socket) at every start; the
    /// guest's traffic never leads to one. Refused all the same, and logged at debug level
    /// only, so that it does not hide the refusals that matter.
    #[error("a unix socket (passt's own syslog)")]
    UnixSocket,
    /// The policy refused the destination.
    #[error("{0}")]
    Policy(Refusal),
    /// Part of the call could not be read from passt's memory, or is too short.
    #[error("{0}")]
    Unreadable(&'static str),
    #[error("sendmmsg of {0} messages")]
    Batch(usize),
    #[error("address family {0}")]
    Family(i32),
    #[error("unexpected system call {0}")]
    SystemCall(libc::c_long),
}

impl Refused {
    /// Refusals that happen at every start of passt, whatever the guest does: logged at debug
    /// level only.
    fn routine(&self) -> bool {
        matches!(self, Refused::UnixSocket)
    }
}

enum Verdict {
    Continue,
    Refuse(Refused),
}

impl Supervisor {
    pub fn new(listener: OwnedFd, policy: Policy, id: String) -> Supervisor {
        Supervisor {
            listener,
            policy,
            id,
            refusals: 0,
        }
    }

    /// Runs on its own thread; returns once passt has exited (the listener hangs up).
    pub fn run(mut self) {
        loop {
            let mut pfd = libc::pollfd {
                fd: self.listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd on a descriptor we own.
            let n = unsafe { libc::poll(&mut pfd, 1, -1) };
            if n < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            if pfd.revents & libc::POLLIN == 0 {
                break; // POLLHUP: no process is left under the filter.
            }
            // SAFETY: the kernel fills the zeroed notification it was given.
            let mut notif: libc::seccomp_notif = unsafe { std::mem::zeroed() };
            let rc = unsafe {
                libc::ioctl(
                    self.listener.as_raw_fd(),
                    libc::SECCOMP_IOCTL_NOTIF_RECV,
                    &mut notif,
                )
            };
            if rc != 0 {
                continue; // ENOENT: the caller went away meanwhile.
            }
            let verdict = self.decide(&notif);
            // The memory we read belongs to the caller only while its call is still pending.
            let mut id = notif.id;
            // SAFETY: ioctl on our listener with a pointer to a local.
            let valid = unsafe {
                libc::ioctl(
                    self.listener.as_raw_fd(),
                    libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
                    &mut id,
                )
            } == 0;
            if !valid {
                continue;
            }
            let mut resp = libc::seccomp_notif_resp {
                id: notif.id,
                val: 0,
                error: 0,
                flags: 0,
            };
            match verdict {
                Verdict::Continue => resp.flags = libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
                Verdict::Refuse(why) if why.routine() => {
                    tracing::debug!(id = %self.id, "egress refused: {why}");
                    resp.error = -libc::EACCES;
                }
                Verdict::Refuse(why) => {
                    self.refusals += 1;
                    if self.refusals <= LOGGED_REFUSALS || self.refusals.is_multiple_of(1000) {
                        tracing::warn!(id = %self.id, refusals = self.refusals, "egress refused: {why}");
                    } else {
                        tracing::debug!(id = %self.id, "egress refused: {why}");
                    }
                    resp.error = -libc::EACCES;
                }
            }
            // SAFETY: ioctl on our listener with a pointer to a local.
            unsafe {
                libc::ioctl(
                    self.listener.as_raw_fd(),
                    libc::SECCOMP_IOCTL_NOTIF_SEND,
                    &mut resp,
                )
            };
        }
        tracing::debug!(id = %self.id, "egress supervisor done");
    }

    fn decide(&mut self, notif: &libc::seccomp_notif) -> Verdict {
        let memory = Memory {
            pid: notif.pid as libc::pid_t,
        };
        let args = notif.data.args;
        let nr = notif.data.nr as libc::c_long;
        let host = host_addresses();
        let result = match nr {
            libc::SYS_connect => self.destination(&memory, args[1], args[2], None, &host, true),
            libc::SYS_sendto => {
                let payload = memory.read_vec(args[1], (args[2] as usize).min(MAX_DNS));
                match payload {
                    Some(payload) => {
                        self.destination(&memory, args[4], args[5], Some(&payload), &host, false)
                    }
                    None => Err(Refused::Unreadable("unreadable datagram")),
                }
            }
            libc::SYS_sendmsg => self.message(&memory, args[1], &host),
            libc::SYS_sendmmsg => {
                let count = args[2] as usize;
                if count > MAX_BATCH {
                    Err(Refused::Batch(count))
                } else {
                    let size = std::mem::size_of::<libc::mmsghdr>() as u64;
                    (0..count as u64)
                        .try_for_each(|i| self.message(&memory, args[1] + i * size, &host))
                }
            }
            other => Err(Refused::SystemCall(other)),
        };
        match result {
            Ok(()) => Verdict::Continue,
            Err(why) => Verdict::Refuse(why),
        }
    }

    /// Checks one `msghdr` at `addr` in passt's memory.
    fn message(
        &mut self,
        memory: &Memory,
        addr: u64,
        host: &HashSet<IpAddr>,
    ) -> Result<(), Refused> {
        let msg: libc::msghdr = memory
            .read_struct(addr)
            .ok_or(Refused::Unreadable("unreadable msghdr"))?;
        if msg.msg_name.is_null() {
            return Ok(());
        }
        let payload = if self.policy.has_allow_list() {
            Some(memory.gather(msg.msg_iov as u64, msg.msg_iovlen, MAX_DNS)?)
        } else {
            None
        };
        self.destination(
            memory,
            msg.msg_name as u64,
            msg.msg_namelen as u64,
            Some(payload.as_deref().unwrap_or(&[])),
            host,
            false,
        )
    }

    /// Checks the socket address at `addr` (`len` bytes) in passt's memory.
    fn destination(
        &mut self,
        memory: &Memory,
        addr: u64,
        len: u64,
        payload: Option<&[u8]>,
        host: &HashSet<IpAddr>,
        connect: bool,
    ) -> Result<(), Refused> {
        let len = (len as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
        let raw = memory
            .read_vec(addr, len)
            .ok_or(Refused::Unreadable("unreadable socket address"))?;
        if raw.len() < 2 {
            return Err(Refused::Unreadable("short socket address"));
        }
        let family = u16::from_ne_bytes([raw[0], raw[1]]) as i32;
        let (ip, port) = match family {
            libc::AF_INET => parse_v4(&raw).ok_or(Refused::Unreadable("short IPv4 address"))?,
            libc::AF_INET6 if raw.len() >= 24 => {
                let octets: [u8; 16] = raw[8..24].try_into().expect("16 bytes");
                (
                    IpAddr::V6(Ipv6Addr::from(octets)),
                    u16::from_be_bytes([raw[2], raw[3]]),
                )
            }
            // connect(AF_UNSPEC) dissolves an association; a datagram sent to AF_UNSPEC is
            // sent as IPv4 by the kernel, so it is checked as such.
            libc::AF_UNSPEC if connect => return Ok(()),
            libc::AF_UNSPEC => parse_v4(&raw).ok_or(Refused::Unreadable("short address"))?,
            libc::AF_NETLINK => return Ok(()),
            libc::AF_UNIX => return Err(Refused::UnixSocket),
            other => return Err(Refused::Family(other)),
        };
        let payload = if connect { None } else { payload };
        self.policy
            .check(ip, port, payload, host)
            .map_err(Refused::Policy)
    }
}

fn parse_v4(raw: &[u8]) -> Option<(IpAddr, u16)> {
    if raw.len() < 8 {
        return None;
    }
    Some((
        IpAddr::V4(Ipv4Addr::new(raw[4], raw[5], raw[6], raw[7])),
        u16::from_be_bytes([raw[2], raw[3]]),
    ))
}

/// passt's memory, read with `process_vm_readv`.
struct Memory {
    pid: libc::pid_t,
}

impl Memory {
    fn read_vec(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; len];
        if len == 0 {
            return Some(buf);
        }
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: len,
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: len,
        };
        // SAFETY: writes at most `len` bytes into our own buffer.
        let n = unsafe { libc::process_vm_readv(self.pid, &local, 1, &remote, 1, 0) };
        (n == len as isize).then_some(buf)
    }

    fn read_struct<T: Copy>(&self, addr: u64) -> Option<T> {
        let bytes = self.read_vec(addr, std::mem::size_of::<T>())?;
        // SAFETY: T is a plain C struct (msghdr, iovec) for which any bytes are a value.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
    }

    /// Up to `max` bytes of the buffers an `iovec` array describes.
    fn gather(&self, iov: u64, count: usize, max: usize) -> Result<Vec<u8>, Refused> {
        let mut out = Vec::new();
        let size = std::mem::size_of::<libc::iovec>() as u64;
        for i in 0..count.min(64) as u64 {
            if out.len() >= max {
                break;
            }
            let v: libc::iovec = self
                .read_struct(iov + i * size)
                .ok_or(Refused::Unreadable("unreadable iovec"))?;
            let take = v.iov_len.min(max - out.len());
            out.extend(
                self.read_vec(v.iov_base as u64, take)
                    .ok_or(Refused::Unreadable("unreadable buffer"))?,
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_passts_own_syslog_refusal_is_routine_and_messages_read_as_before() {
        assert!(Refused::UnixSocket.routine());
        assert_eq!(
            Refused::UnixSocket.to_string(),
            "a unix socket (passt's own syslog)"
        );
        for (refused, message) in [
            (
                Refused::Policy("the host's own address".into()),
                "the host's own address",
            ),
            (
                Refused::Unreadable("unreadable msghdr"),
                "unreadable msghdr",
            ),
            (Refused::Batch(2000), "sendmmsg of 2000 messages"),
            (Refused::Family(17), "address family 17"),
            (Refused::SystemCall(42), "unexpected system call 42"),
        ] {
            assert!(!refused.routine(), "{message}");
            assert_eq!(refused.to_string(), message);
        }
    }
}
