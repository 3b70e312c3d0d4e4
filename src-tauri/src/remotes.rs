//! Remote Hypeman servers the window can switch to: the list (names and URLs) in the data
//! dir's `desktop/remotes.json`, API keys in the OS keychain (`hypedeck_remote`), health
//! checks with latency. Opened on first use, so a missing keychain only affects remotes.

use std::path::PathBuf;

use hypedeck_remote::{Health, Remote, RemoteStore};
use hypedeck_secrets::Sensitive;
use tokio::sync::OnceCell;

use crate::link::{Connection, Mode};

/// Tauri-managed state.
#[derive(Debug)]
pub struct Remotes {
    data_dir: Option<PathBuf>,
    store: OnceCell<Result<RemoteStore, String>>,
}

impl Remotes {
    /// Remotes kept under `data_dir`.
    pub fn new(data_dir: Option<PathBuf>) -> Remotes {
        Remotes {
            data_dir,
            store: OnceCell::new(),
        }
    }

    async fn store(&self) -> Result<RemoteStore, String> {
        self.store
            .get_or_init(|| async {
                let dir = self.data_dir.clone().ok_or_else(|| {
                    "no data directory: set HYPEDECK_DATA_DIR to keep remotes".to_string()
                })?;
                let keychain = hypedeck_cli::daemon::open_keychain()
                    .map_err(|e| hypedeck_model::error::sentence(&e))?;
                Ok(RemoteStore::new(dir.join("desktop/remotes.json"), keychain))
            })
            .await
            .clone()
    }

    /// Every remote.
    pub async fn list(&self) -> Result<Vec<Remote>, String> {
        let store = self.store().await?;
        blocking(move || store.list()).await
    }

    /// Adds a remote; its key goes to the keychain.
    pub async fn add(&self, name: String, url: String, key: String) -> Result<Remote, String> {
        let store = self.store().await?;
        let key = Sensitive::new(key);
        blocking(move || store.add(&name, &url, &key)).await
    }

    /// Removes a remote and its key.
    pub async fn remove(&self, id: String) -> Result<(), String> {
        let store = self.store().await?;
        blocking(move || store.remove(&id)).await
    }

    /// What the UI needs to talk to a remote.
    pub async fn connection(&self, id: String) -> Result<Connection, String> {
        let store = self.store().await?;
        let (remote, key) = blocking(move || store.get(&id)).await?;
        Ok(Connection {
            url: remote.url,
            token: key.expose().to_owned(),
            mode: Mode::Remote,
        })
    }
}

/// Checks any connection (this computer's engine or a remote).
pub async fn health(connection: &Connection) -> Health {
    hypedeck_remote::check(&connection.url, &Sensitive::new(connection.token.clone())).await
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, hypedeck_remote::RemoteError> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| "the keychain call did not finish".to_string())?
        .map_err(|e| hypedeck_model::error::sentence(&e))
}
