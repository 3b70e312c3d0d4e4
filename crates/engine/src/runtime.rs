//! The runtime: what the engine knows about running VMs, by instance id — the VMM handle, the
//! live guest-agent link, and the boot markers already seen for the current run. A VM's end
//! drops its agent link with it, so no link outlives the VM it spoke to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use hypedeck_hypervisor::Vm;

use crate::agent::AgentLink;
use crate::derive::BootMarkers;

/// Running VMs and what hangs off them.
#[derive(Debug, Default)]
pub(crate) struct Runtime {
    vms: Mutex<HashMap<String, Arc<dyn Vm>>>,
    agents: Mutex<HashMap<String, Arc<AgentLink>>>,
    /// Boot markers of a run, by instance id and the run's log offset: once a run showed
    /// both, its console log is not read again.
    markers: Mutex<HashMap<String, (u64, BootMarkers)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Only whole inserts and removes happen under these locks: a poisoned one is consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Runtime {
    /// The instance's VMM, if this engine started or re-attached one.
    pub(crate) fn vm(&self, id: &str) -> Option<Arc<dyn Vm>> {
        lock(&self.vms).get(id).cloned()
    }

    /// Records the instance's VMM (boot, restore, re-attach after an engine restart). An
    /// agent link to an earlier VM of the instance is dropped.
    pub(crate) fn started(&self, id: &str, vm: Arc<dyn Vm>) {
        lock(&self.agents).remove(id);
        lock(&self.vms).insert(id.to_string(), vm);
    }

    /// Forgets the instance's VMM and its agent link (stopped, saved, vanished, or a start
    /// that failed). Returns the VMM, if there was one.
    pub(crate) fn ended(&self, id: &str) -> Option<Arc<dyn Vm>> {
        lock(&self.agents).remove(id);
        lock(&self.vms).remove(id)
    }

    /// Forgets everything about a deleted instance.
    pub(crate) fn forget(&self, id: &str) {
        self.ended(id);
        lock(&self.markers).remove(id);
    }

    /// The instance's open agent link.
    pub(crate) fn agent(&self, id: &str) -> Option<Arc<AgentLink>> {
        lock(&self.agents)
            .get(id)
            .filter(|l| !l.is_closed())
            .cloned()
    }

    /// Keeps `link` as the instance's agent link.
    pub(crate) fn set_agent(&self, id: &str, link: Arc<AgentLink>) {
        lock(&self.agents).insert(id.to_string(), link);
    }

    /// The complete boot markers seen for the run whose console output starts at `offset`.
    pub(crate) fn markers(&self, id: &str, offset: u64) -> Option<BootMarkers> {
        lock(&self.markers)
            .get(id)
            .filter(|(o, _)| *o == offset)
            .map(|(_, m)| *m)
    }

    /// Remembers a run's complete boot markers.
    pub(crate) fn set_markers(&self, id: &str, offset: u64, markers: BootMarkers) {
        lock(&self.markers).insert(id.to_string(), (offset, markers));
    }
}
