//! A box's network: what it may reach ([`NetworkSpec`]) and the host ports forwarded into it.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The box's network as upstream's `NetworkSpec` describes it: `mode` `enabled` (default) or
/// `disabled` (no network device, as `network_enabled=False`), and `allow_net`, the host
/// names, `*.domain` wildcards, addresses and CIDR networks the box may reach (empty: any
/// destination but the host's own addresses and link-local ones, which are never reachable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkSpec {
    pub mode: String,
    pub allow_net: Vec<String>,
}

impl Default for NetworkSpec {
    fn default() -> Self {
        NetworkSpec {
            mode: "enabled".into(),
            allow_net: Vec::new(),
        }
    }
}

/// Most `allow_net` entries.
pub const MAX_ALLOW_NET: usize = 256;

impl NetworkSpec {
    pub(super) fn validate(&self) -> Result<()> {
        let invalid = |msg: String| Err(Error::InvalidOption(msg));
        if self.mode != "enabled" && self.mode != "disabled" {
            return invalid(format!(
                "network.mode={:?}: use \"enabled\" or \"disabled\"",
                self.mode
            ));
        }
        if self.allow_net.len() > MAX_ALLOW_NET {
            return invalid(format!(
                "network.allow_net: {} entries given, at most {MAX_ALLOW_NET} are supported (use CIDR networks or *.domain wildcards)",
                self.allow_net.len()
            ));
        }
        for entry in &self.allow_net {
            crate::egress::AllowRule::parse(entry).map_err(Error::InvalidOption)?;
        }
        Ok(())
    }
}

/// `(host_port, guest_port, protocol)`: connections to 127.0.0.1:host_port on the host reach
/// guest_port in the box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortForward {
    pub host_port: u16,
    pub guest_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// Checks the port forwards of a box: ports in range, protocols, no host port twice.
pub(super) fn validate_ports(ports: &[PortForward]) -> Result<()> {
    let invalid = |msg: String| Err(Error::InvalidOption(msg));
    let mut host_ports = std::collections::HashSet::new();
    for port in ports {
        if port.host_port == 0 || port.guest_port == 0 {
            return invalid(format!(
                "ports: ({}, {}, {:?}): ports are 1 to 65535",
                port.host_port, port.guest_port, port.protocol
            ));
        }
        if port.protocol != "tcp" && port.protocol != "udp" {
            return invalid(format!(
                "ports: protocol {:?} is not supported: use \"tcp\" or \"udp\"",
                port.protocol
            ));
        }
        if !host_ports.insert((port.host_port, port.protocol.clone())) {
            return invalid(format!(
                "ports: host port {}/{} is forwarded twice",
                port.host_port, port.protocol
            ));
        }
    }
    Ok(())
}
