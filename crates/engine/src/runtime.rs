//! The runtime: what the engine knows about running VMs, by instance id — the VMM handle, the
//! live guest-agent link, and the boot markers already seen for the current run. A VM's end
//! drops its agent link with it, so no link outlives the VM it spoke to.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use hypedeck_hypervisor::Vm;

use crate::agent::AgentLink;
use crate::derive::BootMarkers;
use crate::lock;

/// Running VMs and what hangs off them.
#[derive(Debug, Default)]
pub(crate) struct Runtime {
    vms: Mutex<HashMap<String, Arc<dyn Vm>>>,
    agents: Mutex<HashMap<String, Arc<AgentLink>>>,
    /// One connect at a time per instance: a VM's agent port takes one link (a second
    /// connect while the first is being made would fail with EAGAIN).
    connecting: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Boot markers of a run, by instance id: the run's log offset, how far its console log
    /// was scanned, and what was found. Each byte is scanned once; once a run showed both
    /// markers its log is not read again.
    markers: Mutex<HashMap<String, MarkerScan>>,
    /// Whether an instance has a saved snapshot, as last seen on disk; dropped whenever this
    /// engine saves or removes one (only this engine writes them).
    snapshots: Mutex<HashMap<String, bool>>,
    /// Counts snapshot changes: a disk check that raced a change is not remembered.
    snapshot_changes: std::sync::atomic::AtomicU64,
    /// Instances whose create is under way (waiting for the image, building disks, booting):
    /// listed as Created, not Stopped, until the create commits or is undone.
    creating: Mutex<HashSet<String>>,
}

/// How far one run's console log was scanned for boot markers.
#[derive(Debug, Clone, Copy)]
struct MarkerScan {
    log_offset: u64,
    scanned: u64,
    markers: BootMarkers,
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

    /// Marks (or unmarks) the instance's create as under way.
    pub(crate) fn set_creating(&self, id: &str, creating: bool) {
        if creating {
            lock(&self.creating).insert(id.to_string());
        } else {
            lock(&self.creating).remove(id);
        }
    }

    /// Whether the instance's create is under way.
    pub(crate) fn is_creating(&self, id: &str) -> bool {
        lock(&self.creating).contains(id)
    }

    /// Forgets everything about a deleted instance.
    pub(crate) fn forget(&self, id: &str) {
        self.ended(id);
        self.set_creating(id, false);
        lock(&self.markers).remove(id);
        self.snapshot_changed(id);
    }

    /// Whether the instance has a snapshot: remembered, or `on_disk()` once.
    pub(crate) fn has_snapshot(&self, id: &str, on_disk: impl FnOnce() -> bool) -> bool {
        use std::sync::atomic::Ordering;
        if let Some(known) = lock(&self.snapshots).get(id) {
            return *known;
        }
        let before = self.snapshot_changes.load(Ordering::Acquire);
        let found = on_disk();
        let mut known = lock(&self.snapshots);
        if self.snapshot_changes.load(Ordering::Acquire) == before {
            known.insert(id.to_string(), found);
        }
        found
    }

    /// The instance's snapshot was saved or removed: look at the disk again next time.
    pub(crate) fn snapshot_changed(&self, id: &str) {
        let mut known = lock(&self.snapshots);
        self.snapshot_changes
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        known.remove(id);
    }

    /// Ids of the instances with a VMM.
    pub(crate) fn running_ids(&self) -> Vec<String> {
        lock(&self.vms).keys().cloned().collect()
    }

    /// The run's console output moved (its log was rotated): the run now starts at `to`,
    /// with the markers already found kept.
    pub(crate) fn rebase_markers(&self, id: &str, from: u64, to: u64) {
        let mut markers = lock(&self.markers);
        if let Some(scan) = markers.get_mut(id).filter(|s| s.log_offset == from) {
            scan.log_offset = to;
            scan.scanned = to;
        }
    }

    /// The instance's open agent link.
    pub(crate) fn agent(&self, id: &str) -> Option<Arc<AgentLink>> {
        lock(&self.agents)
            .get(id)
            .filter(|l| !l.is_closed())
            .cloned()
    }

    /// The lock a connect to the instance's agent holds.
    pub(crate) fn connect_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.connecting)
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    /// Keeps `link` as the instance's agent link.
    pub(crate) fn set_agent(&self, id: &str, link: Arc<AgentLink>) {
        lock(&self.agents).insert(id.to_string(), link);
    }

    /// The boot markers of the run whose console output starts at `offset`, scanning only
    /// what `serial_log` gained since the last call.
    pub(crate) fn markers(
        &self,
        id: &str,
        offset: u64,
        serial_log: &std::path::Path,
    ) -> BootMarkers {
        let known = lock(&self.markers)
            .get(id)
            .filter(|s| s.log_offset == offset)
            .copied();
        let mut scan = known.unwrap_or(MarkerScan {
            log_offset: offset,
            scanned: offset,
            markers: BootMarkers::default(),
        });
        if scan.markers.complete() {
            return scan.markers;
        }
        // A log that shrank was rotated or cut: start this run's scan again.
        if std::fs::metadata(serial_log).is_ok_and(|m| m.len() < scan.scanned) {
            scan.scanned = offset;
        }
        scan.scanned = scan.markers.scan(serial_log, scan.scanned);
        lock(&self.markers).insert(id.to_string(), scan);
        scan.markers
    }
}
