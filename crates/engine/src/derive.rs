//! State derivation: VMM state + boot markers + snapshot presence -> `InstanceState`.

use std::path::Path;

use hypedeck_hypervisor::VmmState;
use hypedeck_model::InstanceState;

/// Serial-log marker printed by guest init when the program starts.
pub const PROGRAM_START_MARKER: &str = "HYPEMAN-PROGRAM-START";
/// Serial-log marker printed when the guest agent is ready.
pub const AGENT_READY_MARKER: &str = "HYPEMAN-AGENT-READY";

/// Which boot markers the serial log shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BootMarkers {
    /// The program was launched.
    pub program_started: bool,
    /// The guest agent answered.
    pub agent_ready: bool,
}

impl BootMarkers {
    /// Scans a serial log from byte `offset` (where the current run's output starts). A
    /// missing log means no markers.
    pub fn read_from(serial_log: &Path, offset: u64) -> BootMarkers {
        let Some(text) = crate::lifecycle::log_since(serial_log, offset, u64::MAX) else {
            return BootMarkers::default();
        };
        BootMarkers {
            program_started: text.contains(PROGRAM_START_MARKER),
            agent_ready: text.contains(AGENT_READY_MARKER),
        }
    }

    /// Both markers are there: nothing about this run's boot can change any more.
    pub fn complete(&self) -> bool {
        self.program_started && self.agent_ready
    }
}

/// Derives the instance state from what the VMM says and what the guest printed
/// (upstream `deriveRunningState`).
pub fn derive_state(
    vmm: Option<VmmState>,
    markers: BootMarkers,
    skip_guest_agent: bool,
    has_snapshot: bool,
) -> InstanceState {
    match vmm {
        None if has_snapshot => InstanceState::Standby,
        None => InstanceState::Stopped,
        Some(VmmState::Created) => InstanceState::Created,
        Some(VmmState::Paused) => InstanceState::Paused,
        Some(VmmState::Shutdown) => InstanceState::Shutdown,
        Some(VmmState::Running) => {
            if !markers.program_started {
                InstanceState::Initializing
            } else if skip_guest_agent || markers.agent_ready {
                InstanceState::Running
            } else {
                InstanceState::Initializing
            }
        }
    }
}

/// Whether a directory exists and has at least one entry.
pub fn dir_has_entries(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivation_table() {
        let none = BootMarkers::default();
        let started = BootMarkers {
            program_started: true,
            agent_ready: false,
        };
        let ready = BootMarkers {
            program_started: true,
            agent_ready: true,
        };
        use InstanceState as S;
        let cases = [
            (None, none, false, false, S::Stopped),
            (None, none, false, true, S::Standby),
            (Some(VmmState::Created), none, false, false, S::Created),
            (Some(VmmState::Paused), ready, false, false, S::Paused),
            (Some(VmmState::Shutdown), ready, false, false, S::Shutdown),
            (Some(VmmState::Running), none, false, false, S::Initializing),
            (
                Some(VmmState::Running),
                started,
                false,
                false,
                S::Initializing,
            ),
            (Some(VmmState::Running), started, true, false, S::Running),
            (Some(VmmState::Running), ready, false, false, S::Running),
        ];
        for (vmm, markers, skip, snapshot, want) in cases {
            assert_eq!(
                derive_state(vmm, markers, skip, snapshot),
                want,
                "{vmm:?} {markers:?}"
            );
        }
    }

    #[test]
    fn markers_are_read_from_the_serial_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        assert_eq!(BootMarkers::read_from(&log, 0), BootMarkers::default());
        std::fs::write(
            &log,
            "boot\nHYPEMAN-PROGRAM-START ts=2026-01-01T00:00:00Z mode=exec\n",
        )
        .unwrap();
        assert_eq!(
            BootMarkers::read_from(&log, 0),
            BootMarkers {
                program_started: true,
                agent_ready: false
            }
        );
        // A second run appends to the same log: only what follows its offset counts.
        let offset = std::fs::metadata(&log).unwrap().len();
        let mut text = std::fs::read_to_string(&log).unwrap();
        text.push_str("HYPEMAN-AGENT-READY\nHYPEMAN-EXIT code=0 message=\"success\"\nboot again\n");
        std::fs::write(&log, &text).unwrap();
        let earlier =
            offset + "HYPEMAN-AGENT-READY\nHYPEMAN-EXIT code=0 message=\"success\"\n".len() as u64;
        assert_eq!(
            BootMarkers::read_from(&log, earlier),
            BootMarkers::default()
        );
        assert!(BootMarkers::read_from(&log, offset).agent_ready);
        assert!(BootMarkers::read_from(&log, 0).complete());
    }
}
