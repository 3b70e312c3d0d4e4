//! `hypedeck-desktop`: the Hypedeck window. It starts the engine and its Hypeman API in-process
//! (or attaches to the engine already serving the data dir) and hands the UI the API's URL and
//! token; the UI then talks to the API over HTTP like any other client.
//!
//! Around the window the shell keeps a tray icon with the number of running instances, watches
//! the instances to notify when one exits, and remembers the window's size, position and
//! maximized state between launches.
//!
//! Invariants: commands only delegate (the engine and the API live in `hypedeck_cli::daemon`);
//! the window always opens, even when the engine cannot start, and the UI shows why; the tray
//! and notifications are extras that may be missing (no tray host, no notification server, as
//! under Xvfb) without failing anything. Quitting leaves VMs running.
//!
//! Commands for the UI (none needs a capability permission: they are the app's own):
//! - `connection()` → `{url, token, mode}` or an error sentence;
//! - `notify_rotation_failed({instance, message})` → shows "Rotation failed for <instance>";
//! - `notify_credential_blocked({instance, message})` → shows "Credential blocked";
//! - `notify_network_blocked({instance, message})` → shows "Connection blocked";
//! - `local_checks()` → the setup checks (`[{id, title, status, detail, why, fix?}]`) run by
//!   the shell, for when the engine cannot start;
//! - `settings()` → `{settings, path, data_dir, restart_needed, load_error}`;
//!   `save_settings({settings})` → the same, or `{message, fields: [{field, message}]}`;
//! - `first_paint()` → records the time from process start to the first paint, once;
//! - `local_api({method, path, body})` → `{status, body}`: the requests that may set secret
//!   references, sent to this computer's engine over its Unix socket (see `local.rs`);
//! - `remotes()`, `remote_add({name, url, key})`, `remote_remove({id})` → the remote servers
//!   (keys in the OS keychain, never in a file); `remote_connection({id})` → `{url, token,
//!   mode: "remote"}`; `health({id})` → `{latency_ms, problem}` for a remote, or for this
//!   computer's engine when `id` is null.

#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod api;
mod link;
mod local;
mod notify;
mod prefs;
mod remotes;
mod startup;
mod status;
mod tray;
mod watch;

use std::process::ExitCode;

use tauri::{AppHandle, Manager};
use tauri_plugin_window_state::StateFlags;

use crate::link::{Connection, EngineLink};
use crate::prefs::{Prefs, PrefsView, SaveError};
use crate::remotes::Remotes;
use crate::startup::{FirstPaint, ProcessClock};
use crate::tray::Tray;

/// Where `first_paint` writes the milliseconds, for benchmark scripts.
const FIRST_PAINT_FILE_ENV: &str = "HYPEDECK_FIRST_PAINT_FILE";

/// The API the window talks to: `{url, token, mode}`, or why there is none.
#[tauri::command]
async fn connection(link: tauri::State<'_, EngineLink>) -> Result<Connection, String> {
    link.connection().await
}

/// The remote servers.
/// A request that may set secret references, over the engine's Unix socket.
#[tauri::command]
async fn local_api(
    link: tauri::State<'_, EngineLink>,
    method: String,
    path: String,
    body: Option<String>,
) -> Result<local::LocalAnswer, String> {
    local::request(&link, &method, &path, body).await
}

#[tauri::command]
async fn remotes(
    remotes: tauri::State<'_, Remotes>,
) -> Result<Vec<hypedeck_remote::Remote>, String> {
    remotes.list().await
}

/// Adds a remote server; `key` goes to the OS keychain.
#[tauri::command]
async fn remote_add(
    remotes: tauri::State<'_, Remotes>,
    name: String,
    url: String,
    key: String,
) -> Result<hypedeck_remote::Remote, String> {
    remotes.add(name, url, key).await
}

/// Forgets a remote server and its key.
#[tauri::command]
async fn remote_remove(remotes: tauri::State<'_, Remotes>, id: String) -> Result<(), String> {
    remotes.remove(id).await
}

/// `{url, token, mode: "remote"}` for a remote.
#[tauri::command]
async fn remote_connection(
    remotes: tauri::State<'_, Remotes>,
    id: String,
) -> Result<Connection, String> {
    remotes.connection(id).await
}

/// Latency, or what is wrong, for a remote (`id`) or this computer's engine (`id` null).
#[tauri::command]
async fn health(
    link: tauri::State<'_, EngineLink>,
    remotes: tauri::State<'_, Remotes>,
    id: Option<String>,
) -> Result<hypedeck_remote::Health, String> {
    let connection = match id {
        Some(id) => remotes.connection(id).await?,
        None => link.connection().await?,
    };
    Ok(remotes::health(&connection).await)
}

/// The first-run checks run by the shell itself (used when the engine cannot start, e.g. with
/// no keychain; with an engine the UI asks `GET /system/checks`).
#[tauri::command]
async fn local_checks(
    link: tauri::State<'_, EngineLink>,
) -> Result<Vec<hypedeck_engine::checks::Check>, String> {
    let dir = link
        .data_dir()
        .ok_or_else(|| "cannot determine a data dir; set HYPEDECK_DATA_DIR".to_string())?;
    Ok(hypedeck_cli::daemon::local_checks(dir).await)
}

/// The saved settings, the data dir this run uses, and whether a restart is needed.
#[tauri::command]
async fn settings(prefs: tauri::State<'_, Prefs>) -> Result<PrefsView, String> {
    Ok(prefs.get().await)
}

/// Validates and saves the whole settings object; errors name the fields at fault.
#[tauri::command]
async fn save_settings(
    prefs: tauri::State<'_, Prefs>,
    settings: serde_json::Value,
) -> Result<PrefsView, SaveError> {
    prefs.save(settings).await
}

/// Tells the user that rotating an instance's credentials failed. `message` is the API's error
/// text (it never holds secret values; still, it is logged at debug level only). A missing
/// notification server is not an error.
#[tauri::command]
fn notify_rotation_failed(app: AppHandle, instance: String, message: String) -> Result<(), String> {
    tracing::info!(%instance, "rotation failed; notifying");
    let (title, body) = status::rotation_failed(&instance, &message);
    notify::show(&app, &title, &body);
    Ok(())
}

/// Tells the user that a credential use was refused (a leak blocked, a credential host over
/// plain HTTP…). `message` names the instance, the credential and the host, never a value.
#[tauri::command]
fn notify_credential_blocked(
    app: AppHandle,
    instance: String,
    message: String,
) -> Result<(), String> {
    tracing::info!(%instance, "credential use blocked; notifying");
    notify::show(&app, "Credential blocked", &status::bounded(&message));
    Ok(())
}

/// Tells the user that an instance's sandbox network refused a destination for the first
/// time. `message` names the instance, the destination and the reason.
#[tauri::command]
fn notify_network_blocked(app: AppHandle, instance: String, message: String) -> Result<(), String> {
    tracing::info!(%instance, "connection blocked; notifying");
    notify::show(&app, "Connection blocked", &status::bounded(&message));
    Ok(())
}

/// The UI has painted: logs the time since the process started (first call only) and writes
/// the milliseconds to `$HYPEDECK_FIRST_PAINT_FILE` when that is set.
#[tauri::command]
async fn first_paint(app: AppHandle) {
    let Some((elapsed, from_process_start)) = app.state::<FirstPaint>().record() else {
        return;
    };
    let ms = elapsed.as_millis();
    if from_process_start {
        tracing::info!("first paint after {ms} ms");
    } else {
        tracing::info!("first paint after {ms} ms (counted from main, not from exec)");
    }
    if let Some(path) = std::env::var_os(FIRST_PAINT_FILE_ENV)
        && let Err(e) = tokio::fs::write(&path, format!("{ms}\n")).await
    {
        tracing::warn!(
            "cannot write the first paint time to {}: {e}",
            std::path::Path::new(&path).display()
        );
    }
}

fn main() -> ExitCode {
    let clock = ProcessClock::start();
    if std::env::args().nth(1).as_deref() == Some("--version") {
        // Needs no display: packaging checks run it.
        println!("hypedeck-desktop {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    hypedeck_cli::init_process();
    let prefs = Prefs::load();
    hypedeck_boot::set_kernel_deb(prefs.started_with().kernel_deb.clone());
    let data_dir = prefs.data_dir();
    let listen = prefs.started_with().listen_addr();

    let app = tauri::Builder::default()
        .plugin(
            tauri_plugin_window_state::Builder::new()
                .with_state_flags(StateFlags::SIZE | StateFlags::POSITION | StateFlags::MAXIMIZED)
                .build(),
        )
        .plugin(tauri_plugin_notification::init())
        .manage(EngineLink::new(
            data_dir.clone(),
            listen,
            prefs.started_with().console_log_max_bytes(),
        ))
        .manage(Remotes::new(data_dir))
        .manage(prefs)
        .manage(FirstPaint::new(clock))
        .setup(|app| {
            let handle = app.handle();
            if let Some(tray) = Tray::create(handle) {
                app.manage(tray);
            }
            notify::probe();
            // Start (or find) the engine while the window loads; `connection` waits for it.
            watch::spawn(handle.clone());
            Ok(())
        })
        .invoke_handler(tauri::generate_handler![
            connection,
            local_api,
            notify_rotation_failed,
            notify_credential_blocked,
            notify_network_blocked,
            first_paint,
            remotes,
            remote_add,
            remote_remove,
            remote_connection,
            health,
            local_checks,
            settings,
            save_settings
        ])
        .run(tauri::generate_context!());
    match app {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hypedeck-desktop: {e}");
            ExitCode::FAILURE
        }
    }
}
