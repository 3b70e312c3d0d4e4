//! Starting the engine + API for a data dir, or finding the one already running.
//!
//! Invariants: one engine per data dir (the store's lock); the API token and the key of
//! credential fingerprints live only in the OS keychain (accounts `api-token/<data dir>` and
//! `fingerprint-key/<data dir>`); the advertised endpoint file holds no secret.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hypedeck_api::{ApiState, ApiToken};
use hypedeck_engine::{Engine, EngineConfig, GuestRuntime};
use hypedeck_hypervisor::Hypervisor;
use hypedeck_model::HypervisorKind;
use hypedeck_secrets::{KeychainStore, SecretError, SecretStore};
use hypedeck_store::{EngineLock, Paths, StoreError};
use serde::{Deserialize, Serialize};

/// The keychain service every Hypedeck secret is filed under.
pub const KEYCHAIN_SERVICE: &str = hypedeck_engine::KEYCHAIN_SERVICE;

/// The default API address (upstream's port).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4973";

/// Which backend the engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HypervisorChoice {
    /// The best backend for this host.
    Auto,
    /// The in-memory fake (only in builds with the `fake-hypervisor` feature).
    Fake,
}

/// How to start a daemon.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Data dir.
    pub data_dir: PathBuf,
    /// API listen address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Backend.
    pub hypervisor: HypervisorChoice,
    /// Accept secret references (`op://`, `keychain:`, `cmd:`) from HTTP clients too, not only
    /// from the user at this machine (the engine's Unix socket). Off unless asked for.
    pub allow_http_secret_references: bool,
    /// Console log cap in bytes (`None`: `HYPEDECK_CONSOLE_LOG_MAX`, else the default).
    pub console_log_max: Option<u64>,
}

/// The console log size at which an instance's `app.log` is rotated, e.g. `64MB` (default
/// [`hypedeck_engine::DEFAULT_CONSOLE_LOG_MAX`]).
pub const CONSOLE_LOG_MAX_ENV: &str = "HYPEDECK_CONSOLE_LOG_MAX";

/// Set to `1`, like `hypedeck serve --allow-http-secret-references`.
pub const HTTP_SECRET_REFERENCES_ENV: &str = "HYPEDECK_ALLOW_HTTP_SECRET_REFERENCES";

/// Errors starting or finding a daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The data dir is unusable (or owned by another engine).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The keychain is unavailable or failed.
    #[error(
        "{0}; Hypedeck keeps its API token and credential values only in the OS keychain \
         (on Linux: a Secret Service such as gnome-keyring, unlocked, on the session D-Bus)"
    )]
    Keychain(#[from] SecretError),
    /// Binding the API socket failed.
    #[error("listen on {addr}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The engine failed to re-attach to running VMs.
    #[error("reconcile instances")]
    Engine(#[from] hypedeck_engine::EngineError),
    /// Randomness was unavailable.
    #[error("generate token")]
    Random,
    /// The requested backend is not in this build.
    #[error("{0}")]
    Unsupported(String),
}

/// What `engine.json` advertises to other processes (no secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Base URL of the API.
    pub url: String,
    /// Process id of the engine.
    pub pid: u32,
}

impl Endpoint {
    /// The endpoint of the engine owning `data_dir`, if one is running.
    pub fn find(data_dir: &Path) -> Option<Endpoint> {
        let paths = Paths::new(data_dir);
        EngineLock::holder(&paths)?;
        let bytes = std::fs::read(paths.engine_endpoint()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// A running engine + API server. Dropping it stops the server (VMs keep running).
#[derive(Debug)]
pub struct Daemon {
    /// Base URL of the API.
    pub url: String,
    /// The address actually bound.
    pub addr: SocketAddr,
    /// The bearer token.
    pub token: ApiToken,
    shutdown: Option<tokio::sync::watch::Sender<bool>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    local_task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// Rotates console logs over their cap; runs due snapshot schedules.
    housekeeping: Vec<tokio::task::JoinHandle<()>>,
    paths: Paths,
    _lock: EngineLock,
}

impl Daemon {
    /// Waits until the server stops (it only stops on [`Daemon::stop`] or an I/O error).
    pub async fn wait(&mut self) -> std::io::Result<()> {
        match self.task.take() {
            Some(task) => task.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }

    /// Stops accepting requests and finishes in-flight ones.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        let result = self.wait().await;
        if let Some(task) = self.local_task.take() {
            let _ = task.await;
        }
        self.housekeeping
            .iter()
            .for_each(tokio::task::JoinHandle::abort);
        let _ = std::fs::remove_file(self.paths.engine_endpoint());
        let _ = std::fs::remove_file(self.paths.api_socket());
        result
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        self.housekeeping
            .iter()
            .for_each(tokio::task::JoinHandle::abort);
    }
}

fn token_account(data_dir: &Path) -> String {
    let canonical = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    format!("api-token/{}", canonical.display())
}

/// The API token for `data_dir`, created and stored in the keychain on first use.
pub fn load_or_create_token(
    store: &dyn SecretStore,
    data_dir: &Path,
) -> Result<ApiToken, DaemonError> {
    hypedeck_store::create_private_dir(data_dir)?;
    let account = token_account(data_dir);
    if let Some(token) = store.get(&account)? {
        return Ok(ApiToken::new(token));
    }
    let token = hypedeck_api::generate_token().map_err(|_| DaemonError::Random)?;
    store.set(&account, &token)?;
    Ok(ApiToken::new(token))
}

/// The fingerprints of credential values for `data_dir`: HMAC-SHA256 under a key kept in the
/// keychain, made on first use. One per data dir, shared by the egress proxy (trail events) and
/// the engine (the API's credential list), so both give a value the same fingerprint.
pub fn load_or_create_fingerprints(
    store: &dyn SecretStore,
    data_dir: &Path,
) -> Result<hypedeck_egress::Fingerprinter, DaemonError> {
    let account = format!("fingerprint-key/{}", canonical(data_dir).display());
    hypedeck_egress::Fingerprinter::load_or_create(store, &account).map_err(|e| match e {
        hypedeck_egress::EgressError::FingerprintKeyStore(source) => DaemonError::Keychain(source),
        other => DaemonError::Unsupported(format!("credential fingerprint key: {other}")),
    })
}

/// Replaces the API token of `data_dir` in the keychain with a fresh one (for when no engine
/// serves it; a running engine rotates with `POST /system/token/rotate`). Returns the new token.
pub fn rotate_stored_token(
    store: &dyn SecretStore,
    data_dir: &Path,
) -> Result<ApiToken, DaemonError> {
    hypedeck_store::create_private_dir(data_dir)?;
    let token = hypedeck_api::generate_token().map_err(|_| DaemonError::Random)?;
    store.set(&token_account(data_dir), &token)?;
    Ok(ApiToken::new(token))
}

/// Opens the OS keychain.
pub fn open_keychain() -> Result<Arc<dyn SecretStore>, DaemonError> {
    Ok(Arc::new(KeychainStore::open(KEYCHAIN_SERVICE)?))
}

/// The first-run checks without an engine (the desktop shows them when the engine cannot
/// start, e.g. with no keychain; `hypedeck doctor` prints them): the same checks as
/// `GET /system/checks`, with the default backend detected and the keychain probed here.
pub async fn local_checks(data_dir: &Path) -> Vec<hypedeck_engine::checks::Check> {
    use hypedeck_engine::checks;
    let kind = checks::host_default();
    let backend = match select_hypervisor(HypervisorChoice::Auto) {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(reason)) => Err(reason),
        Err(e) => Err(e.to_string()),
    };
    let keychain = tokio::task::spawn_blocking(|| open_keychain().map(|_| ()))
        .await
        .unwrap_or(Err(DaemonError::Random))
        .map_err(|e| e.to_string());
    checks::all(
        checks::hypervisor(kind, backend.as_ref().map(|_| ()).map_err(String::as_str)),
        &Paths::new(data_dir).system(),
        keychain.as_ref().map(|_| ()).map_err(String::as_str),
    )
    .await
}

/// The backends an instance can ask for besides the default, each with why it cannot run
/// here when it cannot. Linux: QEMU by default, Cloud Hypervisor when installed with KVM.
/// macOS: vz by default, QEMU when installed.
fn alternative_hypervisors(
    choice: HypervisorChoice,
) -> Vec<(HypervisorKind, hypedeck_engine::MaybeBackend)> {
    if matches!(choice, HypervisorChoice::Fake) {
        // UI suites: a second backend with Cloud Hypervisor's identity and capabilities, and
        // one that cannot run here.
        #[cfg(feature = "fake-hypervisor")]
        return vec![
            (
                HypervisorKind::CloudHypervisor,
                Ok(hypedeck_engine::fake::FakeHypervisor::posing_as(
                    HypervisorKind::CloudHypervisor,
                    hypedeck_hv_cloudhv::CAPABILITIES,
                ) as Arc<dyn Hypervisor>),
            ),
            (
                HypervisorKind::Vz,
                Err("Apple Virtualization.framework is only available on macOS".to_string()),
            ),
        ];
        #[cfg(not(feature = "fake-hypervisor"))]
        return Vec::new();
    }
    let cloud_hypervisor = if cfg!(target_os = "linux") {
        hypedeck_hv_cloudhv::CloudHypervisor::detect().map(|h| Arc::new(h) as Arc<dyn Hypervisor>)
    } else {
        Err("Cloud Hypervisor runs on Linux hosts only".to_string())
    };
    let mut backends = vec![(HypervisorKind::CloudHypervisor, cloud_hypervisor)];
    if cfg!(target_os = "macos") {
        backends.push((
            HypervisorKind::Qemu,
            hypedeck_hv_qemu::QemuHypervisor::detect().map(|q| Arc::new(q) as Arc<dyn Hypervisor>),
        ));
    } else {
        backends.push((
            HypervisorKind::Vz,
            Err("Apple Virtualization.framework is only available on macOS".to_string()),
        ));
    }
    backends
}

fn select_hypervisor(
    choice: HypervisorChoice,
) -> Result<Result<Arc<dyn Hypervisor>, String>, DaemonError> {
    match choice {
        HypervisorChoice::Auto if cfg!(target_os = "macos") => {
            Ok(hypedeck_hv_vz::VzHypervisor::detect().map(|h| Arc::new(h) as Arc<dyn Hypervisor>))
        }
        HypervisorChoice::Auto => {
            Ok(hypedeck_hv_qemu::QemuHypervisor::detect()
                .map(|q| Arc::new(q) as Arc<dyn Hypervisor>))
        }
        #[cfg(feature = "fake-hypervisor")]
        HypervisorChoice::Fake => {
            let fake = hypedeck_engine::fake::FakeHypervisor::new();
            // UI suites: templates (one per vCPU count and memory size) when asked.
            if std::env::var_os("HYPEDECK_FAKE_TEMPLATES").is_some() {
                fake.set_script(hypedeck_engine::fake::Script {
                    templates: true,
                    ..Default::default()
                });
            }
            Ok(Ok(fake))
        }
        #[cfg(not(feature = "fake-hypervisor"))]
        HypervisorChoice::Fake => Err(DaemonError::Unsupported(
            "the fake hypervisor is only in test builds (feature fake-hypervisor)".into(),
        )),
    }
}

/// The egress proxy: its CA certificate on disk, the CA key in the keychain, upstream TLS
/// verified against the system roots plus `HYPEDECK_EGRESS_EXTRA_CA` (a PEM bundle) if set.
async fn start_egress(
    paths: &Paths,
    keychain: Arc<dyn SecretStore>,
    data_dir: &Path,
    fingerprints: hypedeck_egress::Fingerprinter,
) -> Result<hypedeck_egress::EgressProxy, DaemonError> {
    let cert = paths.egress_ca_cert();
    hypedeck_store::create_private_dir(cert.parent().unwrap_or(paths.root()))?;
    let account = format!("egress-ca-key/{}", canonical(data_dir).display());
    let ca = tokio::task::spawn_blocking(move || {
        hypedeck_egress::CertificateAuthority::load_or_create(&cert, keychain.as_ref(), &account)
    })
    .await
    .map_err(|_| DaemonError::Random)?
    .map_err(|e| DaemonError::Unsupported(format!("egress proxy CA: {e}")))?;
    let mut trust = hypedeck_egress::UpstreamTrust::system();
    if let Some(extra) = std::env::var_os("HYPEDECK_EGRESS_EXTRA_CA") {
        let pem = std::fs::read_to_string(&extra)
            .map_err(|e| DaemonError::Unsupported(format!("read HYPEDECK_EGRESS_EXTRA_CA: {e}")))?;
        trust = trust
            .with_extra_pem(&pem)
            .map_err(|e| DaemonError::Unsupported(format!("HYPEDECK_EGRESS_EXTRA_CA: {e}")))?;
    }
    // The proxy is the guest's only way out, so by default it refuses host-local destinations
    // (the host's own services must not be reachable from a sandbox). Test suites whose HTTPS
    // upstream runs on 127.0.0.1 opt in with HYPEDECK_EGRESS_ALLOW_LOOPBACK=1.
    // Every injection and refusal goes to the instance's credential trail.
    let trail = hypedeck_engine::trail::CredentialTrail::start(paths.clone())
        .map_err(|e| DaemonError::Unsupported(format!("start the credential trail writer: {e}")))?;
    // Beyond loopback, the proxy refuses what the sandbox network refuses: the host's own
    // addresses, link-local (cloud metadata) and private ranges.
    let destinations = hypedeck_egress::DestinationFilter(Arc::new(|ip| match ip {
        std::net::IpAddr::V4(v4) => hypedeck_netstack::Policy::default()
            .check(v4, &hypedeck_netstack::host_addresses())
            .is_ok(),
        std::net::IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            // Link-local fe80::/10, unique local fc00::/7, and the host's own addresses.
            first & 0xffc0 != 0xfe80
                && first & 0xfe00 != 0xfc00
                && !hypedeck_netstack::host_addresses().contains(&ip)
        }
    }));
    let options = hypedeck_egress::ProxyOptions {
        allow_loopback: std::env::var("HYPEDECK_EGRESS_ALLOW_LOOPBACK").is_ok_and(|v| v == "1"),
        destinations: Some(destinations),
        usage: Some(Arc::new(trail)),
        fingerprints: Some(fingerprints),
        ..hypedeck_egress::ProxyOptions::default()
    };
    hypedeck_egress::EgressProxy::with_options(ca, trust, options)
        .map_err(|e| DaemonError::Unsupported(format!("egress proxy: {e}")))
}

fn canonical(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// Starts the engine and its API for a data dir. Fails with [`StoreError::Locked`] if another
/// engine owns it (use [`Endpoint::find`] to attach instead).
pub async fn start(options: DaemonOptions) -> Result<Daemon, DaemonError> {
    let paths = Paths::new(&options.data_dir);
    let lock = EngineLock::acquire(&paths)?;
    // A previous engine that died without cleaning up left its endpoint behind: drop it
    // before anyone can read it as ours.
    let _ = std::fs::remove_file(paths.engine_endpoint());
    let hypervisor = select_hypervisor(options.hypervisor)?;
    let keychain = open_keychain()?;
    let keychain_for_token = keychain.clone();
    let token = {
        let keychain = keychain.clone();
        let dir = options.data_dir.clone();
        tokio::task::spawn_blocking(move || load_or_create_token(keychain.as_ref(), &dir))
            .await
            .map_err(|_| DaemonError::Random)??
    };
    let fingerprints = {
        let keychain = keychain.clone();
        let dir = options.data_dir.clone();
        tokio::task::spawn_blocking(move || load_or_create_fingerprints(keychain.as_ref(), &dir))
            .await
            .map_err(|_| DaemonError::Random)??
    };
    let guest = match options.hypervisor {
        HypervisorChoice::Fake => None,
        HypervisorChoice::Auto => {
            // `HYPEDECK_REGISTRY_MIRRORS=docker.io=mirror.example:5000,…`: pull through mirrors.
            let mirrors = hypedeck_images::Mirrors::parse(
                &std::env::var("HYPEDECK_REGISTRY_MIRRORS").unwrap_or_default(),
            )
            .map_err(|e| DaemonError::Unsupported(format!("HYPEDECK_REGISTRY_MIRRORS: {e}")))?;
            let images = hypedeck_images::ImageStore::open_with(paths.images(), 1, mirrors)
                .map_err(|e| DaemonError::Unsupported(format!("open the image cache: {e}")))?;
            let egress = start_egress(
                &paths,
                keychain.clone(),
                &options.data_dir,
                fingerprints.clone(),
            )
            .await?;
            Some(GuestRuntime {
                images: Arc::new(images),
                system_dir: paths.system(),
                egress: Some(Arc::new(egress)),
            })
        }
    };
    let engine = Engine::new(EngineConfig {
        paths: paths.clone(),
        secrets: keychain,
        hypervisor,
        alternatives: alternative_hypervisors(options.hypervisor),
        guest,
        fingerprints,
    });
    // Resolving a secret reference runs what the user's 1Password, keychain or shell can: only
    // for the user at this machine (the Unix socket), unless HTTP clients were let in.
    engine.allow_http_secret_references(options.allow_http_secret_references);
    if options.allow_http_secret_references {
        let warning = "WARNING: --allow-http-secret-references: any holder of the API token can \
                       make this engine run commands and read keychain items as you";
        tracing::warn!("{warning}");
        eprintln!("{warning}");
    }
    if let Some(bytes) = options.console_log_max {
        engine.set_console_log_max(bytes);
    } else if let Ok(text) = std::env::var(CONSOLE_LOG_MAX_ENV) {
        let bytes = hypedeck_model::size::parse_size(&text).map_err(|e| {
            DaemonError::Unsupported(format!("{CONSOLE_LOG_MAX_ENV}={text:?}: {e}"))
        })?;
        engine.set_console_log_max(bytes);
    }
    engine.reconcile().await?;
    let engine = Arc::new(engine);
    let housekeeping = vec![
        engine.spawn_console_rotation(),
        engine.spawn_snapshot_schedules(),
        engine.spawn_stats_sampler(),
        engine.spawn_auto_standby(),
        engine.spawn_memory_reconciler(),
    ];

    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| DaemonError::Bind {
            addr: options.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| DaemonError::Bind {
        addr: options.listen,
        source,
    })?;
    let url = format!("http://{addr}");
    if !addr.ip().is_loopback() {
        let warning = format!(
            "WARNING: the Hypeman API listens on {addr}, reachable from other machines. Anyone \
             who gets the token controls every sandbox and its credentials, and the API speaks \
             plain HTTP: put a TLS proxy in front of it, or listen on 127.0.0.1."
        );
        tracing::warn!("{warning}");
        eprintln!("{warning}");
    }
    hypedeck_store::write_json(
        &paths.engine_endpoint(),
        &Endpoint {
            url: url.clone(),
            pid: std::process::id(),
        },
    )?;

    // A rotation through the API is stored in the keychain before it takes effect.
    let token = {
        let keychain = keychain_for_token.clone();
        let account = token_account(&options.data_dir);
        token.persisted_with(Arc::new(
            move |fresh: &hypedeck_secrets::Sensitive<String>| {
                keychain.set(&account, fresh).map_err(|e| e.to_string())
            },
        ))
    };
    let state = ApiState {
        engine,
        token: token.clone(),
    };
    let app = hypedeck_api::router(state.clone());
    let (tx, rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let task = tokio::spawn({
        let rx = rx.clone();
        async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stopped(rx))
                .await
        }
    });
    #[cfg(unix)]
    let local_task = match crate::local::bind(&paths.api_socket()) {
        Ok(local) => {
            let app = hypedeck_api::local_router(state);
            Some(tokio::spawn(async move {
                axum::serve(local, app)
                    .with_graceful_shutdown(stopped(rx))
                    .await
            }))
        }
        Err(e) => {
            tracing::warn!(error = %e, socket = %paths.api_socket().display(), "no local API socket: secret references can be set only over HTTP with the opt-in");
            None
        }
    };
    #[cfg(not(unix))]
    let local_task = None;
    tracing::info!(%url, data_dir = %options.data_dir.display(), "hypedeck engine serving");
    Ok(Daemon {
        url,
        addr,
        token,
        shutdown: Some(tx),
        task: Some(task),
        local_task,
        housekeeping,
        paths,
        _lock: lock,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use hypedeck_secrets::MemoryStore;

    #[test]
    fn fingerprints_have_one_key_per_data_dir_kept_only_in_the_keychain() {
        let store = MemoryStore::new();
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let first = load_or_create_fingerprints(&store, a.path()).unwrap();
        let again = load_or_create_fingerprints(&store, a.path()).unwrap();
        assert_eq!(first.fingerprint("sk-1"), again.fingerprint("sk-1"));
        let other = load_or_create_fingerprints(&store, b.path()).unwrap();
        assert_ne!(first.fingerprint("sk-1"), other.fingerprint("sk-1"));
        let account = format!("fingerprint-key/{}", canonical(a.path()).display());
        let key = store
            .get(&account)
            .unwrap()
            .expect("the key is in the keychain");
        assert_eq!(key.expose().len(), 64);
        // Nothing of it in the data dir.
        let mut stack = vec![a.path().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let bytes = std::fs::read(&path).unwrap();
                    assert!(
                        !String::from_utf8_lossy(&bytes).contains(key.expose().as_str()),
                        "{}",
                        path.display()
                    );
                }
            }
        }
    }
}
