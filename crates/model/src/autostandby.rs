//! Auto-standby (upstream's `AutoStandbyPolicy` and `AutoStandbyStatus`): the policy as upstream
//! normalizes it (`lib/autostandby/policy.go`), and the status JSON.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::validate::Rejection;

/// A policy in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoStandbyPolicy {
    /// Whether it is on.
    pub enabled: bool,
    /// How long without activity before standby (set when enabled).
    pub idle_timeout: Duration,
    /// Client ranges whose connections do not keep the instance awake: `(network, prefix)`.
    pub ignore_source_cidrs: Vec<(IpAddr, u8)>,
    /// Guest ports whose connections do not keep the instance awake.
    pub ignore_destination_ports: Vec<u16>,
}

impl AutoStandbyPolicy {
    /// Reads a stored (normalized) policy; `None` for none or one that does not parse.
    pub fn from_value(value: &serde_json::Value) -> Option<AutoStandbyPolicy> {
        let enabled = value.get("enabled")?.as_bool()?;
        if !enabled {
            return Some(AutoStandbyPolicy {
                enabled,
                idle_timeout: Duration::ZERO,
                ignore_source_cidrs: Vec::new(),
                ignore_destination_ports: Vec::new(),
            });
        }
        let idle_timeout = crate::duration::parse(value.get("idle_timeout")?.as_str()?)?;
        let strings = |key: &str| -> Vec<String> {
            value
                .get(key)
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        Some(AutoStandbyPolicy {
            enabled,
            idle_timeout,
            ignore_source_cidrs: strings("ignore_source_cidrs")
                .iter()
                .filter_map(|c| parse_cidr(c).ok())
                .collect(),
            ignore_destination_ports: value
                .get("ignore_destination_ports")
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|p| p.as_u64().and_then(|p| u16::try_from(p).ok()))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// Whether a connection from `source` to guest port `port` keeps the instance awake.
    pub fn counts(&self, source: IpAddr, port: u16) -> bool {
        !self.ignore_destination_ports.contains(&port)
            && !self
                .ignore_source_cidrs
                .iter()
                .any(|(net, prefix)| contains(*net, *prefix, source))
    }
}

/// Upstream's `NormalizePolicy`: a disabled policy is `{"enabled": false}`; an enabled one
/// needs a positive Go duration (stored as Go prints it), its CIDRs masked, deduplicated and
/// sorted, its ports deduplicated and sorted. Errors are `400 invalid_request` with upstream's
/// texts (`invalid request: auto_standby.idle_timeout is required when enabled`).
pub fn normalize(value: &serde_json::Value) -> Result<serde_json::Value, Rejection> {
    let bad = |text: String| Rejection::invalid_request(text);
    let enabled = value
        .get("enabled")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    if !enabled {
        return Ok(serde_json::json!({"enabled": false}));
    }
    let timeout = value
        .get("idle_timeout")
        .and_then(|v| v.as_str())
        .map(str::trim)
        .unwrap_or("");
    if timeout.is_empty() {
        return Err(bad(
            "auto_standby.idle_timeout is required when enabled".into()
        ));
    }
    let Some(parsed) = crate::duration::parse_signed(timeout) else {
        return Err(bad(format!(
            "auto_standby.idle_timeout must be a valid duration: time: invalid duration {:?}",
            timeout
        )));
    };
    if parsed.negative || parsed.magnitude.is_zero() {
        return Err(bad("auto_standby.idle_timeout must be positive".into()));
    }
    let mut out = serde_json::json!({
        "enabled": true,
        "idle_timeout": crate::duration::format(parsed.magnitude),
    });
    if let Some(cidrs) = value.get("ignore_source_cidrs").and_then(|v| v.as_array()) {
        let mut canonical: Vec<(IpAddr, u8)> = Vec::new();
        for raw in cidrs.iter().filter_map(|c| c.as_str()).map(str::trim) {
            if raw.is_empty() {
                continue;
            }
            let prefix = parse_cidr(raw).map_err(|why| {
                bad(format!(
                    "auto_standby.ignore_source_cidrs contains invalid CIDR {raw:?}: {why}"
                ))
            })?;
            if !canonical.contains(&prefix) {
                canonical.push(prefix);
            }
        }
        let mut texts: Vec<String> = canonical
            .iter()
            .map(|(net, len)| format!("{net}/{len}"))
            .collect();
        texts.sort();
        if !texts.is_empty() {
            out["ignore_source_cidrs"] = serde_json::json!(texts);
        }
    }
    if let Some(ports) = value
        .get("ignore_destination_ports")
        .and_then(|v| v.as_array())
    {
        let mut list: Vec<u16> = Vec::new();
        for port in ports {
            let port = port.as_u64().unwrap_or(0);
            if port == 0 {
                return Err(bad(
                    "auto_standby.ignore_destination_ports must not contain 0".into(),
                ));
            }
            let port = u16::try_from(port).map_err(|_| {
                Rejection::new(
                    crate::ErrorCode::InvalidAutoStandby,
                    "auto_standby.ignore_destination_ports must be between 1 and 65535",
                )
            })?;
            if !list.contains(&port) {
                list.push(port);
            }
        }
        list.sort_unstable();
        if !list.is_empty() {
            out["ignore_destination_ports"] = serde_json::json!(list);
        }
    }
    Ok(out)
}

/// `a.b.c.d/n` or an IPv6 prefix, masked to its network.
fn parse_cidr(text: &str) -> Result<(IpAddr, u8), String> {
    let (addr, len) = text
        .split_once('/')
        .ok_or_else(|| format!("netip.ParsePrefix({text:?}): no '/'"))?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("netip.ParsePrefix({text:?}): bad address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| *l <= max)
        .ok_or_else(|| format!("netip.ParsePrefix({text:?}): bad bits after slash"))?;
    Ok((mask(addr, len), len))
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a) & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(bits.into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a) & u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(bits.into())
        }
    }
}

fn contains(net: IpAddr, len: u8, addr: IpAddr) -> bool {
    // An IPv4 client over an IPv6 socket is still that IPv4 client.
    let addr = match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    };
    net.is_ipv4() == addr.is_ipv4() && mask(addr, len) == net
}

/// Upstream's `AutoStandbyStatus`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoStandbyStatus {
    /// Whether this host can auto-standby.
    pub supported: bool,
    /// Whether the instance has a policy.
    pub configured: bool,
    /// Whether its policy is on.
    pub enabled: bool,
    /// Whether it may go to standby now (Running, with a network).
    pub eligible: bool,
    /// `unsupported`, `disabled`, `ineligible`, `active`, `idle_countdown`,
    /// `ready_for_standby`, `standby_requested` or `error`.
    pub status: String,
    /// Why: `policy_missing`, `policy_disabled`, `instance_not_running`, `network_disabled`,
    /// `active_inbound_connections`, `idle_timeout_not_elapsed`, `ready_for_standby`, ….
    pub reason: String,
    /// Connections keeping it awake now.
    pub active_inbound_connections: i64,
    /// The policy's timeout (Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    /// Since when it has been idle.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub idle_since: Option<time::OffsetDateTime>,
    /// The last activity seen.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_inbound_activity_at: Option<time::OffsetDateTime>,
    /// When standby is due, while counting down.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub next_standby_at: Option<time::OffsetDateTime>,
    /// A hold in force.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub hold_until: Option<time::OffsetDateTime>,
    /// Time left before standby (Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub countdown_remaining: Option<String>,
    /// How activity is observed.
    pub tracking_mode: String,
    /// Hypedeck extension: what keeps it awake now, by kind (`inbound`, `outbound`, `exec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<AutoStandbyActivity>,
    /// Hypedeck extension: whether auto-standby put it to sleep (a connection to a forwarded
    /// port or an exec wakes it).
    #[serde(default)]
    pub asleep: bool,
}

/// What keeps an instance awake (Hypedeck extension of [`AutoStandbyStatus`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AutoStandbyActivity {
    /// Open connections to forwarded ports that count under the policy.
    pub inbound: i64,
    /// Open TCP connections the guest made (to the internet or through the proxy).
    pub outbound: i64,
    /// Exec sessions.
    pub exec: i64,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn policies_normalize_as_upstream_does() {
        assert_eq!(
            normalize(&json!({"enabled": false, "idle_timeout": "x"})).unwrap(),
            json!({"enabled": false})
        );
        assert_eq!(
            normalize(&json!({"enabled": true, "idle_timeout": "90s",
                "ignore_source_cidrs": ["10.1.2.3/8", " 10.0.0.0/8", "", "fd00::1/8"],
                "ignore_destination_ports": [22, 9000, 22]}))
            .unwrap(),
            json!({"enabled": true, "idle_timeout": "1m30s",
                "ignore_source_cidrs": ["10.0.0.0/8", "fd00::/8"],
                "ignore_destination_ports": [22, 9000]})
        );
        let message = |v| normalize(&v).unwrap_err().message;
        assert_eq!(
            message(json!({"enabled": true})),
            "invalid request: auto_standby.idle_timeout is required when enabled"
        );
        assert_eq!(
            message(json!({"enabled": true, "idle_timeout": "0s"})),
            "invalid request: auto_standby.idle_timeout must be positive"
        );
        assert!(
            message(json!({"enabled": true, "idle_timeout": "soon"}))
                .starts_with("invalid request: auto_standby.idle_timeout must be a valid duration")
        );
        assert!(message(json!({"enabled": true, "idle_timeout": "1m", "ignore_source_cidrs": ["10.0.0.0"]}))
            .starts_with("invalid request: auto_standby.ignore_source_cidrs contains invalid CIDR \"10.0.0.0\""));
        assert_eq!(
            message(
                json!({"enabled": true, "idle_timeout": "1m", "ignore_destination_ports": [0]})
            ),
            "invalid request: auto_standby.ignore_destination_ports must not contain 0"
        );
    }

    #[test]
    fn ignore_rules_decide_what_keeps_an_instance_awake() {
        let p = AutoStandbyPolicy::from_value(&json!({"enabled": true, "idle_timeout": "5m",
            "ignore_source_cidrs": ["192.168.0.0/16"], "ignore_destination_ports": [9000]}))
        .unwrap();
        assert_eq!(p.idle_timeout, Duration::from_secs(300));
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(p.counts(local, 8080));
        assert!(!p.counts(local, 9000));
        assert!(!p.counts("192.168.4.2".parse().unwrap(), 8080));
        assert!(!p.counts("::ffff:192.168.4.2".parse().unwrap(), 8080));
        assert!(p.counts("192.169.0.1".parse().unwrap(), 8080));
        assert_eq!(
            AutoStandbyPolicy::from_value(&json!({"idle_timeout": "5m"})),
            None
        );
    }
}
