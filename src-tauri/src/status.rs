//! What the shell makes of the instance list: how many instances run, which ones just exited,
//! and the words the tray and the desktop notifications use. Pure: no Tauri, no I/O, no clock,
//! so every rule here is unit-tested.
//!
//! Invariants:
//! - "Running" means the guest is up: `Running` or `Initializing` (`InstanceState::guest_up`). Paused,
//!   Created and the rest do not count.
//! - An exit is a transition *observed* between two successful polls: an instance seen running
//!   in one snapshot and `Stopped` or `Shutdown` in the next. The first snapshot never yields
//!   exits (instances that stopped while the app was closed are old news), instances that
//!   vanish (deleted) yield none, and a `Running -> Shutdown -> Stopped` sequence yields one.
//! - Only the fields below are read from the API; everything else in an instance (notably `env`,
//!   which may carry credential values) is skipped while parsing and never held.
//! - Texts shown to the user are single-line and bounded ([`MAX_TEXT_CHARS`]).

use std::collections::HashMap;

use hypedeck_model::InstanceState;
use serde::{Deserialize, Deserializer};

/// Longest notification body, in characters (longer text ends with `…`).
pub const MAX_TEXT_CHARS: usize = 240;

/// The part of an API instance the shell uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InstanceSummary {
    /// Instance id (the key across snapshots).
    pub id: String,
    /// Instance name, as shown to the user.
    pub name: String,
    /// Current state; a state this build does not know reads as `Unknown`.
    #[serde(deserialize_with = "lenient_state")]
    pub state: InstanceState,
    /// Exit code of the guest program, once it exited.
    #[serde(default)]
    pub exit_code: Option<i64>,
    /// Human-readable exit description.
    #[serde(default)]
    pub exit_message: Option<String>,
}

fn lenient_state<'de, D: Deserializer<'de>>(deserializer: D) -> Result<InstanceState, D::Error> {
    let text = String::deserialize(deserializer)?;
    Ok(InstanceState::parse(&text).unwrap_or(InstanceState::Unknown))
}

/// Whether the guest has gone down in a way worth telling the user about.
fn is_exited(state: InstanceState) -> bool {
    matches!(state, InstanceState::Stopped | InstanceState::Shutdown)
}

/// How many instances are running.
pub fn running_count(instances: &[InstanceSummary]) -> usize {
    instances.iter().filter(|i| i.state.guest_up()).count()
}

/// Ids of the instances "Quit and stop all instances" asks the API to stop: those with a VMM
/// that is running or paused.
pub fn to_stop(instances: &[InstanceSummary]) -> Vec<String> {
    instances
        .iter()
        .filter(|i| i.state.guest_up() || i.state == InstanceState::Paused)
        .map(|i| i.id.clone())
        .collect()
}

/// An instance that was seen running and is now down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitEvent {
    /// Instance id.
    pub id: String,
    /// Instance name.
    pub name: String,
    /// `Stopped` or `Shutdown`.
    pub state: InstanceState,
    /// Exit code, when the API reports one.
    pub exit_code: Option<i64>,
    /// Exit description, when the API reports one.
    pub exit_message: Option<String>,
}

impl ExitEvent {
    /// Notification title: `"<name> exited"`.
    pub fn title(&self) -> String {
        format!("{} exited", one_line(&self.name))
    }

    /// Notification body: `"exit code 3: <message>"`, or as much of it as is known.
    pub fn body(&self) -> String {
        let message = self
            .exit_message
            .as_deref()
            .map(one_line)
            .filter(|m| !m.is_empty());
        let text = match (self.exit_code, message) {
            (Some(code), Some(message)) => format!("exit code {code}: {message}"),
            (Some(code), None) => format!("exit code {code}"),
            (None, Some(message)) => message,
            (None, None) if self.state == InstanceState::Shutdown => "guest shut down".to_owned(),
            (None, None) => "stopped".to_owned(),
        };
        bounded(&text)
    }
}

/// The exits between two snapshots of the instance list (`before` keyed by id).
pub fn exits(before: &HashMap<String, InstanceState>, now: &[InstanceSummary]) -> Vec<ExitEvent> {
    now.iter()
        .filter(|i| is_exited(i.state))
        .filter(|i| before.get(&i.id).is_some_and(|s| s.guest_up()))
        .map(|i| ExitEvent {
            id: i.id.clone(),
            name: i.name.clone(),
            state: i.state,
            exit_code: i.exit_code,
            exit_message: i.exit_message.clone(),
        })
        .collect()
}

/// What one poll changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// The running count, when it differs from the last one shown (always set the first time).
    pub count_changed: Option<usize>,
    /// Instances that exited since the previous snapshot.
    pub exits: Vec<ExitEvent>,
}

/// The poller's memory: the last snapshot and the last count shown.
#[derive(Debug, Default)]
pub struct Watch {
    states: Option<HashMap<String, InstanceState>>,
    count: Option<usize>,
}

impl Watch {
    /// Takes a fresh instance list and says what changed since the previous one.
    pub fn observe(&mut self, instances: &[InstanceSummary]) -> Observation {
        let count = running_count(instances);
        let count_changed = (self.count != Some(count)).then_some(count);
        self.count = Some(count);
        let exits = self
            .states
            .as_ref()
            .map(|before| exits(before, instances))
            .unwrap_or_default();
        self.states = Some(instances.iter().map(|i| (i.id.clone(), i.state)).collect());
        Observation {
            count_changed,
            exits,
        }
    }
}

/// The tray's disabled first menu item: `"2 running"`.
pub fn count_label(count: usize) -> String {
    format!("{count} running")
}

/// The tray's tooltip: `"Hypedeck — 2 running"`.
pub fn tray_tooltip(count: usize) -> String {
    format!("Hypedeck — {}", count_label(count))
}

/// Title and body of the "rotation failed" notification.
pub fn rotation_failed(instance: &str, message: &str) -> (String, String) {
    (
        format!("Rotation failed for {}", one_line(instance)),
        bounded(&one_line(message)),
    )
}

/// `text` on one line: runs of whitespace (newlines included) and control characters become one
/// space.
fn one_line(text: &str) -> String {
    text.split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `text` cut to [`MAX_TEXT_CHARS`] characters, ending with `…` when cut.
pub fn bounded(text: &str) -> String {
    if text.chars().count() <= MAX_TEXT_CHARS {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(MAX_TEXT_CHARS - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use InstanceState::*;

    fn inst(id: &str, state: InstanceState) -> InstanceSummary {
        InstanceSummary {
            id: id.into(),
            name: format!("name-{id}"),
            state,
            exit_code: None,
            exit_message: None,
        }
    }

    #[test]
    fn parses_the_api_list_and_skips_everything_else() {
        let json = serde_json::json!([
            {"id": "a", "name": "web", "state": "Running", "env": {"API_KEY": "real-value"},
             "image": "alpine", "exit_code": null},
            {"id": "b", "name": "job", "state": "Stopped", "exit_code": 3,
             "exit_message": "exited with code 3"},
            {"id": "c", "name": "new", "state": "Hibernating"}
        ]);
        let list: Vec<InstanceSummary> = serde_json::from_value(json).unwrap();
        assert_eq!(list[0].state, Running);
        assert_eq!(list[1].exit_code, Some(3));
        assert_eq!(list[1].exit_message.as_deref(), Some("exited with code 3"));
        assert_eq!(list[2].state, Unknown, "unknown states are tolerated");
        assert!(!format!("{list:?}").contains("real-value"));
    }

    #[test]
    fn counts_booting_and_booted_guests_only() {
        let list: Vec<_> = InstanceState::ALL
            .iter()
            .enumerate()
            .map(|(n, s)| inst(&n.to_string(), *s))
            .collect();
        assert_eq!(running_count(&list), 2);
        assert_eq!(running_count(&[]), 0);
    }

    #[test]
    fn stops_running_initializing_and_paused() {
        let list = [
            inst("a", Running),
            inst("b", Initializing),
            inst("c", Paused),
            inst("d", Stopped),
            inst("e", Standby),
            inst("f", Shutdown),
            inst("g", Unknown),
            inst("h", Created),
        ];
        assert_eq!(to_stop(&list), ["a", "b", "c"]);
    }

    #[test]
    fn an_exit_is_running_then_stopped_or_shutdown() {
        let before: HashMap<_, _> = [
            ("run-stop", Running),
            ("init-shut", Initializing),
            ("paused-stop", Paused),
            ("run-run", Running),
            ("stop-stop", Stopped),
            ("run-standby", Running),
            ("run-deleted", Running),
        ]
        .into_iter()
        .map(|(id, s)| (id.to_owned(), s))
        .collect();
        let now = [
            inst("run-stop", Stopped),
            inst("init-shut", Shutdown),
            inst("paused-stop", Stopped),
            inst("run-run", Running),
            inst("stop-stop", Stopped),
            inst("run-standby", Standby),
            inst("created-stop", Stopped),
        ];
        let ids: Vec<_> = exits(&before, &now).into_iter().map(|e| e.id).collect();
        assert_eq!(ids, ["run-stop", "init-shut"]);
    }

    #[test]
    fn watch_reports_count_changes_and_exits_once() {
        let mut watch = Watch::default();
        let first = watch.observe(&[inst("a", Stopped), inst("b", Running)]);
        assert_eq!(
            first.count_changed,
            Some(1),
            "the first count is always reported"
        );
        assert!(first.exits.is_empty(), "the first snapshot has no exits");

        let same = watch.observe(&[inst("a", Stopped), inst("b", Running)]);
        assert_eq!(same, Observation::default());

        let shut = watch.observe(&[inst("a", Stopped), inst("b", Shutdown)]);
        assert_eq!(shut.count_changed, Some(0));
        assert_eq!(shut.exits.len(), 1);
        assert_eq!(shut.exits[0].id, "b");

        let stopped = watch.observe(&[inst("a", Stopped), inst("b", Stopped)]);
        assert_eq!(
            stopped,
            Observation::default(),
            "Shutdown -> Stopped is not a new exit"
        );

        watch.observe(&[inst("b", Running)]);
        let gone = watch.observe(&[]);
        assert_eq!(gone.count_changed, Some(0));
        assert!(gone.exits.is_empty(), "a deleted instance did not exit");
    }

    #[test]
    fn exit_texts() {
        let mut e = ExitEvent {
            id: "x".into(),
            name: "web".into(),
            state: Stopped,
            exit_code: Some(3),
            exit_message: Some("exited with code 3\n(out of memory)".into()),
        };
        assert_eq!(e.title(), "web exited");
        assert_eq!(e.body(), "exit code 3: exited with code 3 (out of memory)");
        e.exit_message = Some("  ".into());
        assert_eq!(e.body(), "exit code 3");
        e.exit_code = None;
        e.exit_message = Some("killed by signal 9 (killed)".into());
        assert_eq!(e.body(), "killed by signal 9 (killed)");
        e.exit_message = None;
        assert_eq!(e.body(), "stopped");
        e.state = Shutdown;
        assert_eq!(e.body(), "guest shut down");
        e.exit_message = Some("x".repeat(1000));
        let body = e.body();
        assert_eq!(body.chars().count(), MAX_TEXT_CHARS);
        assert!(body.ends_with('…'));
    }

    #[test]
    fn tray_texts() {
        assert_eq!(count_label(0), "0 running");
        assert_eq!(tray_tooltip(2), "Hypedeck — 2 running");
    }

    #[test]
    fn rotation_texts() {
        let (title, body) = rotation_failed("web", "egress proxy rejected the rules:\nbad host");
        assert_eq!(title, "Rotation failed for web");
        assert_eq!(body, "egress proxy rejected the rules: bad host");
        let (_, long) = rotation_failed("web", &"é".repeat(500));
        assert_eq!(long.chars().count(), MAX_TEXT_CHARS);
    }
}
