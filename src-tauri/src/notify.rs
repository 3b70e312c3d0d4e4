//! Desktop notifications, sent from Rust through `tauri-plugin-notification` (the webview gets
//! no notification permission: it asks the shell, e.g. with `notify_rotation_failed`).
//!
//! Invariants: a notification is best effort and never an error for the caller. On desktop the
//! plugin hands the notification to a task and drops any delivery error (no notification
//! server, as under Xvfb, is the usual one), so on Linux the shell asks the session bus once, at
//! start-up, whether a notification server is there and says so in the log. Bodies may be
//! API error texts: they are logged at debug level only.

use tauri::{AppHandle, Runtime};
use tauri_plugin_notification::NotificationExt;

/// Shows a notification; failures are logged and otherwise ignored.
pub fn show<R: Runtime>(app: &AppHandle<R>, title: &str, body: &str) {
    tracing::debug!(%title, %body, "notification");
    if let Err(e) = app.notification().builder().title(title).body(body).show() {
        tracing::warn!(%title, "cannot show a notification: {e}");
    }
}

/// Logs whether notifications can be shown at all (Linux and BSDs: is a notification server
/// on the session bus?). Runs the D-Bus round trip on a blocking thread.
pub fn probe() {
    #[cfg(all(unix, not(target_os = "macos")))]
    tauri::async_runtime::spawn_blocking(|| match notify_rust::get_server_information() {
        Ok(server) => tracing::info!(
            server = %server.name,
            version = %server.version,
            "desktop notifications available"
        ),
        Err(e) => {
            tracing::warn!("no desktop notification server, notifications will not show: {e}")
        }
    });
}
