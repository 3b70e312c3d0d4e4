//! `hypedeck-desktop`: the Hypedeck window. It starts the engine and its Hypeman API in-process
//! (or attaches to the engine already serving the data dir) and hands the UI the API's URL and
//! token; the UI then talks to the API over HTTP like any other client.
//!
//! Invariants: commands only delegate (the engine and the API live in `hypedeck_cli::daemon`);
//! the window always opens, even when the engine cannot start, and the UI shows why.

#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod link;

use std::process::ExitCode;

use tauri::Manager;

use crate::link::{Connection, EngineLink};

/// The API the window talks to: `{url, token, mode}`, or why there is none.
#[tauri::command]
async fn connection(link: tauri::State<'_, EngineLink>) -> Result<Connection, String> {
    link.connection().await
}

fn main() -> ExitCode {
    hypedeck_cli::init_process();

    let app = tauri::Builder::default()
        .manage(EngineLink::new(hypedeck_store::default_data_dir()))
        .setup(|app| {
            // Start (or find) the engine while the window loads; `connection` waits for it.
            let handle = app.handle().clone();
            tauri::async_runtime::spawn(async move {
                if let Err(e) = handle.state::<EngineLink>().connection().await {
                    tracing::error!("no engine for the window: {e}");
                }
            });
            Ok(())
        })
        .invoke_handler(tauri::generate_handler![connection])
        .run(tauri::generate_context!());
    match app {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hypedeck-desktop: {e}");
            ExitCode::FAILURE
        }
    }
}
