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

/// The tray's memory line and one line per sandbox, biggest first (at most `max`): `"Sandboxes
/// use 1.2 GiB of 15.6 GiB"`, `"web: 512.0 MiB (42%)"`. Sizes are binary units, as the window's.
pub fn memory_lines(stats: &hypedeck_model::FleetStats, max: usize) -> (String, Vec<String>) {
    let total = stats.guest_memory_rss_bytes;
    let summary = if stats.host_memory_bytes > 0 {
        format!(
            "Sandboxes use {} of {}",
            binary_size(total),
            binary_size(stats.host_memory_bytes)
        )
    } else {
        format!("Sandboxes use {}", binary_size(total))
    };
    let mut each: Vec<(u64, &str)> = stats
        .instances
        .iter()
        .map(|i| {
            let rss = i.samples.last().map_or(0, |s| s.memory_rss_bytes);
            (rss, i.instance_name.as_str())
        })
        .collect();
    each.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    let lines = each
        .into_iter()
        .take(max)
        .map(|(rss, name)| {
            let share = if total > 0 {
                (rss as f64 * 100.0 / total as f64).round() as u64
            } else {
                0
            };
            format!("{}: {} ({share}%)", one_line(name), binary_size(rss))
        })
        .collect();
    (summary, lines)
}

/// `1536` → `"1.5 KiB"`; below 1 KiB, bytes.
fn binary_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
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
    fn tray_memory_lines_name_each_sandbox_biggest_first() {
        let history = |name: &str, rss: u64| hypedeck_model::StatsHistory {
            instance_id: format!("id-{name}"),
            instance_name: name.into(),
            interval_ms: 2000,
            allocated_vcpus: 1,
            allocated_memory_bytes: 1 << 30,
            samples: vec![hypedeck_model::StatsSample {
                at_ms: 1,
                cpu_seconds: 1.0,
                memory_rss_bytes: rss,
                network_rx_bytes: 0,
                network_tx_bytes: 0,
                disk_read_bytes: 0,
                disk_write_bytes: 0,
            }],
        };
        let stats = hypedeck_model::FleetStats {
            host_memory_bytes: 16 << 30,
            host_cpus: 8,
            guest_memory_rss_bytes: (512 << 20) + (1536 << 20),
            guest_memory_allocated_bytes: 3 << 30,
            instances: vec![history("web", 512 << 20), history("db\nx", 1536 << 20)],
        };
        let (summary, lines) = memory_lines(&stats, 5);
        assert_eq!(summary, "Sandboxes use 2.0 GiB of 16.0 GiB");
        assert_eq!(lines, ["db x: 1.5 GiB (75%)", "web: 512.0 MiB (25%)"]);
        let (_, first) = memory_lines(&stats, 1);
        assert_eq!(first.len(), 1);
        let none = hypedeck_model::FleetStats {
            host_memory_bytes: 0,
            guest_memory_rss_bytes: 0,
            instances: Vec::new(),
            ..stats
        };
        assert_eq!(
            memory_lines(&none, 5),
            ("Sandboxes use 0 B".to_string(), vec![])
        );
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
