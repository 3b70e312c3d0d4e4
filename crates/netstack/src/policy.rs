//! Where a guest may go. Pure: the stack asks [`Policy::check`] for every new flow.

use std::net::{IpAddr, Ipv4Addr};

/// Why a flow was refused. Stable strings: they go into the flow log and the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    /// 127.0.0.0/8: the host's own services.
    Loopback,
    /// An address of one of the host's own interfaces.
    HostAddress,
    /// 169.254.0.0/16, which holds the cloud metadata address.
    LinkLocal,
    /// 10/8, 172.16/12, 192.168/16: the user's LAN, VPNs, containers, other sandboxes.
    PrivateRange,
    /// 100.64.0.0/10 (carrier-grade NAT, Tailscale).
    SharedRange,
    /// 0/8, multicast, broadcast, 240/4 and other addresses that are never a destination.
    NotRoutable,
    /// An address of the sandbox network itself with no service on that port.
    NoSuchService,
    /// Egress is enabled: the only way out is the instance's credential proxy.
    EgressProxyOnly,
    /// The instance already has as many open flows as it may.
    TooManyFlows,
    /// The instance has an allow-list and this name (or an address no allowed name resolved
    /// to) is not on it.
    NotAllowed,
}

impl DenyReason {
    /// The reason as the flow log spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::Loopback => "host loopback",
            DenyReason::HostAddress => "an address of this host",
            DenyReason::LinkLocal => "link-local (cloud metadata)",
            DenyReason::PrivateRange => "private range",
            DenyReason::SharedRange => "shared address range",
            DenyReason::NotRoutable => "not a routable destination",
            DenyReason::NoSuchService => "no service at that sandbox address",
            DenyReason::EgressProxyOnly => "egress goes through the credential proxy only",
            DenyReason::TooManyFlows => "too many open connections",
            DenyReason::NotAllowed => "not on the instance's allow-list",
        }
    }
}

impl std::fmt::Display for DenyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The destinations a guest with direct egress may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Allow 10/8, 172.16/12, 192.168/16 and 100.64/10 (the user opted in). Loopback, the
    /// host's own addresses and link-local stay denied whatever this says.
    pub allow_private: bool,
}

impl Policy {
    /// Whether a guest may open a flow to `ip`. `host_addrs` are the addresses of the host's
    /// interfaces right now (see [`host_addresses`]).
    pub fn check(&self, ip: Ipv4Addr, host_addrs: &[IpAddr]) -> Result<(), DenyReason> {
        let [a, b, ..] = ip.octets();
        if ip.is_loopback() {
            return Err(DenyReason::Loopback);
        }
        if ip.is_unspecified() || a == 0 || ip.is_multicast() || ip.is_broadcast() || a >= 240 {
            return Err(DenyReason::NotRoutable);
        }
        if host_addrs.contains(&IpAddr::V4(ip)) {
            return Err(DenyReason::HostAddress);
        }
        if ip.is_link_local() {
            return Err(DenyReason::LinkLocal);
        }
        if !self.allow_private {
            if ip.is_private() {
                return Err(DenyReason::PrivateRange);
            }
            if a == 100 && (64..128).contains(&b) {
                return Err(DenyReason::SharedRange);
            }
        }
        Ok(())
    }
}

/// The addresses of the host's interfaces (every family), read now. An error reading them
/// yields an empty list: loopback and the private ranges are denied by prefix anyway.
pub fn host_addresses() -> Vec<IpAddr> {
    match if_addrs::get_if_addrs() {
        Ok(list) => list.into_iter().map(|i| i.ip()).collect(),
        Err(error) => {
            tracing::warn!(%error, "cannot list the host's addresses");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(p: &Policy, ip: &str, host: &[&str]) -> Result<(), DenyReason> {
        let host: Vec<IpAddr> = host.iter().map(|h| h.parse().unwrap()).collect();
        p.check(ip.parse().unwrap(), &host)
    }

    #[test]
    fn the_default_policy_denies_the_host_and_its_neighbours() {
        let p = Policy::default();
        let host = ["192.0.2.7", "198.51.100.1", "::1"];
        for (ip, why) in [
            ("127.0.0.1", DenyReason::Loopback),
            ("127.1.2.3", DenyReason::Loopback),
            ("198.51.100.1", DenyReason::HostAddress),
            ("192.0.2.7", DenyReason::HostAddress),
            ("169.254.169.254", DenyReason::LinkLocal),
            ("10.100.7.100", DenyReason::PrivateRange),
            ("10.55.0.10", DenyReason::PrivateRange),
            ("172.16.0.1", DenyReason::PrivateRange),
            ("172.31.255.1", DenyReason::PrivateRange),
            ("192.168.1.1", DenyReason::PrivateRange),
            ("100.64.0.1", DenyReason::SharedRange),
            ("100.127.255.255", DenyReason::SharedRange),
            ("0.0.0.0", DenyReason::NotRoutable),
            ("0.1.2.3", DenyReason::NotRoutable),
            ("224.0.0.251", DenyReason::NotRoutable),
            ("255.255.255.255", DenyReason::NotRoutable),
            ("240.0.0.1", DenyReason::NotRoutable),
        ] {
            assert_eq!(check(&p, ip, &host), Err(why), "{ip}");
        }
        for ip in [
            "203.0.113.10",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "198.51.100.2",
        ] {
            assert_eq!(check(&p, ip, &host), Ok(()), "{ip}");
        }
    }

    #[test]
    fn allowing_private_ranges_never_opens_the_host() {
        let p = Policy {
            allow_private: true,
        };
        let host = ["10.0.0.5"];
        assert_eq!(check(&p, "10.0.0.6", &host), Ok(()));
        assert_eq!(check(&p, "100.64.0.1", &host), Ok(()));
        assert_eq!(check(&p, "10.0.0.5", &host), Err(DenyReason::HostAddress));
        assert_eq!(check(&p, "127.0.0.1", &host), Err(DenyReason::Loopback));
        assert_eq!(
            check(&p, "169.254.169.254", &host),
            Err(DenyReason::LinkLocal)
        );
    }
}
