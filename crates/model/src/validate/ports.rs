//! Port forwards (a Hypedeck extension): `ports` into [`PortForward`]s.

use std::collections::BTreeSet;

use super::Rejection;
use crate::instance::{PortForward, PortProtocol};
use crate::request::PortMapping;

/// Port forwards: ports in 1–65535, a known protocol, each host port (per protocol) once, and a
/// network to forward into.
pub fn check_ports(
    ports: &[PortMapping],
    network_enabled: bool,
) -> Result<Vec<PortForward>, Rejection> {
    if !ports.is_empty() && !network_enabled {
        return Err(Rejection::invalid_request(
            "ports require network.enabled=true",
        ));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(ports.len());
    for (i, p) in ports.iter().enumerate() {
        let port = |what: &str, value: i64| {
            u16::try_from(value)
                .ok()
                .filter(|v| *v != 0)
                .ok_or_else(|| {
                    Rejection::invalid_request(format!(
                        "ports[{i}].{what} {value} is not a port (1-65535)"
                    ))
                })
        };
        let host_port = port("host_port", p.host_port)?;
        let guest_port = port("guest_port", p.guest_port)?;
        let protocol = match p.protocol.as_deref() {
            None | Some("") | Some("tcp") => PortProtocol::Tcp,
            Some("udp") => PortProtocol::Udp,
            Some(other) => {
                return Err(Rejection::invalid_request(format!(
                    "ports[{i}].protocol {other:?} must be tcp or udp"
                )));
            }
        };
        if !seen.insert((host_port, protocol)) {
            return Err(Rejection::invalid_request(format!(
                "ports[{i}]: host port {host_port}/{} is declared twice",
                protocol.as_str()
            )));
        }
        out.push(PortForward {
            host_port,
            guest_port,
            protocol,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::validate::test_support::{create, rejected};

    #[test]
    fn ports_are_validated_and_default_to_tcp() {
        let spec = create(json!({"name": "web", "image": "alpine", "ports": [
            {"host_port": 8080, "guest_port": 80},
            {"host_port": 8080, "guest_port": 53, "protocol": "udp"}
        ]}))
        .unwrap();
        assert_eq!(
            spec.ports,
            vec![
                PortForward {
                    host_port: 8080,
                    guest_port: 80,
                    protocol: PortProtocol::Tcp
                },
                PortForward {
                    host_port: 8080,
                    guest_port: 53,
                    protocol: PortProtocol::Udp
                },
            ]
        );
        let cases = [
            (
                json!([{"host_port": 0, "guest_port": 80}]),
                "invalid request: ports[0].host_port 0 is not a port (1-65535)",
            ),
            (
                json!([{"host_port": 80, "guest_port": 65536}]),
                "invalid request: ports[0].guest_port 65536 is not a port (1-65535)",
            ),
            (
                json!([{"host_port": 1, "guest_port": 1}, {"host_port": 1, "guest_port": 2}]),
                "invalid request: ports[1]: host port 1/tcp is declared twice",
            ),
        ];
        for (ports, message) in cases {
            let (code, got) = rejected(json!({"name": "web", "image": "alpine", "ports": ports}));
            assert_eq!((code.as_str(), got.as_str()), ("invalid_request", message));
        }
        let (_, message) = rejected(
            json!({"name": "web", "image": "alpine", "network": {"enabled": false},
            "ports": [{"host_port": 8080, "guest_port": 80}]}),
        );
        assert_eq!(
            message,
            "invalid request: ports require network.enabled=true"
        );
        // The schema catches shapes: a missing guest_port, an unknown protocol.
        let (code, message) =
            rejected(json!({"name": "web", "image": "alpine", "ports": [{"host_port": 8080}]}));
        assert_eq!(code, "Bad Request");
        assert!(message.contains("guest_port"), "{message}");
        let (code, _) = rejected(
            json!({"name": "web", "image": "alpine", "ports": [{"host_port": 1, "guest_port": 1, "protocol": "sctp"}]}),
        );
        assert_eq!(code, "Bad Request");
    }
}
