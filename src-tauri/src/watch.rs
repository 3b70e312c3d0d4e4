//! The shell's background watch of the engine: every [`POLL_EVERY`] it lists the instances,
//! updates the tray count and notifies when an instance it saw running has exited. The rules
//! (what counts, what is an exit, the words) are in [`crate::status`]; this is the loop.
//!
//! Invariants: the watch starts once the engine link is made and runs for the life of the app
//! on Tauri's async runtime; it never ends the app and never panics on a bad answer. A failing
//! engine is logged once at warning level per outage (then at debug level until it answers
//! again) and keeps the last good snapshot, so exits that happen during an outage are still
//! reported when it ends.

use std::time::Duration;

use tauri::{AppHandle, Manager, Runtime};
use tokio::time::MissedTickBehavior;

use crate::api::Api;
use crate::link::EngineLink;
use crate::notify;
use crate::status::{self, Watch};
use crate::tray::Tray;

/// Time between two instance lists.
pub const POLL_EVERY: Duration = Duration::from_secs(2);

/// Starts the watch (and so the engine, if no one has asked for it yet).
pub fn spawn<R: Runtime>(app: AppHandle<R>) {
    tauri::async_runtime::spawn(run(app));
}

async fn run<R: Runtime>(app: AppHandle<R>) {
    let connection = match app.state::<EngineLink>().connection().await {
        Ok(connection) => connection,
        Err(e) => {
            tracing::error!("no engine for the window: {e}");
            return;
        }
    };
    let api = match Api::new(&connection) {
        Ok(api) => api,
        Err(e) => {
            tracing::error!("instance watch off: {e}");
            return;
        }
    };
    tracing::info!(
        url = api.url(),
        every_ms = POLL_EVERY.as_millis(),
        "watching instances"
    );

    let mut watch = Watch::default();
    let mut failing = false;
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let instances = match api.list().await {
            Ok(instances) => instances,
            Err(e) => {
                if failing {
                    tracing::debug!("{e}");
                } else {
                    tracing::warn!("{e} (will keep trying every {} s)", POLL_EVERY.as_secs());
                }
                failing = true;
                continue;
            }
        };
        if failing {
            tracing::info!("instance list answers again");
            failing = false;
        }
        let seen = watch.observe(&instances);
        tracing::debug!(instances = instances.len(), "polled");
        if let Some(running) = seen.count_changed {
            tracing::info!(running, "running instances");
            if let Some(tray) = app.try_state::<Tray<R>>() {
                tray.set_count(running);
            }
        }
        // The sandboxes' memory for the tray (engines without `/stats` leave it as it is).
        if let Some(tray) = app.try_state::<Tray<R>>() {
            match api.fleet_stats().await {
                Ok(Some(stats)) => {
                    let (summary, lines) = status::memory_lines(&stats, crate::tray::SHARES_SHOWN);
                    tray.set_memory(&summary, &lines);
                }
                Ok(None) => {}
                Err(e) => tracing::debug!("{e}"),
            }
        }
        for exit in seen.exits {
            tracing::info!(id = %exit.id, name = %exit.name, code = ?exit.exit_code, "instance exited");
            notify::show(&app, &exit.title(), &exit.body());
        }
    }
}
