//! What a box may reach: the always-refused destinations (every host address, loopback,
//! link-local, multicast), the allow-list (`NetworkSpec.allow_net`) and the DNS questions
//! allowed names may ask.

use std::collections::HashSet;
use std::net::{IpAddr, ToSocketAddrs};
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

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

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
