//! Wiring instances to the host egress proxy: each instance is attached in-process (its
//! sandbox network hands the guest's proxy connections over, see `network.rs`), with rules
//! built from the credential policies and the real values in the keychain, swapped atomically
//! on rotation.

use std::collections::BTreeMap;
use std::sync::Arc;

use hypedeck_egress::{EgressProxy, InjectRule};
use hypedeck_secrets::Sensitive;
use hypedeck_store::InstanceRecord;

use crate::{Engine, EngineError};

/// The port the guest dials for the proxy (upstream's), on the `.100` address of its subnet.
pub const GUEST_PROXY_PORT: u16 = hypedeck_egress::DEFAULT_PROXY_PORT;

/// The guest-side proxy address for a subnet gateway like `10.100.7.2`.
pub fn guest_proxy_addr(gateway: &str) -> String {
    let prefix = gateway.rsplit_once('.').map(|(p, _)| p).unwrap_or(gateway);
    format!("{prefix}.100:{GUEST_PROXY_PORT}")
}

/// Set to `1`, the engine also serves each egress instance's proxy on a loopback port
/// (recorded as `network.proxy_port`), for tests and benchmarks that drive the proxy from the
/// host. Never needed by a sandbox: guests reach their proxy through their own stack.
pub const TEST_LISTENER_ENV: &str = "HYPEDECK_EGRESS_TEST_LISTENER";

/// Header rules for an instance: for each credential (sorted) and each inject entry,
/// `format` with `${value}` replaced by the real value. Credentials without a value are
/// skipped, like upstream.
pub fn build_rules(
    record: &InstanceRecord,
    values: &BTreeMap<String, Sensitive<String>>,
) -> Vec<InjectRule> {
    let mut rules = Vec::new();
    for (name, policy) in &record.credentials {
        let Some(real) = values.get(&policy.source.env) else {
            continue;
        };
        if real.expose().trim().is_empty() {
            continue;
        }
        for inject in &policy.inject {
            rules.push(InjectRule {
                header: inject.as_.header.clone(),
                value: Sensitive::new(inject.as_.format.replace("${value}", real.expose())),
                hosts: inject.hosts.clone(),
                credential: name.clone(),
                secret: real.clone(),
            });
        }
    }
    rules
}

impl Engine {
    pub(crate) fn egress_proxy(&self) -> Option<Arc<EgressProxy>> {
        self.guest.as_ref().and_then(|g| g.egress.clone())
    }

    /// Attaches the instance to the proxy and loads its rules. Returns whether the instance
    /// has egress through the proxy.
    pub(crate) async fn register_egress(
        &self,
        record: &mut InstanceRecord,
    ) -> Result<bool, EngineError> {
        if !record.network.egress.enabled {
            return Ok(false);
        }
        let Some(proxy) = self.egress_proxy() else {
            return Err(EngineError::Dependency(
                "the egress proxy is not running".into(),
            ));
        };
        proxy.attach(&record.id);
        record.network.proxy_port = if std::env::var(TEST_LISTENER_ENV).is_ok_and(|v| v == "1") {
            let addr = proxy
                .listen(&record.id, record.network.proxy_port)
                .await
                .map_err(|source| EngineError::Egress {
                    what: "open the test listener",
                    source,
                })?;
            Some(addr.port())
        } else {
            None
        };
        self.vault.refresh_references(record).await;
        self.set_rules(&proxy, record, "load the instance's rules")
            .await?;
        Ok(true)
    }

    /// Rebuilds an attached instance's proxy rules from the keychain (a rotation, or its
    /// rollback). Nothing to do without egress.
    pub(crate) async fn reload_egress_rules(
        &self,
        record: &InstanceRecord,
    ) -> Result<(), EngineError> {
        match self.egress_proxy() {
            Some(proxy) if record.network.egress.enabled => {
                self.set_rules(&proxy, record, "swap the instance's rules")
                    .await
            }
            _ => Ok(()),
        }
    }

    /// The instance's rules, built from its credential values, swapped into the proxy.
    async fn set_rules(
        &self,
        proxy: &EgressProxy,
        record: &InstanceRecord,
        what: &'static str,
    ) -> Result<(), EngineError> {
        let values = self.vault.read(record).await?;
        proxy
            .set_rules(&record.id, build_rules(record, &values))
            .map_err(|source| EngineError::Egress { what, source })
    }

    /// Forgets the instance's listener and rules (stop, standby, delete).
    pub(crate) async fn unregister_egress(&self, id: &str) {
        if let Some(proxy) = self.egress_proxy() {
            proxy.detach(id).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_proxy_address_is_inside_the_subnet() {
        assert_eq!(guest_proxy_addr("10.100.7.2"), "10.100.7.100:18080");
    }
}
