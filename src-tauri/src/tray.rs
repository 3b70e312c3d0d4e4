//! The tray (menu-bar) icon: how many instances run, how much of the host's memory the
//! sandboxes use (and each one's share, in a submenu), a way back to the window, and the two
//! ways to quit.
//!
//! Invariants:
//! - The tray is optional. When it cannot be made (no tray library, no tray host) the app logs a
//!   warning and runs without one; [`Tray::set_count`] is then never called.
//! - Quitting leaves VMs running: they are separate processes and outlive the app; the embedded
//!   API simply stops serving. Only "Quit and stop all instances" stops them, and it waits at
//!   most [`STOP_DEADLINE`] for the engine's answers before exiting anyway.
//! - The count shows in the first (disabled) menu item everywhere and in the tooltip where the
//!   platform has one (not on Linux, where the indicator protocol has no tooltips).

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tauri::menu::{Menu, MenuEvent, MenuItem, PredefinedMenuItem, Submenu};
use tauri::tray::{TrayIcon, TrayIconBuilder};
use tauri::{AppHandle, Manager, Runtime};

use crate::api::Api;
use crate::link::EngineLink;
use crate::status;

/// How long "Quit and stop all instances" waits for the stops before exiting anyway.
pub const STOP_DEADLINE: Duration = Duration::from_secs(30);

const TRAY_ID: &str = "hypedeck";
const MENU_COUNT: &str = "count";
const MENU_OPEN: &str = "open";
const MENU_QUIT: &str = "quit";
const MENU_QUIT_STOP: &str = "quit-stop";
const MENU_MEMORY: &str = "memory";
const MENU_SHARES: &str = "shares";
/// Sandboxes named in the memory submenu (the biggest).
pub const SHARES_SHOWN: usize = 8;

/// The tray icon and the menu item that shows the count. Tauri-managed when the tray exists.
pub struct Tray<R: Runtime> {
    icon: TrayIcon<R>,
    count: MenuItem<R>,
    memory: MenuItem<R>,
    shares: Submenu<R>,
    /// The lines the submenu shows (rebuilt only when they change).
    shown: Mutex<Vec<String>>,
    quit: MenuItem<R>,
    quit_stop: MenuItem<R>,
    stopping: AtomicBool,
}

impl<R: Runtime> fmt::Debug for Tray<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tray")
            .field("id", self.icon.id())
            .field("stopping", &self.stopping)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> Tray<R> {
    /// Makes the tray, or logs why there is none.
    pub fn create(app: &AppHandle<R>) -> Option<Tray<R>> {
        // libappindicator is loaded at run time and its loader panics when the library is
        // missing; a missing tray must not take the app down.
        match catch_unwind(AssertUnwindSafe(|| build(app))) {
            Ok(Ok(tray)) => Some(tray),
            Ok(Err(e)) => {
                tracing::warn!("no tray icon: {e}");
                None
            }
            Err(panic) => {
                let why = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("the tray library is unavailable");
                tracing::warn!("no tray icon: {}", why.lines().next().unwrap_or(why));
                None
            }
        }
    }

    /// Shows `running` as the number of running instances.
    pub fn set_count(&self, running: usize) {
        if self.stopping.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = self.count.set_text(status::count_label(running)) {
            tracing::debug!("tray count: {e}");
        }
        if let Err(e) = self.icon.set_tooltip(Some(status::tray_tooltip(running))) {
            tracing::debug!("tray tooltip: {e}");
        }
    }

    /// Shows the sandboxes' memory (`summary`) and each one's share (`lines`).
    pub fn set_memory(&self, summary: &str, lines: &[String]) {
        if self.stopping.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = self.memory.set_text(summary) {
            tracing::debug!("tray memory: {e}");
        }
        let mut shown = self.shown.lock().unwrap_or_else(|p| p.into_inner());
        if *shown == lines {
            return;
        }
        let rebuilt = (|| -> tauri::Result<()> {
            while self.shares.remove_at(0)?.is_some() {}
            for line in lines {
                let item = MenuItem::new(self.icon.app_handle(), line, false, None::<&str>)?;
                self.shares.append(&item)?;
            }
            self.shares.set_enabled(!lines.is_empty())
        })();
        match rebuilt {
            Ok(()) => *shown = lines.to_vec(),
            Err(e) => tracing::debug!("tray memory shares: {e}"),
        }
    }
}

fn build<R: Runtime>(app: &AppHandle<R>) -> tauri::Result<Tray<R>> {
    let count = MenuItem::with_id(app, MENU_COUNT, status::count_label(0), false, None::<&str>)?;
    let memory = MenuItem::with_id(app, MENU_MEMORY, "Sandboxes use 0 B", false, None::<&str>)?;
    let shares = Submenu::with_id_and_items(app, MENU_SHARES, "Memory by sandbox", false, &[])?;
    let open = MenuItem::with_id(app, MENU_OPEN, "Open Hypedeck", true, None::<&str>)?;
    let quit = MenuItem::with_id(
        app,
        MENU_QUIT,
        "Quit (instances keep running)",
        true,
        None::<&str>,
    )?;
    let quit_stop = MenuItem::with_id(
        app,
        MENU_QUIT_STOP,
        "Quit and stop all instances",
        true,
        None::<&str>,
    )?;
    let separator = PredefinedMenuItem::separator(app)?;
    let menu = Menu::with_items(
        app,
        &[
            &count, &memory, &shares, &open, &separator, &quit, &quit_stop,
        ],
    )?;

    let mut builder = TrayIconBuilder::with_id(TRAY_ID)
        .menu(&menu)
        .tooltip(status::tray_tooltip(0))
        .on_menu_event(on_menu_event);
    if let Some(icon) = app.default_window_icon() {
        builder = builder.icon(icon.clone());
    }
    let icon = builder.build(app)?;
    Ok(Tray {
        icon,
        count,
        memory,
        shares,
        shown: Mutex::new(Vec::new()),
        quit,
        quit_stop,
        stopping: AtomicBool::new(false),
    })
}

fn on_menu_event<R: Runtime>(app: &AppHandle<R>, event: MenuEvent) {
    match event.id().as_ref() {
        MENU_OPEN => open_window(app),
        MENU_QUIT => {
            tracing::info!("quit from the tray; instances keep running");
            app.exit(0);
        }
        MENU_QUIT_STOP => quit_and_stop(app),
        _ => {}
    }
}

/// Shows, unminimizes and focuses the main window.
fn open_window<R: Runtime>(app: &AppHandle<R>) {
    let Some(window) = app.get_webview_window("main") else {
        tracing::warn!("no main window to open");
        return;
    };
    for (what, result) in [
        ("show", window.show()),
        ("unminimize", window.unminimize()),
        ("focus", window.set_focus()),
    ] {
        if let Err(e) = result {
            tracing::warn!("open the window: {what}: {e}");
        }
    }
}

/// Stops every running instance (bounded by [`STOP_DEADLINE`]), then exits. A second click
/// while stopping does nothing.
fn quit_and_stop<R: Runtime>(app: &AppHandle<R>) {
    if let Some(tray) = app.try_state::<Tray<R>>() {
        if tray.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = tray.count.set_text("Stopping instances…");
        let _ = tray.quit.set_enabled(false);
        let _ = tray.quit_stop.set_enabled(false);
    }
    let app = app.clone();
    tauri::async_runtime::spawn(async move {
        match app.state::<EngineLink>().connection().await {
            Ok(connection) => match Api::new(&connection) {
                Ok(api) => {
                    let report = api.stop_all(STOP_DEADLINE).await;
                    tracing::info!(
                        asked = report.asked,
                        stopped = report.stopped,
                        timed_out = report.timed_out,
                        "quit from the tray after stopping instances"
                    );
                }
                Err(e) => tracing::warn!("cannot stop instances: {e}"),
            },
            Err(e) => tracing::warn!("cannot stop instances: {e}"),
        }
        app.exit(0);
    });
}
