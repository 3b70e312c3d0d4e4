//! The window's link to an engine: the one this process starts (embedded) or the one already
//! serving the data dir (attached; one engine per data dir, so never a second one).
//!
//! The link is made on first use and kept for the life of the app: an embedded [`Daemon`]
//! serves for as long as it is held here. A failure is not kept: the UI shows its text (e.g.
//! the keychain is locked) with the setup checks, and the next call (the user fixed it and
//! pressed "Re-check") tries again.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hypedeck_cli::daemon::{self, Daemon, DaemonError, DaemonOptions, Endpoint, HypervisorChoice};
use hypedeck_model::error::sentence;
use hypedeck_store::StoreError;
use serde::Serialize;
use tokio::sync::Mutex;

/// Upstream Hypeman's port, tried first so SDK defaults work; any free port if it is taken.
const PREFERRED_PORT: u16 = 4973;

/// How long to wait for an engine that holds the data dir lock to advertise its endpoint.
const ATTACH_WAIT: Duration = Duration::from_secs(10);

/// Whether the window's engine runs in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Started by this app; it stops serving when the app quits (VMs keep running).
    Embedded,
    /// Another process (`hypedeck serve`, another app) owns the data dir.
    Attached,
    /// A Hypeman server elsewhere (a remote the user added).
    Remote,
}

/// What the UI needs to reach the API. `Debug` never shows the token.
#[derive(Clone, Serialize)]
pub struct Connection {
    /// Base URL of the API.
    pub url: String,
    /// Bearer token for the API.
    pub token: String,
    /// Embedded or attached.
    pub mode: Mode,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field("mode", &self.mode)
            .finish()
    }
}

#[derive(Debug)]
enum Link {
    Embedded(Daemon),
    Attached(Connection),
}

impl Link {
    fn connection(&self) -> Connection {
        match self {
            Link::Embedded(d) => Connection {
                url: d.url.clone(),
                token: d.token.expose().to_owned(),
                mode: Mode::Embedded,
            },
            Link::Attached(c) => c.clone(),
        }
    }
}

/// Tauri-managed state: the link for the data dir, made on first use.
#[derive(Debug)]
pub struct EngineLink {
    data_dir: Option<PathBuf>,
    /// Where to serve (settings); `None`: 4973, or any free port if that is taken.
    listen: Option<SocketAddr>,
    /// Console log cap (settings); `None`: the engine's default.
    console_log_max: Option<u64>,
    link: Mutex<Option<Link>>,
}

impl EngineLink {
    /// A link for `data_dir` (`None`: the platform has no data dir and none was configured).
    pub fn new(
        data_dir: Option<PathBuf>,
        listen: Option<SocketAddr>,
        console_log_max: Option<u64>,
    ) -> Self {
        EngineLink {
            data_dir,
            listen,
            console_log_max,
            link: Mutex::new(None),
        }
    }

    /// The API to use, starting or finding the engine until that succeeds once. Concurrent
    /// callers wait for the same attempt. The error is a sentence for the UI.
    pub async fn connection(&self) -> Result<Connection, String> {
        let mut link = self.link.lock().await;
        if let Some(link) = link.as_ref() {
            return Ok(link.connection());
        }
        let dir = self
            .data_dir
            .as_deref()
            .ok_or_else(|| "cannot determine a data dir; set HYPEDECK_DATA_DIR".to_string())?;
        let made = establish(dir, self.listen, self.console_log_max).await?;
        let connection = made.connection();
        *link = Some(made);
        Ok(connection)
    }

    /// The data dir this link serves.
    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_deref()
    }
}

async fn establish(
    dir: &Path,
    listen: Option<SocketAddr>,
    console_log_max: Option<u64>,
) -> Result<Link, String> {
    if let Some(endpoint) = Endpoint::find(dir) {
        return attach(dir, endpoint).await;
    }
    let preferred = SocketAddr::from((Ipv4Addr::LOCALHOST, PREFERRED_PORT));
    let started = match start(dir, listen.unwrap_or(preferred), console_log_max).await {
        // The default port is a preference; an address from the settings is not.
        Err(DaemonError::Bind { addr, .. }) if listen.is_none() => {
            tracing::info!(%addr, "port taken; serving on any free port");
            start(
                dir,
                SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                console_log_max,
            )
            .await
        }
        other => other,
    };
    match started {
        Ok(daemon) => Ok(Link::Embedded(daemon)),
        // Another engine took the data dir first: attach once it says where it listens.
        Err(DaemonError::Store(StoreError::Locked { .. })) => match advertised(dir).await {
            Some(endpoint) => attach(dir, endpoint).await,
            None => Err(format!(
                "data dir {} is locked by another hypedeck engine that does not say where it \
                 listens",
                dir.display()
            )),
        },
        Err(e) => Err(format!(
            "cannot start the engine for {}: {}",
            dir.display(),
            sentence(&e)
        )),
    }
}

async fn start(
    dir: &Path,
    listen: SocketAddr,
    console_log_max: Option<u64>,
) -> Result<Daemon, DaemonError> {
    daemon::start(DaemonOptions {
        data_dir: dir.to_path_buf(),
        listen,
        hypervisor: HypervisorChoice::Auto,
        // The window sets references through the shell and the engine's Unix socket.
        allow_http_secret_references: false,
        console_log_max,
    })
    .await
}

/// The endpoint of the engine holding the lock, once it has written it.
async fn advertised(dir: &Path) -> Option<Endpoint> {
    let step = Duration::from_millis(100);
    for _ in 0..(ATTACH_WAIT.as_millis() / step.as_millis()) {
        if let Some(endpoint) = Endpoint::find(dir) {
            return Some(endpoint);
        }
        tokio::time::sleep(step).await;
    }
    None
}

async fn attach(dir: &Path, endpoint: Endpoint) -> Result<Link, String> {
    let owned = dir.to_path_buf();
    // The keychain calls block (D-Bus round trips).
    let token = tokio::task::spawn_blocking(move || {
        let keychain = daemon::open_keychain()?;
        daemon::load_or_create_token(keychain.as_ref(), &owned)
    })
    .await
    .map_err(|e| format!("read the API token: {e}"))?
    .map_err(|e| {
        format!(
            "cannot read the API token of the engine at {}: {}",
            endpoint.url,
            sentence(&e)
        )
    })?;
    tracing::info!(url = %endpoint.url, pid = endpoint.pid, "attached to a running engine");
    Ok(Link::Attached(Connection {
        url: endpoint.url,
        token: token.expose().to_owned(),
        mode: Mode::Attached,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_serializes_for_the_ui_and_debug_hides_the_token() {
        let conn = Connection {
            url: "http://127.0.0.1:4973".into(),
            token: "hdk_secret".into(),
            mode: Mode::Embedded,
        };
        assert_eq!(
            serde_json::to_value(&conn).unwrap(),
            serde_json::json!({"url": "http://127.0.0.1:4973", "token": "hdk_secret", "mode": "embedded"})
        );
        assert!(!format!("{conn:?}").contains("hdk_secret"));
        assert_eq!(serde_json::to_value(Mode::Attached).unwrap(), "attached");
    }

    #[tokio::test]
    async fn without_a_data_dir_the_link_explains_itself() {
        let link = EngineLink::new(None, None, None);
        let err = link.connection().await.unwrap_err();
        assert!(err.contains("HYPEDECK_DATA_DIR"), "{err}");
    }
}
