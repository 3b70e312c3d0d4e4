//! [`Instance`]: one attached instance as its connections see it (its rules, its host check, its
//! tasks), and [`Shared`], what every instance's connections share.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::ca::CertificateAuthority;
use crate::rules::RuleSet;
use crate::tasks::InstanceTasks;
use crate::upstream::Dialer;
use crate::usage::UsageSink;

/// What every instance's connections share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) ca: CertificateAuthority,
    pub(crate) dialer: Dialer,
    pub(crate) usage: Option<Arc<dyn UsageSink>>,
    pub(crate) fingerprints: crate::Fingerprinter,
}

/// Decides whether an instance may reach a host (name or address, canonical), beyond the
/// proxy's own destination rules: the engine's allow-list check, which also records refusals.
pub type HostCheck = Arc<dyn Fn(&str, u16) -> bool + Send + Sync>;

/// One attached instance, as its connections see it.
#[derive(Debug)]
pub(crate) struct Instance {
    pub(crate) id: String,
    pub(crate) check: std::sync::RwLock<Option<HostCheckSlot>>,
    pub(crate) rules: ArcSwap<RuleSet>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) tasks: InstanceTasks,
}

/// A [`HostCheck`] in an [`Instance`] (for `Debug`).
#[derive(Clone)]
pub(crate) struct HostCheckSlot(pub(crate) HostCheck);

impl std::fmt::Debug for HostCheckSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostCheck")
    }
}

impl Instance {
    /// Whether the engine lets this instance reach `host:port` (no check set: yes).
    pub(crate) fn may_reach(&self, host: &str, port: u16) -> bool {
        let slot = self.check.read().unwrap_or_else(|p| p.into_inner());
        slot.as_ref().is_none_or(|c| (c.0)(host, port))
    }
}
