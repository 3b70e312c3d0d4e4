//! Auto-standby (issue 23): upstream's `auto_standby` policy, `GET /instances/{id}/auto-standby/
//! status` and `POST …/hold`, run by the engine, and a wake-up upstream does not have.
//!
//! **What keeps an instance awake** (`Activity`): open TCP connections to its forwarded ports
//! (from clients the policy does not ignore, to guest ports it does not ignore), open TCP
//! connections the guest made itself (to the internet or through the credential proxy: an
//! agent waiting on a slow API call is busy), and exec sessions. Log followers do not count
//! (a window left open on the logs must not keep a sandbox up). Upstream counts inbound
//! connections only; Hypedeck sees every flow in its own network stack, so no conntrack.
//!
//! **The controller** (`run_auto_standby`, every second): a Running instance with an enabled
//! policy and no activity starts an idle countdown; activity clears it; at
//! `max(idle_since + idle_timeout, hold_until)` the instance goes to standby with the usual
//! verb and is marked asleep (`asleep` file in its directory, so a restarted engine knows).
//!
//! **Waking** (`Sleeper`): while asleep the engine holds the instance's forwarded TCP ports. The
//! first connection to one restores the VM, and is then served by the instance's new network
//! stack, which takes over the same listening sockets (connections that arrive meanwhile wait
//! in their backlog, never refused). An exec of an asleep instance restores it first too. A
//! manual restore, start, stop or delete ends the sleep.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use hypedeck_model::autostandby::{AutoStandbyActivity, AutoStandbyPolicy, AutoStandbyStatus};
use hypedeck_model::{ErrorCode, InstanceState, PortProtocol};
use hypedeck_store::InstanceRecord;
use time::OffsetDateTime;

use crate::{Engine, EngineError, lock, rejected};

/// How often the controller looks.
pub const TICK: Duration = Duration::from_secs(1);
/// The marker of an instance auto-standby put to sleep (in its directory).
const ASLEEP: &str = "asleep";
/// What `tracking_mode` says.
const TRACKING: &str = "netstack_flows_v4_tcp";

/// One instance's controller state.
#[derive(Debug, Default, Clone)]
struct State {
    idle_since: Option<OffsetDateTime>,
    last_activity: Option<OffsetDateTime>,
    hold_until: Option<OffsetDateTime>,
    /// A standby of its own is under way.
    standby_executing: bool,
    activity: AutoStandbyActivity,
}

/// Holds an asleep instance's forwarded TCP ports and wakes it on the first connection.
#[derive(Debug)]
struct Sleeper {
    /// The listening sockets (their clones are in the accept task).
    listeners: Vec<std::net::TcpListener>,
    cancel: tokio_util::sync::CancellationToken,
}

/// The controller's state, the sleepers and the exec sessions per instance.
#[derive(Debug, Default)]
pub(crate) struct AutoStandby {
    states: Mutex<HashMap<String, State>>,
    sleepers: Mutex<HashMap<String, Sleeper>>,
    execs: Mutex<HashMap<String, Arc<AtomicI64>>>,
}

/// Counts an exec session as activity for as long as it lives.
#[derive(Debug)]
pub(crate) struct ExecGuard(Arc<AtomicI64>);

impl Drop for ExecGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl AutoStandby {
    pub(crate) fn exec_started(&self, id: &str) -> ExecGuard {
        let counter = lock(&self.execs).entry(id.to_string()).or_default().clone();
        counter.fetch_add(1, Ordering::AcqRel);
        ExecGuard(counter)
    }

    fn execs(&self, id: &str) -> i64 {
        lock(&self.execs)
            .get(id)
            .map_or(0, |c| c.load(Ordering::Acquire))
    }

    /// Ends the instance's sleep: the held listeners go to its next network stack (`park`:
    /// true) or are closed.
    fn disarm(&self, id: &str) -> Option<Vec<std::net::TcpListener>> {
        let sleeper = lock(&self.sleepers).remove(id)?;
        sleeper.cancel.cancel();
        Some(sleeper.listeners)
    }

    fn forget(&self, id: &str) {
        lock(&self.states).remove(id);
        lock(&self.execs).remove(id);
        self.disarm(id);
    }
}

fn policy_of(record: &InstanceRecord) -> Option<AutoStandbyPolicy> {
    record
        .policies
        .get("auto_standby")
        .and_then(AutoStandbyPolicy::from_value)
}

/// Go's `Duration.String()` of a non-negative span, in whole seconds (`"4m10s"`).
fn go(d: time::Duration) -> String {
    let d: Duration = d.try_into().unwrap_or(Duration::ZERO);
    hypedeck_model::duration::format(Duration::from_secs(d.as_secs()))
}

impl Engine {
    fn asleep_marker(&self, id: &str) -> Option<std::path::PathBuf> {
        let id = hypedeck_model::InstanceId::parse(id).ok()?;
        Some(self.paths.instance_dir(&id).join(ASLEEP))
    }

    /// Whether auto-standby put the instance to sleep (and nothing woke it since).
    pub(crate) fn is_asleep(&self, id: &str) -> bool {
        self.asleep_marker(id).is_some_and(|p| p.exists())
    }

    fn set_asleep(&self, id: &str, asleep: bool) {
        if let Some(marker) = self.asleep_marker(id) {
            if asleep {
                let _ = hypedeck_store::write_atomic(&marker, b"");
            } else {
                let _ = std::fs::remove_file(marker);
            }
        }
    }

    /// The instance's sleep ends (a verb restores or starts it): its held ports go to its
    /// next network stack.
    pub(crate) fn end_sleep(&self, id: &str) {
        if let Some(listeners) = self.auto_standby.disarm(id) {
            self.networks.park(id, listeners);
        }
        self.set_asleep(id, false);
    }

    /// Forgets everything auto-standby kept for a deleted instance.
    pub(crate) fn forget_auto_standby(&self, id: &str) {
        self.auto_standby.forget(id);
    }

    /// Counts an exec session as activity (dropped with the session).
    pub(crate) fn exec_activity(&self, id: &str) -> ExecGuard {
        self.auto_standby.exec_started(id)
    }

    fn activity(&self, record: &InstanceRecord, policy: &AutoStandbyPolicy) -> AutoStandbyActivity {
        let connections = self.networks.traffic(&record.id).connections();
        AutoStandbyActivity {
            inbound: connections
                .inbound
                .iter()
                .filter(|(peer, port)| policy.counts(peer.ip(), *port))
                .count() as i64,
            outbound: connections.outbound as i64,
            exec: self.auto_standby.execs(&record.id),
        }
    }

    /// Upstream's `GET /instances/{id}/auto-standby/status`.
    pub async fn auto_standby_status(
        &self,
        id_or_name: &str,
    ) -> Result<AutoStandbyStatus, EngineError> {
        let mut record = self.resolve(id_or_name)?;
        let state = self.observe(&mut record).await.state;
        Ok(self.describe(&record, state, OffsetDateTime::now_utc()))
    }

    fn describe(
        &self,
        record: &InstanceRecord,
        state: InstanceState,
        now: OffsetDateTime,
    ) -> AutoStandbyStatus {
        let policy = policy_of(record);
        let mut s = AutoStandbyStatus {
            supported: true,
            configured: policy.is_some(),
            enabled: policy.as_ref().is_some_and(|p| p.enabled),
            eligible: false,
            status: String::new(),
            reason: String::new(),
            active_inbound_connections: 0,
            idle_timeout: policy
                .as_ref()
                .filter(|p| p.enabled)
                .map(|p| hypedeck_model::duration::format(p.idle_timeout)),
            idle_since: None,
            last_inbound_activity_at: None,
            next_standby_at: None,
            hold_until: None,
            countdown_remaining: None,
            tracking_mode: TRACKING.into(),
            activity: None,
            asleep: state == InstanceState::Standby && self.is_asleep(&record.id),
        };
        let set = |s: &mut AutoStandbyStatus, status: &str, reason: &str| {
            s.status = status.into();
            s.reason = reason.into();
        };
        let Some(policy) = policy else {
            set(&mut s, "disabled", "policy_missing");
            return s;
        };
        if !policy.enabled {
            set(&mut s, "disabled", "policy_disabled");
            return s;
        }
        if state != InstanceState::Running {
            set(&mut s, "ineligible", "instance_not_running");
            return s;
        }
        if !record.network.enabled {
            set(&mut s, "ineligible", "network_disabled");
            return s;
        }
        s.eligible = true;
        let st = lock(&self.auto_standby.states)
            .get(&record.id)
            .cloned()
            .unwrap_or_default();
        let activity = self.activity(record, &policy);
        s.activity = Some(activity);
        s.active_inbound_connections = activity.inbound;
        s.idle_since = st.idle_since;
        s.last_inbound_activity_at = st.last_activity;
        s.hold_until = st.hold_until.filter(|h| *h > now);
        let next = due(&st, &policy);
        s.next_standby_at = next;
        s.countdown_remaining = next.map(|n| go((n - now).max(time::Duration::ZERO)));
        if st.standby_executing {
            set(&mut s, "standby_requested", "ready_for_standby");
        } else if activity.inbound + activity.outbound + activity.exec > 0 {
            set(&mut s, "active", "active_inbound_connections");
        } else if next.is_some_and(|n| n <= now) {
            set(&mut s, "ready_for_standby", "ready_for_standby");
        } else {
            set(&mut s, "idle_countdown", "idle_timeout_not_elapsed");
        }
        s
    }

    /// Upstream's `POST /instances/{id}/auto-standby/hold`: no standby before now + the idle
    /// timeout. 409 `instance_in_standby` for an instance in standby or going there.
    pub async fn hold_auto_standby(
        &self,
        id_or_name: &str,
    ) -> Result<AutoStandbyStatus, EngineError> {
        let mut record = self.resolve(id_or_name)?;
        let state = self.observe(&mut record).await.state;
        let now = OffsetDateTime::now_utc();
        {
            let mut states = lock(&self.auto_standby.states);
            if states.get(&record.id).is_some_and(|s| s.standby_executing) {
                return Err(rejected(
                    ErrorCode::InstanceInStandby,
                    "instance standby is in progress; restore it before connecting",
                ));
            }
            if let Some(policy) = policy_of(&record).filter(|p| p.enabled)
                && state == InstanceState::Running
            {
                let timeout =
                    time::Duration::try_from(policy.idle_timeout).unwrap_or(time::Duration::ZERO);
                states.entry(record.id.clone()).or_default().hold_until = Some(now + timeout);
            }
        }
        if state == InstanceState::Standby {
            return Err(rejected(
                ErrorCode::InstanceInStandby,
                "instance is in standby; restore it before connecting",
            ));
        }
        Ok(self.describe(&record, state, now))
    }

    /// One round of the controller at `now`: counts down idle instances and puts those due
    /// into standby; ends sleeps that verbs ended.
    pub(crate) async fn run_auto_standby(self: &Arc<Self>, now: OffsetDateTime) {
        let Ok(records) = self.records() else {
            return;
        };
        for mut record in records {
            let Some(policy) = policy_of(&record).filter(|p| p.enabled) else {
                lock(&self.auto_standby.states).remove(&record.id);
                if self.is_asleep(&record.id) {
                    // The policy was turned off while it slept: it stays in standby.
                    self.auto_standby.disarm(&record.id);
                    self.set_asleep(&record.id, false);
                }
                continue;
            };
            let state = self.observe(&mut record).await.state;
            if state == InstanceState::Standby && self.is_asleep(&record.id) {
                self.arm_sleeper(&record);
                continue;
            }
            if state != InstanceState::Standby
                && lock(&self.auto_standby.sleepers).contains_key(&record.id)
            {
                // Something else woke it (a snapshot restore, say): the ports are its own.
                self.end_sleep(&record.id);
            }
            if state != InstanceState::Running || !record.network.enabled {
                lock(&self.auto_standby.states).remove(&record.id);
                continue;
            }
            let activity = self.activity(&record, &policy);
            let busy = activity.inbound + activity.outbound + activity.exec > 0;
            let go_now = {
                let mut states = lock(&self.auto_standby.states);
                let st = states.entry(record.id.clone()).or_default();
                st.activity = activity;
                if busy {
                    st.idle_since = None;
                    st.last_activity = Some(now);
                } else if st.idle_since.is_none() {
                    st.idle_since = Some(now);
                }
                let due_now = !busy && due(st, &policy).is_some_and(|d| d <= now);
                if due_now && !st.standby_executing {
                    st.standby_executing = true;
                    true
                } else {
                    false
                }
            };
            if go_now {
                let engine = self.clone();
                tokio::spawn(async move { engine.auto_standby_now(record).await });
            }
        }
    }

    async fn auto_standby_now(self: Arc<Self>, record: InstanceRecord) {
        let id = record.id.clone();
        self.ops_log(&id, "idle: auto-standby");
        let result = self.standby(&id).await;
        {
            let mut states = lock(&self.auto_standby.states);
            states.remove(&id);
        }
        match result {
            Ok(i) if i.state == InstanceState::Standby => {
                self.set_asleep(&id, true);
                self.arm_sleeper(&record);
            }
            Ok(i) => tracing::warn!(%id, state = %i.state, "auto-standby left the instance awake"),
            Err(e) => {
                tracing::warn!(%id, error = %e, "auto-standby failed");
                self.ops_log(&id, &format!("auto-standby failed: {e}"));
            }
        }
    }

    /// Holds an asleep instance's forwarded TCP ports; the first connection wakes it.
    fn arm_sleeper(self: &Arc<Self>, record: &InstanceRecord) {
        if lock(&self.auto_standby.sleepers).contains_key(&record.id) {
            return;
        }
        let mut listeners = Vec::new();
        let mut accepting = Vec::new();
        for port in record
            .ports
            .iter()
            .filter(|p| p.protocol == PortProtocol::Tcp)
        {
            let bound = bind_forward(port.host_port).and_then(|l| {
                let clone = l.try_clone()?;
                clone.set_nonblocking(true)?;
                Ok((l, tokio::net::TcpListener::from_std(clone)?))
            });
            match bound {
                Ok((l, a)) => {
                    listeners.push(l);
                    accepting.push((a, port.guest_port));
                }
                Err(e) => {
                    tracing::warn!(id = %record.id, port = port.host_port, error = %e, "cannot hold a forwarded port while asleep")
                }
            }
        }
        let cancel = tokio_util::sync::CancellationToken::new();
        lock(&self.auto_standby.sleepers).insert(
            record.id.clone(),
            Sleeper {
                listeners,
                cancel: cancel.clone(),
            },
        );
        if accepting.is_empty() {
            return;
        }
        let engine: Weak<Engine> = Arc::downgrade(self);
        let id = record.id.clone();
        tokio::spawn(async move {
            let (tx, mut rx) = tokio::sync::mpsc::channel(1);
            for (listener, guest_port) in accepting {
                let (tx, cancel) = (tx.clone(), cancel.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        () = cancel.cancelled() => {}
                        accepted = listener.accept() => {
                            if let Ok((stream, _)) = accepted {
                                let _ = tx.send((stream, guest_port)).await;
                            }
                        }
                    }
                });
            }
            drop(tx);
            let first = tokio::select! {
                () = cancel.cancelled() => return,
                first = rx.recv() => first,
            };
            // Every accept task ends: the listeners' backlogs wait for the next stack.
            cancel.cancel();
            let (Some((stream, guest_port)), Some(engine)) = (first, engine.upgrade()) else {
                return;
            };
            engine.wake(&id, Some((stream, guest_port))).await;
        });
    }

    /// Restores an asleep instance and serves `first` (the connection that woke it).
    pub(crate) async fn wake(&self, id: &str, first: Option<(tokio::net::TcpStream, u16)>) {
        let started = std::time::Instant::now();
        self.ops_log(id, "woken: restoring");
        match self.restore(id).await {
            Ok(_) => {
                let ms = started.elapsed().as_millis();
                self.ops_log(id, &format!("awake after {ms} ms"));
                if let Some((stream, guest_port)) = first
                    && !self.networks.inject(id, stream, guest_port)
                {
                    tracing::warn!(%id, "the connection that woke the instance was lost");
                }
            }
            Err(e) => {
                tracing::warn!(%id, error = %e, "waking failed");
                self.ops_log(id, &format!("waking failed: {e}"));
            }
        }
    }

    /// Wakes the instance first if auto-standby put it to sleep (an exec of it).
    pub(crate) async fn wake_if_asleep(&self, id: &str, state: InstanceState) -> bool {
        if state == InstanceState::Standby && self.is_asleep(id) {
            self.wake(id, None).await;
            true
        } else {
            false
        }
    }

    /// Runs the controller every [`TICK`] for as long as the engine lives (the daemon starts
    /// it).
    pub fn spawn_auto_standby(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let engine = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                engine.run_auto_standby(OffsetDateTime::now_utc()).await;
            }
        })
    }
}

/// When the countdown ends: idle since + timeout, not before a hold.
fn due(st: &State, policy: &AutoStandbyPolicy) -> Option<OffsetDateTime> {
    let timeout = time::Duration::try_from(policy.idle_timeout).ok()?;
    let at = st.idle_since? + timeout;
    Some(match st.hold_until {
        Some(hold) if hold > at => hold,
        _ => at,
    })
}

/// A listener on `127.0.0.1:port` (std sets `SO_REUSEADDR` on Unix, as the stack's own do).
fn bind_forward(port: u16) -> std::io::Result<std::net::TcpListener> {
    std::net::TcpListener::bind((IpAddr::from([127, 0, 0, 1]), port))
}
