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
    #[cfg(test)]
    pub fn read_from(serial_log: &Path, offset: u64) -> BootMarkers {
        let mut markers = BootMarkers::default();
        markers.scan(serial_log, offset);
        markers
    }

    /// Scans a serial log from byte `from` to its end, adding what it finds to `self`, and
    /// returns where the scan stopped: the next scan of the same run starts there, so every
    /// byte a guest writes is read once however often the state is asked for. Streams with a
    /// fixed buffer; a marker cut by a chunk boundary (or by the end of what was written so
    /// far) is found by starting each scan a marker's length early.
    pub fn scan(&mut self, serial_log: &Path, from: u64) -> u64 {
        use std::io::{Read as _, Seek as _};
        const OVERLAP: u64 = (PROGRAM_START_MARKER.len() as u64) - 1;
        let start = from.saturating_sub(OVERLAP);
        let Ok(mut file) = std::fs::File::open(serial_log) else {
            return from;
        };
        if file.seek(std::io::SeekFrom::Start(start)).is_err() {
            return from;
        }
        let mut buf = vec![0u8; 64 * 1024];
        let mut carry: Vec<u8> = Vec::new();
        let mut at = start;
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            at += n as u64;
            carry.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&carry);
            self.program_started |= text.contains(PROGRAM_START_MARKER);
            self.agent_ready |= text.contains(AGENT_READY_MARKER);
            let keep = carry.len().saturating_sub(OVERLAP as usize);
            carry.drain(..keep);
        }
        at.max(from)
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

    /// Markers are found once each, by scans that each read only what was added since the
    /// previous one, also when a marker is cut between two scans.
    #[test]
    fn scans_read_each_byte_once_and_find_markers_cut_between_scans() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        let mut f = std::fs::File::create(&log).unwrap();
        f.write_all(&vec![b'.'; 3 << 20]).unwrap();
        let mut markers = BootMarkers::default();
        let scanned = markers.scan(&log, 0);
        assert_eq!(scanned, 3 << 20);
        assert_eq!(markers, BootMarkers::default());
        f.write_all(b"\nHYPEMAN-PROG").unwrap();
        let again = markers.scan(&log, scanned);
        assert_eq!(again, (3 << 20) + 13);
        assert!(!markers.program_started);
        f.write_all(b"RAM-START ts=1\nHYPEMAN-AGENT-READY ts=2\n")
            .unwrap();
        markers.scan(&log, again);
        assert!(markers.complete(), "{markers:?}");
        // A log that does not exist yet: nothing, and the scan stays where it was.
        assert_eq!(
            BootMarkers::default().scan(&dir.path().join("missing.log"), 7),
            7
        );
    }
}
