//! Forwarded ports: before a VM binds its host ports (boot, restore), make sure no other live
//! instance forwards the same one and that nothing else on the host holds it, so the user gets
//! a 409 `port_in_use` naming the port (and the instance) instead of a failed VMM start.

use std::net::{Ipv4Addr, TcpListener, UdpSocket};

use hypedeck_model::{ErrorCode, InstanceState, PortForward, PortProtocol, Rejection};
use hypedeck_store::InstanceRecord;

use crate::{Engine, EngineError};

/// Whether an instance in `state` may have a VMM holding its forwarded ports (`Unknown`: the
/// VMM could not be asked, so it may well be there).
fn holds_ports(state: InstanceState) -> bool {
    state.has_vmm() || state == InstanceState::Unknown
}

fn in_use(port: &PortForward, why: &str) -> EngineError {
    EngineError::Rejected(Rejection::new(
        ErrorCode::PortInUse,
        format!(
            "host port {}/{} is already in use{why}",
            port.host_port,
            port.protocol.as_str()
        ),
    ))
}

/// Whether `port` can be bound on the host's loopback right now.
fn bindable(port: &PortForward) -> bool {
    let addr = (Ipv4Addr::LOCALHOST, port.host_port);
    match port.protocol {
        PortProtocol::Tcp => TcpListener::bind(addr).is_ok(),
        PortProtocol::Udp => UdpSocket::bind(addr).is_ok(),
    }
}

impl Engine {
    /// Refuses with 409 `port_in_use` when one of `record`'s host ports is forwarded by another
    /// instance whose VMM runs, or is held by another program on 127.0.0.1.
    pub(crate) async fn check_ports_free(
        &self,
        record: &InstanceRecord,
    ) -> Result<(), EngineError> {
        if record.ports.is_empty() || !record.network.enabled {
            return Ok(());
        }
        for mut other in self.records()? {
            if other.id == record.id || !other.network.enabled {
                continue;
            }
            let clash = record.ports.iter().find(|p| {
                other
                    .ports
                    .iter()
                    .any(|q| q.host_port == p.host_port && q.protocol == p.protocol)
            });
            let Some(port) = clash.copied() else {
                continue;
            };
            if holds_ports(self.observe(&mut other).await.state) {
                return Err(in_use(&port, &format!(" by instance {:?}", other.name)));
            }
        }
        // Ports held for the instance while it slept are its own.
        let parked = self.networks.parked_ports(&record.id);
        let held =
            |p: &PortForward| p.protocol == PortProtocol::Tcp && parked.contains(&p.host_port);
        if let Some(port) = record.ports.iter().find(|p| !held(p) && !bindable(p)) {
            return Err(in_use(port, " on 127.0.0.1 by another program"));
        }
        Ok(())
    }
}
