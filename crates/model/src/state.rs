//! Instance states and the transition table upstream validates against.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The eight instance states, spelled exactly as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InstanceState {
    /// VMM created, guest not booted.
    Created,
    /// VM running, guest init not finished.
    Initializing,
    /// Guest program started and the instance is ready.
    Running,
    /// VM paused.
    Paused,
    /// Guest off, VMM still alive.
    Shutdown,
    /// No VMM and no snapshot.
    Stopped,
    /// No VMM, a snapshot exists that can be restored.
    Standby,
    /// The state could not be determined (`state_error` says why).
    Unknown,
}

impl InstanceState {
    /// Every state, in the order the spec lists them.
    pub const ALL: [InstanceState; 8] = [
        InstanceState::Created,
        InstanceState::Initializing,
        InstanceState::Running,
        InstanceState::Paused,
        InstanceState::Shutdown,
        InstanceState::Stopped,
        InstanceState::Standby,
        InstanceState::Unknown,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Created => "Created",
            InstanceState::Initializing => "Initializing",
            InstanceState::Running => "Running",
            InstanceState::Paused => "Paused",
            InstanceState::Shutdown => "Shutdown",
            InstanceState::Stopped => "Stopped",
            InstanceState::Standby => "Standby",
            InstanceState::Unknown => "Unknown",
        }
    }

    /// Parses the exact wire spelling (case-sensitive, like upstream's enum validation).
    pub fn parse(value: &str) -> Option<InstanceState> {
        InstanceState::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// The states this one may move to directly (upstream `lib/instances/state.go`).
    pub fn next_states(self) -> &'static [InstanceState] {
        use InstanceState::*;
        match self {
            Created => &[Initializing, Running, Shutdown],
            Initializing => &[Running, Shutdown],
            Running => &[Paused, Shutdown],
            Paused => &[Running, Shutdown, Standby],
            Shutdown => &[Running, Stopped],
            Stopped => &[Created],
            Standby => &[Paused, Stopped],
            Unknown => &[],
        }
    }

    /// Whether a direct transition `self -> to` is legal.
    pub fn can_transition_to(self, to: InstanceState) -> bool {
        self.next_states().contains(&to)
    }

    /// Checks a transition, with upstream's error text when it is illegal.
    pub fn transition_to(self, to: InstanceState) -> Result<InstanceState, TransitionError> {
        if self.can_transition_to(to) {
            Ok(to)
        } else {
            Err(TransitionError { from: self, to })
        }
    }

    /// Whether the guest is up: booting (`Initializing`) or booted (`Running`). Upstream's rule
    /// for live env updates; also what "running" means in counts.
    pub fn guest_up(self) -> bool {
        matches!(self, InstanceState::Running | InstanceState::Initializing)
    }

    /// Whether a VMM process exists in this state.
    pub fn has_vmm(self) -> bool {
        matches!(
            self,
            InstanceState::Created
                | InstanceState::Initializing
                | InstanceState::Running
                | InstanceState::Paused
                | InstanceState::Shutdown
        )
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An illegal state transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransitionError {
    /// Where the instance was.
    pub from: InstanceState,
    /// Where it was asked to go.
    pub to: InstanceState,
}

impl fmt::Display for TransitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid state transition: cannot transition from {} to {}",
            self.from, self.to
        )
    }
}

impl std::error::Error for TransitionError {}

#[cfg(test)]
mod tests {
    use super::InstanceState::{self, *};

    #[test]
    fn guest_up_and_vmm_presence() {
        let up: Vec<_> = InstanceState::ALL
            .into_iter()
            .filter(|s| s.guest_up())
            .collect();
        assert_eq!(up, [Initializing, Running]);
        let vmm: Vec<_> = InstanceState::ALL
            .into_iter()
            .filter(|s| s.has_vmm())
            .collect();
        assert_eq!(vmm, [Created, Initializing, Running, Paused, Shutdown]);
    }

    /// The full (from, to) matrix: `true` where upstream allows the move.
    const TABLE: [(InstanceState, [bool; 8]); 8] = [
        //            Created Init   Running Paused Shutdn Stopped Standby Unknown
        (
            Created,
            [false, true, true, false, true, false, false, false],
        ),
        (
            Initializing,
            [false, false, true, false, true, false, false, false],
        ),
        (
            Running,
            [false, false, false, true, true, false, false, false],
        ),
        (
            Paused,
            [false, false, true, false, true, false, true, false],
        ),
        (
            Shutdown,
            [false, false, true, false, false, true, false, false],
        ),
        (
            Stopped,
            [true, false, false, false, false, false, false, false],
        ),
        (
            Standby,
            [false, false, false, true, false, true, false, false],
        ),
        (
            Unknown,
            [false, false, false, false, false, false, false, false],
        ),
    ];

    #[test]
    fn every_pair_matches_the_table() {
        for (from, row) in TABLE {
            for (to, allowed) in InstanceState::ALL.into_iter().zip(row) {
                assert_eq!(from.can_transition_to(to), allowed, "{from} -> {to}");
                match from.transition_to(to) {
                    Ok(next) => assert_eq!(next, to),
                    Err(e) => assert_eq!(
                        e.to_string(),
                        format!("invalid state transition: cannot transition from {from} to {to}")
                    ),
                }
            }
        }
    }

    #[test]
    fn wire_spelling_round_trips() {
        for state in InstanceState::ALL {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
            assert_eq!(serde_json::from_str::<InstanceState>(&json).unwrap(), state);
            assert_eq!(InstanceState::parse(state.as_str()), Some(state));
        }
        assert_eq!(InstanceState::parse("running"), None);
        assert!(serde_json::from_str::<InstanceState>("\"running\"").is_err());
    }
}
