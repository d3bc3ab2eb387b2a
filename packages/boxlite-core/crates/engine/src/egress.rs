//! Egress policy: where a box's traffic may go, enforced where passt opens and uses the real
//! sockets on the host.
//!
//! passt relays the guest's connections and datagrams through sockets of its own in the
//! host's network namespace, so a guest that targets one of the host's addresses (a second
//! interface, a bridge such as docker0, its IPv6 addresses) or a link-local service (cloud
//! metadata at 169.254.169.254) reaches it through passt. The engine therefore starts passt
//! under a seccomp filter of its own whose `connect`, `sendto` (with an address), `sendmsg` and
//! `sendmmsg` calls are handed to a supervisor thread ([`Supervisor`]) through a seccomp
//! user-notification descriptor. The supervisor reads the destination from passt's memory,
//! decides with [`Policy::check`] and lets the call continue or fails it with `EACCES`.
//!
//! Always refused: every address of every host interface (re-read at each decision, so new
//! interfaces are covered), their broadcast addresses, loopback, unspecified, link-local
//! (169.254/16, fe80::/10) and multicast destinations. With an allow-list
//! (`NetworkSpec.allow_net`), only the listed addresses, networks and host names are reachable,
//! and DNS queries to the box's name servers are let through only for listed names.
//!
//! The decision is sound because passt cannot change the address between the check and the
//! call: it runs one thread, and the filter refuses `clone` with `CLONE_VM` (threads, vfork),
//! `clone3` and `io_uring_setup` (which could connect without a system call the filter sees).
//! When the engine process dies the descriptor closes and every further call of this kind fails
//! in passt (`ENOSYS`): a box whose owner died has no more egress, rather than an unchecked one.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::host_interfaces;

/// One allow-list entry: an address or network, an exact host name, or `*.domain` (every name
/// below `domain`, not `domain` itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowRule {
    Net(IpNet),
    Host(String),
    Suffix(String),
}

impl AllowRule {
    /// Parses an `allow_net` entry; the error names the entry and says what is accepted.
    pub fn parse(entry: &str) -> Result<AllowRule, String> {
        let text = entry.trim();
        if let Ok(ip) = text.parse::<IpAddr>() {
            refuse_special(entry, ip)?;
            return Ok(AllowRule::Net(IpNet::from(ip)));
        }
        if let Ok(net) = text.parse::<IpNet>() {
            refuse_special(entry, net.network())?;
            if net != net.trunc() {
                return Err(format!(
                    "allow_net entry {entry:?} has host bits set: write {}",
                    net.trunc()
                ));
            }
            return Ok(AllowRule::Net(net));
        }
        let name = text.trim_end_matches('.').to_ascii_lowercase();
        let (wildcard, domain) = match name.strip_prefix("*.") {
            Some(rest) => (true, rest.to_owned()),
            None => (false, name.clone()),
        };
        if !valid_host_name(&domain) {
            return Err(format!(
                "allow_net entry {entry:?} is not an IP address, a CIDR network (10.0.0.0/8), a host name (example.com) or a wildcard (*.example.com); ports are not supported"
            ));
        }
        Ok(if wildcard {
            AllowRule::Suffix(domain)
        } else {
            AllowRule::Host(domain)
        })
    }

    fn matches_name(&self, name: &str) -> bool {
        match self {
            AllowRule::Host(host) => host == name,
            AllowRule::Suffix(domain) => name
                .strip_suffix(domain.as_str())
                .is_some_and(|head| head.ends_with('.') && head.len() > 1),
            AllowRule::Net(_) => false,
        }
    }
}

fn refuse_special(entry: &str, ip: IpAddr) -> Result<(), String> {
    match always_refused(ip) {
        Some(kind) => Err(format!(
            "allow_net entry {entry:?} is a {kind} address, which a box never reaches: a box reaches host services only through forwarded ports (ports=...)"
        )),
        None => Ok(()),
    }
}

fn valid_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Loopback, unspecified, link-local and multicast destinations: refused whatever the policy.
fn always_refused(ip: IpAddr) -> Option<&'static str> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.octets()[0] == 0 {
                // 0.0.0.0/8: connecting to it reaches the host itself.
                Some("unspecified")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if v4.is_multicast() || v4.is_broadcast() {
                Some("multicast or broadcast")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if (v6.segments()[0] & 0xffc0) == 0xfe80 {
                Some("link-local")
            } else if v6.is_multicast() {
                Some("multicast")
            } else {
                None
            }
        }
    }
}

/// Every address of every interface of the host (this network namespace), with their
/// broadcast addresses; read afresh at each call.
pub fn host_addresses() -> HashSet<IpAddr> {
    host_interfaces::interface_addresses()
        .into_iter()
        .flat_map(|a| std::iter::once(a.address).chain(a.broadcast))
        .collect()
}

/// How long resolved addresses of allowed names are trusted before they are looked up again.
const RESOLVE_INTERVAL: Duration = Duration::from_secs(10);
/// Most addresses learnt from allowed names (a bound on the supervisor's memory).
const MAX_LEARNT: usize = 4096;
/// Most distinct names looked up because the box asked for them.
const MAX_NAMES: usize = 1024;

/// What a box may reach.
#[derive(Debug)]
pub struct Policy {
    /// `None`: everything but the always-refused destinations.
    allow: Option<Vec<AllowRule>>,
    /// The box's DNS servers (port 53): reachable for queries of allowed names.
    name_servers: Vec<IpAddr>,
    /// Names the box may resolve and that were looked up on the host, with their addresses.
    names: HashSet<String>,
    learnt: HashSet<IpAddr>,
    resolved_at: Option<Instant>,
}

/// A refusal and why (for the log).
pub type Refusal = String;

impl Policy {
    /// `allow`: validated `allow_net` entries (empty: no allow-list).
    pub fn new(allow: &[String], name_servers: Vec<IpAddr>) -> Result<Policy, String> {
        let rules = allow
            .iter()
            .map(|e| AllowRule::parse(e))
            .collect::<Result<Vec<_>, _>>()?;
        let names = rules
            .iter()
            .filter_map(|r| match r {
                AllowRule::Host(h) => Some(h.clone()),
                _ => None,
            })
            .collect();
        Ok(Policy {
            allow: (!rules.is_empty()).then_some(rules),
            name_servers,
            names,
            learnt: HashSet::new(),
            resolved_at: None,
        })
    }

    pub fn has_allow_list(&self) -> bool {
        self.allow.is_some()
    }

    /// Decides a destination; `payload` is the datagram for UDP sends (DNS queries are
    /// inspected), `None` for `connect`.
    pub fn check(
        &mut self,
        ip: IpAddr,
        port: u16,
        payload: Option<&[u8]>,
        host: &HashSet<IpAddr>,
    ) -> Result<(), Refusal> {
        let ip = ip.to_canonical();
        if let Some(kind) = always_refused(ip) {
            return Err(format!("{ip} is a {kind} address"));
        }
        if host.iter().any(|h| h.to_canonical() == ip) {
            return Err(format!("{ip} is an address of the host"));
        }
        let Some(rules) = &self.allow else {
            return Ok(());
        };
        if rules
            .iter()
            .any(|r| matches!(r, AllowRule::Net(n) if n.contains(&ip)))
        {
            return Ok(());
        }
        if port == 53 && self.name_servers.contains(&ip) {
            let Some(payload) = payload else {
                return Err(format!(
                    "{ip}:53 is a name server: only DNS queries over UDP for allowed names pass"
                ));
            };
            let names = dns_question_names(payload)
                .ok_or_else(|| format!("a datagram to {ip}:53 is not a DNS query"))?;
            for name in &names {
                if !rules.iter().any(|r| r.matches_name(name)) {
                    return Err(format!("DNS query for {name}, which is not allowed"));
                }
            }
            for name in names {
                if self.names.len() < MAX_NAMES && self.names.insert(name) {
                    self.resolved_at = None;
                }
            }
            return Ok(());
        }
        if self.learnt.contains(&ip) {
            return Ok(());
        }
        if self
            .resolved_at
            .is_none_or(|at| at.elapsed() >= RESOLVE_INTERVAL)
        {
            self.resolve();
            if self.learnt.contains(&ip) {
                return Ok(());
            }
        }
        Err(format!("{ip} is not on the allow-list"))
    }

    /// Looks up every allowed name on the host (blocking; bounded by the resolver's timeouts).
    fn resolve(&mut self) {
        for name in &self.names {
            match (name.as_str(), 0).to_socket_addrs() {
                Ok(addrs) => {
                    for addr in addrs {
                        if self.learnt.len() >= MAX_LEARNT {
                            break;
                        }
                        self.learnt.insert(addr.ip().to_canonical());
                    }
                }
                Err(err) => tracing::debug!(%name, %err, "allowed name does not resolve"),
            }
        }
        self.resolved_at = Some(Instant::now());
    }
}

/// The question names of a DNS query (lowercase, without the trailing dot), or `None` when
/// `msg` is not a well-formed query.
fn dns_question_names(msg: &[u8]) -> Option<Vec<String>> {
    if msg.len() < 12 || msg[2] & 0x80 != 0 {
        return None;
    }
    let count = u16::from_be_bytes([msg[4], msg[5]]) as usize;
    if count == 0 || count > 4 {
        return None;
    }
    let mut pos = 12;
    let mut names = Vec::with_capacity(count);
    for _ in 0..count {
        let mut labels: Vec<String> = Vec::new();
        loop {
            let len = *msg.get(pos)? as usize;
            pos += 1;
            if len == 0 {
                break;
            }
            // Queries carry no compression pointers (0xc0) or extended labels.
            if len > 63 {
                return None;
            }
            let label = msg.get(pos..pos + len)?;
            labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
            pos += len;
        }
        pos += 4; // QTYPE, QCLASS
        if pos > msg.len() || labels.is_empty() {
            return None;
        }
        names.push(labels.join("."));
    }
    Some(names)
}

// ---- The seccomp filter passt runs under -------------------------------------------------

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

const LD: u32 = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
const JEQ: u32 = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
const RET: u32 = libc::BPF_RET | libc::BPF_K;
/// Offset of the low half of system-call argument `i` in `struct seccomp_data` (little endian).
const fn arg_lo(i: u32) -> u32 {
    16 + 8 * i
}

/// The filter: `connect`, `sendmsg`, `sendmmsg` and `sendto` with an address go to the
/// supervisor; threads, `clone3` and io_uring are refused; with `keep_dumpable`,
/// `prctl(PR_SET_DUMPABLE, 0)` succeeds without effect, so that an unprivileged engine can
/// still read passt's memory (passt makes itself non-dumpable, and only a process holding
/// CAP_SYS_PTRACE may read a non-dumpable process).
pub fn filter(keep_dumpable: bool) -> Vec<libc::sock_filter> {
    let notify = stmt(RET, libc::SECCOMP_RET_USER_NOTIF);
    let allow = stmt(RET, libc::SECCOMP_RET_ALLOW);
    let errno = |e: i32| stmt(RET, libc::SECCOMP_RET_ERRNO | e as u32);
    let kill = stmt(RET, libc::SECCOMP_RET_KILL_PROCESS);
    let mut prog = vec![stmt(LD, 4), jump(JEQ, AUDIT_ARCH, 1, 0), kill, stmt(LD, 0)];
    #[cfg(target_arch = "x86_64")]
    {
        // x32 system calls share the architecture value and would bypass the checks below.
        prog.push(jump(
            libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K,
            0x4000_0000,
            0,
            1,
        ));
        prog.push(kill);
    }
    // `if nr == X { block }`: a jump over the block, then the block (which ends in a return).
    let mut case = |nr: libc::c_long, block: &[libc::sock_filter]| {
        prog.push(jump(JEQ, nr as u32, 0, block.len() as u8));
        prog.extend_from_slice(block);
    };
    case(libc::SYS_connect, &[notify]);
    case(libc::SYS_sendmsg, &[notify]);
    case(libc::SYS_sendmmsg, &[notify]);
    case(
        libc::SYS_sendto,
        &[
            stmt(LD, arg_lo(4)),
            jump(JEQ, 0, 0, 3),
            stmt(LD, arg_lo(4) + 4),
            jump(JEQ, 0, 0, 1),
            allow,
            notify,
        ],
    );
    case(libc::SYS_io_uring_setup, &[errno(libc::ENOSYS)]);
    case(libc::SYS_clone3, &[errno(libc::ENOSYS)]);
    case(
        libc::SYS_clone,
        &[
            stmt(LD, arg_lo(0)),
            jump(
                libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K,
                libc::CLONE_VM as u32,
                0,
                1,
            ),
            errno(libc::EPERM),
            allow,
        ],
    );
    #[cfg(target_arch = "x86_64")]
    case(libc::SYS_vfork, &[errno(libc::EPERM)]);
    if keep_dumpable {
        case(
            libc::SYS_prctl,
            &[
                stmt(LD, arg_lo(0)),
                jump(JEQ, libc::PR_SET_DUMPABLE as u32, 0, 3),
                stmt(LD, arg_lo(1)),
                jump(JEQ, 0, 0, 1),
                errno(0),
                allow,
            ],
        );
    }
    prog.push(allow);
    prog
}

/// The child's ends of the two pipes of the listener hand-over, and the parent's ends, which
/// the child inherited and closes first.
#[derive(Debug, Clone, Copy)]
pub struct HandOver {
    /// Child to parent: `[pid, listener]`.
    pub report: RawFd,
    /// Parent to child: one byte once the parent holds the listener.
    pub ack: RawFd,
    /// The parent's ends (report's read end, ack's write end).
    pub parent_ends: [RawFd; 2],
}

/// In the child before exec (async-signal-safe system calls only): installs `prog` with a new
/// listener, writes `[pid, listener]` to `report`, and waits for one byte on `ack` (the parent
/// has taken the listener with `pidfd_getfd`).
///
/// The child first closes its copies of the parent's pipe ends: if the parent cannot take the
/// listener, its own close of the ack pipe then ends the child's wait (an error, not a hang).
/// It also makes itself dumpable, as its exec would: an engine that changed its user ids
/// in-process is not dumpable, and neither would its forked child be, so `pidfd_getfd` (which
/// needs ptrace access) would fail.
///
/// # Safety
/// Call only in a freshly forked child.
pub unsafe fn install_in_child(prog: &[libc::sock_filter], pipes: HandOver) -> std::io::Result<()> {
    let HandOver {
        report,
        ack,
        parent_ends,
    } = pipes;
    let last = std::io::Error::last_os_error;
    for fd in parent_ends {
        libc::close(fd);
    }
    if libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) != 0 {
        return Err(last());
    }
    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
        return Err(last());
    }
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    let listener = libc::syscall(
        libc::SYS_seccomp,
        libc::SECCOMP_SET_MODE_FILTER,
        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
        &fprog as *const libc::sock_fprog,
    );
    if listener < 0 {
        return Err(last());
    }
    let message = [libc::getpid(), listener as i32];
    if libc::write(report, message.as_ptr().cast(), 8) != 8 {
        return Err(last());
    }
    let mut byte = 0u8;
    if libc::read(ack, (&mut byte as *mut u8).cast(), 1) != 1 {
        return Err(std::io::Error::other(
            "the engine did not take passt's seccomp listener",
        ));
    }
    libc::close(listener as i32);
    Ok(())
}

/// In the parent: reads `[pid, fd]` from `report` and copies that descriptor out of the child.
pub fn take_listener(report: OwnedFd) -> std::io::Result<OwnedFd> {
    let mut message = [0i32; 2];
    let mut got = 0usize;
    while got < 8 {
        // SAFETY: reading into our own buffer from a descriptor we own.
        let n = unsafe {
            libc::read(
                report.as_raw_fd(),
                (message.as_mut_ptr() as *mut u8).add(got).cast(),
                8 - got,
            )
        };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            return Err(std::io::Error::other(
                "passt's launcher exited before installing its seccomp filter",
            ));
        }
        got += n as usize;
    }
    // SAFETY: pidfd_open/pidfd_getfd return fresh descriptors that we then own.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, message[0], 0);
        if pidfd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let pidfd = OwnedFd::from_raw_fd(pidfd as RawFd);
        let fd = libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), message[1], 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd as RawFd))
    }
}

// ---- The supervisor ------------------------------------------------------------------------

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

/// The refusal of a unix socket address. passt itself tries one (its syslog socket) at every
/// start; the guest's traffic never leads to one. Refused all the same, and logged at debug
/// level only, so that it does not hide the refusals that matter.
const UNIX_SOCKET_REFUSAL: &str = "a unix socket (passt's own syslog)";

enum Verdict {
    Continue,
    Refuse(Refusal),
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
                Verdict::Refuse(why) if why == UNIX_SOCKET_REFUSAL => {
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
                    None => Err("unreadable datagram".into()),
                }
            }
            libc::SYS_sendmsg => self.message(&memory, args[1], &host),
            libc::SYS_sendmmsg => {
                let count = args[2] as usize;
                if count > MAX_BATCH {
                    Err(format!("sendmmsg of {count} messages"))
                } else {
                    let size = std::mem::size_of::<libc::mmsghdr>() as u64;
                    (0..count as u64)
                        .try_for_each(|i| self.message(&memory, args[1] + i * size, &host))
                }
            }
            other => Err(format!("unexpected system call {other}")),
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
    ) -> Result<(), Refusal> {
        let msg: libc::msghdr = memory.read_struct(addr).ok_or("unreadable msghdr")?;
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
    ) -> Result<(), Refusal> {
        let len = (len as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
        let raw = memory
            .read_vec(addr, len)
            .ok_or("unreadable socket address")?;
        if raw.len() < 2 {
            return Err("short socket address".into());
        }
        let family = u16::from_ne_bytes([raw[0], raw[1]]) as i32;
        let (ip, port) = match family {
            libc::AF_INET => parse_v4(&raw).ok_or("short IPv4 address")?,
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
            libc::AF_UNSPEC => parse_v4(&raw).ok_or("short address")?,
            libc::AF_NETLINK => return Ok(()),
            libc::AF_UNIX => return Err(UNIX_SOCKET_REFUSAL.into()),
            other => return Err(format!("address family {other}")),
        };
        let payload = if connect { None } else { payload };
        self.policy.check(ip, port, payload, host)
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
    fn gather(&self, iov: u64, count: usize, max: usize) -> Result<Vec<u8>, Refusal> {
        let mut out = Vec::new();
        let size = std::mem::size_of::<libc::iovec>() as u64;
        for i in 0..count.min(64) as u64 {
            if out.len() >= max {
                break;
            }
            let v: libc::iovec = self.read_struct(iov + i * size).ok_or("unreadable iovec")?;
            let take = v.iov_len.min(max - out.len());
            out.extend(
                self.read_vec(v.iov_base as u64, take)
                    .ok_or("unreadable buffer")?,
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    fn query(name: &str) -> Vec<u8> {
        let mut msg = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            msg.push(label.len() as u8);
            msg.extend_from_slice(label.as_bytes());
        }
        msg.extend_from_slice(&[0, 0, 1, 0, 1]);
        msg
    }

    #[test]
    fn loopback_link_local_and_host_addresses_are_always_refused() {
        let host: HashSet<IpAddr> = [v4(10, 214, 0, 1), "fd00::2".parse().unwrap()].into();
        let mut policy = Policy::new(&[], vec![]).unwrap();
        for bad in [
            v4(127, 0, 0, 1),
            v4(127, 1, 2, 3),
            v4(0, 0, 0, 0),
            v4(169, 254, 169, 254),
            v4(224, 0, 0, 1),
            v4(255, 255, 255, 255),
            v4(10, 214, 0, 1),
            "::1".parse().unwrap(),
            "::".parse().unwrap(),
            "fe80::1".parse().unwrap(),
            "ff02::1".parse().unwrap(),
            "::ffff:127.0.0.1".parse().unwrap(),
            "::ffff:10.214.0.1".parse().unwrap(),
            "fd00::2".parse().unwrap(),
        ] {
            assert!(policy.check(bad, 80, None, &host).is_err(), "{bad}");
        }
        assert!(policy.check(v4(10, 213, 0, 2), 80, None, &host).is_ok());
        assert!(policy
            .check("2001:db8::1".parse().unwrap(), 80, None, &host)
            .is_ok());
    }

    #[test]
    fn allow_list_admits_listed_networks_only() {
        let host = HashSet::new();
        let allow = vec!["10.213.0.0/24".to_owned(), "192.0.2.7".to_owned()];
        let mut policy = Policy::new(&allow, vec![v4(10, 9, 9, 9)]).unwrap();
        assert!(policy.check(v4(10, 213, 0, 2), 443, None, &host).is_ok());
        assert!(policy.check(v4(192, 0, 2, 7), 443, None, &host).is_ok());
        assert!(policy.check(v4(192, 0, 2, 8), 443, None, &host).is_err());
        assert!(policy.check(v4(10, 213, 1, 2), 443, None, &host).is_err());
        // The name server: DNS queries for allowed names only, never TCP.
        let ns = v4(10, 9, 9, 9);
        assert!(policy.check(ns, 53, None, &host).is_err());
        assert!(policy
            .check(ns, 53, Some(&query("example.com")), &host)
            .is_err());
        assert!(policy.check(ns, 53, Some(b"junk"), &host).is_err());
    }

    #[test]
    fn dns_queries_for_allowed_names_pass() {
        let host = HashSet::new();
        let allow = vec!["example.com".to_owned(), "*.openai.com".to_owned()];
        let ns = v4(10, 9, 9, 9);
        let mut policy = Policy::new(&allow, vec![ns]).unwrap();
        assert!(policy
            .check(ns, 53, Some(&query("example.com")), &host)
            .is_ok());
        assert!(policy
            .check(ns, 53, Some(&query("EXAMPLE.com")), &host)
            .is_ok());
        assert!(policy
            .check(ns, 53, Some(&query("api.openai.com")), &host)
            .is_ok());
        assert!(policy
            .check(ns, 53, Some(&query("openai.com")), &host)
            .is_err());
        assert!(policy
            .check(ns, 53, Some(&query("www.example.com")), &host)
            .is_err());
        assert!(policy
            .check(ns, 53, Some(&query("evil.com")), &host)
            .is_err());
        assert!(policy
            .check(ns, 53, Some(&query("xopenai.com")), &host)
            .is_err());
        // A datagram to another port of the name server is not a DNS exception.
        assert!(policy
            .check(ns, 5353, Some(&query("example.com")), &host)
            .is_err());
    }

    #[test]
    fn allow_entries_are_validated() {
        assert_eq!(
            AllowRule::parse("Example.COM.").unwrap(),
            AllowRule::Host("example.com".into())
        );
        assert_eq!(
            AllowRule::parse("*.openai.com").unwrap(),
            AllowRule::Suffix("openai.com".into())
        );
        assert!(matches!(
            AllowRule::parse("10.0.0.0/8"),
            Ok(AllowRule::Net(_))
        ));
        for (bad, says) in [
            ("127.0.0.1", "loopback"),
            ("169.254.169.254", "link-local"),
            ("fe80::/10", "link-local"),
            ("10.0.0.1/8", "host bits"),
            ("example.com:443", "ports are not supported"),
            ("", "not an IP address"),
            ("a..b", "not an IP address"),
        ] {
            let err = AllowRule::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn dns_parser_refuses_what_is_not_a_plain_query() {
        assert_eq!(dns_question_names(&query("a.b")), Some(vec!["a.b".into()]));
        let mut answer = query("a.b");
        answer[2] |= 0x80;
        assert_eq!(dns_question_names(&answer), None);
        let mut pointer = query("a.b");
        pointer[12] = 0xc0;
        assert_eq!(dns_question_names(&pointer), None);
        assert_eq!(dns_question_names(&query("a.b")[..15]), None);
    }

    #[test]
    fn the_host_has_addresses() {
        let addrs = host_addresses();
        assert!(addrs.contains(&v4(127, 0, 0, 1)), "{addrs:?}");
    }
}
