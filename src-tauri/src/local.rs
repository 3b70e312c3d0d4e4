//! `local_api`: the window's way to the engine's Unix socket, for the few requests that may set
//! or use secret references (which run programs and read keychain items as the user). The
//! engine accepts those only from the user at this machine; the window is that user, a token
//! holder over HTTP is not. Only these requests pass, only to this computer's engine:
//!
//! - `POST /instances` (a create may carry references),
//! - `PATCH /instances/{id}` (a rotation may),
//! - `POST /instances/{id}/credentials/{name}/resolve` ("re-resolve now"),
//! - `GET /system/keychain/items` (the picker: names of the user's keychain items).

use serde::Serialize;

use crate::link::EngineLink;

/// The engine's answer: status and body (JSON text).
#[derive(Debug, Serialize)]
pub struct LocalAnswer {
    /// HTTP status.
    pub status: u16,
    /// Response body.
    pub body: String,
}

/// Whether the window may send `method path` over the Unix socket.
pub fn allowed(method: &str, path: &str) -> bool {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let plain = |s: &str| !s.is_empty() && !s.contains(['?', '#', '%', '.']);
    match (method, segments.as_slice()) {
        ("POST", ["instances"]) => true,
        ("PATCH", ["instances", id]) => plain(id),
        ("POST", ["instances", id, "credentials", name, "resolve"]) => plain(id) && plain(name),
        ("GET", ["system", "keychain", "items"]) => true,
        _ => false,
    }
}

/// Sends one allowed request to this computer's engine over its Unix socket.
pub async fn request(
    link: &EngineLink,
    method: &str,
    path: &str,
    body: Option<String>,
) -> Result<LocalAnswer, String> {
    if !allowed(method, path) {
        return Err(format!(
            "{method} {path} does not go through the local socket"
        ));
    }
    let connection = link.connection().await?;
    if connection.mode == crate::link::Mode::Remote {
        return Err("secret references are set only on this computer's engine".into());
    }
    let dir = link
        .data_dir()
        .ok_or_else(|| "cannot determine a data dir".to_string())?;
    let socket = hypedeck_cli::local::socket_path(dir);
    let (status, bytes) = hypedeck_cli::local::request(
        &socket,
        &connection.token,
        method,
        path,
        body.map(String::into_bytes),
    )
    .await
    .map_err(|e| format!("cannot reach the engine's socket {}: {e}", socket.display()))?;
    Ok(LocalAnswer {
        status,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::allowed;

    #[test]
    fn only_the_requests_that_may_carry_references_pass() {
        assert!(allowed("POST", "/instances"));
        assert!(allowed("PATCH", "/instances/abc"));
        assert!(allowed("POST", "/instances/abc/credentials/OPENAI/resolve"));
        assert!(allowed("GET", "/system/keychain/items"));
        for (method, path) in [
            ("DELETE", "/instances/abc"),
            ("GET", "/instances"),
            ("POST", "/system/token/rotate"),
            ("PATCH", "/instances/../system/token/rotate"),
            ("PATCH", "/instances/abc?x=1"),
            ("PATCH", "/instances/abc/extra"),
            ("POST", "/instances/abc/exec"),
        ] {
            assert!(!allowed(method, path), "{method} {path}");
        }
    }
}
