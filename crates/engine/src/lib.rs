//! The instance manager. One file per verb (`create.rs`, `delete.rs`, `update.rs`), state
//! derivation in `derive.rs`, lookups in `query.rs`, wire rendering in `render.rs`. The state
//! verbs share has owners: [`records::Records`] (metadata), [`vault::Vault`] (credential
//! values), [`runtime::Runtime`] (running VMs), `network::Networks` (sandbox stacks), and
//! [`staged::Staged`] guards what a launch or a create acquired. Verb files orchestrate them.
//!
//! The engine knows nothing of HTTP or Tauri. It takes validated domain values
//! ([`hypedeck_model::InstanceSpec`]) and answers domain errors ([`EngineError`]).
//!
//! Invariants:
//! - state is derived on every read (VMM query + boot markers + snapshot presence), never
//!   trusted from a file;
//! - every mutating verb holds the instance's lock, and a record is written only under it;
//!   create holds the engine-wide create lock so names stay unique;
//! - credential source values are kept in the [`SecretStore`] and in memory only.

mod agent;
mod autostandby;
mod boot;
pub mod checks;
mod command;
mod compression;
mod console;
mod create;
pub mod credentials;
mod delete;
mod derive;
mod egress;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
mod fork;
mod images;
mod lifecycle;
mod network;
mod ports;
mod provision;
mod query;
mod reclaim;
mod records;
mod render;
mod resources;
mod runtime;
mod schedules;
mod snapshots;
mod staged;
mod standby;
mod stats;
mod templates;
pub mod trail;
mod update;
mod vault;
mod volumes;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hypedeck_hypervisor::{Hypervisor, HypervisorError, Vm};
use hypedeck_model::{HypervisorKind, Rejection};
use hypedeck_secrets::{SecretError, SecretStore};
use hypedeck_store::{Paths, StoreError};

pub use agent::{AgentEvent, ExecSession};
pub use command::{LaunchCommand, Origin as CommandOrigin, Part as CommandPart};
pub use console::DEFAULT_CONSOLE_LOG_MAX;
pub use credentials::Caller;
pub use hypedeck_guest_init::agent_proto::{
    CopyError, CopyHeader, GetRequest, OpenRequest, PathInfo, PutRequest, PutResult,
};
pub use images::{HELLO_IMAGE, PullCredentials};
pub use lifecycle::{MAX_WAIT, STOP_TIMEOUT, StartOverrides, WaitOutcome};
pub use network::{FLOW_LOG_ENTRIES, NetworkPolicy};
pub use provision::{GuestRuntime, IMAGE_WAIT};
pub use query::ListFilter;
pub use snapshots::SnapshotFilter;
pub use templates::TemplateInfo;
pub use volumes::{MAX_ARCHIVE_BYTES, MAX_VOLUME_GB};

/// Errors of engine verbs. Messages are short and never contain secret values.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No instance matches.
    #[error("instance not found")]
    NotFound,
    /// More than one instance matches a name or id prefix.
    #[error("multiple resources match, use full ID")]
    Ambiguous,
    /// The request was refused by validation.
    #[error("{0}")]
    Rejected(Rejection),
    /// Another instance already has this name.
    #[error("instance name {0:?} already exists")]
    NameConflict(String),
    /// The operation is not allowed in the instance's current state.
    #[error("invalid state transition: {0}")]
    InvalidState(String),
    /// No hypervisor backend can run instances on this host.
    #[error("no hypervisor is available on this host: {0}")]
    NoHypervisor(String),
    /// The requested backend is not one Hypedeck runs.
    #[error("hypervisor {requested} is not available on this host (available: {available})")]
    HypervisorUnavailable {
        /// What the request asked for.
        requested: HypervisorKind,
        /// The backends this engine runs, comma-separated.
        available: String,
    },
    /// The requested backend is one Hypedeck runs, but not on this host (not installed, no
    /// KVM, another OS).
    #[error("hypervisor {kind} is not available on this host: {reason}")]
    BackendUnavailable {
        /// The backend.
        kind: HypervisorKind,
        /// Why, and how to fix it.
        reason: String,
    },
    /// Reading or writing the data dir failed.
    #[error("store")]
    Store(#[from] StoreError),
    /// The keychain failed.
    #[error("keychain")]
    Secrets(#[from] SecretError),
    /// The hypervisor failed.
    #[error("hypervisor")]
    Hypervisor(#[from] HypervisorError),
    /// A blocking task panicked or was cancelled.
    #[error("background task failed")]
    Task,
    /// The image is not in the registry (or access was refused).
    #[error("{0}")]
    ImageNotFound(String),
    /// The image reference does not parse.
    #[error("invalid image reference")]
    InvalidImageReference,
    /// The image has no manifest for the host platform.
    #[error("platform not available for image")]
    PlatformNotAvailable,
    /// The registry rate-limited the pull.
    #[error("registry rate limit exceeded; retry later or authenticate to the registry")]
    ImageRateLimited,
    /// The pull or conversion failed.
    #[error("image pull failed: {0}")]
    ImageFailed(String),
    /// The pull is still running.
    #[error("image not ready: image {0} is being pulled, please try again shortly")]
    ImageNotReady(String),
    /// A file or directory the engine keeps (overlay, volume disk, sample image layer) could
    /// not be made, read or removed.
    #[error("{what}")]
    Io {
        /// What the engine was doing, e.g. `create overlay`.
        what: String,
        /// The cause (kept for logs and disk-full detection).
        #[source]
        source: std::io::Error,
    },
    /// A file the engine keeps does not parse.
    #[error("{what} is damaged")]
    Corrupt {
        /// Which file.
        what: String,
    },
    /// Something the host must provide is missing or failed: a tool (`mkfs.ext4`), the guest
    /// kernel and initramfs, guest-init, the egress proxy, a feature of this OS.
    #[error("prepare guest: {0}")]
    Dependency(String),
    /// The egress proxy refused an operation (a rule swap, a test listener).
    #[error("egress proxy: {what}")]
    Egress {
        /// What the engine asked the proxy, e.g. `swap rules`.
        what: &'static str,
        /// The proxy's error.
        #[source]
        source: hypedeck_egress::EgressError,
    },
    /// Building a disk image failed (not because of what the client sent).
    #[error("{what}")]
    Build {
        /// What was built, e.g. `build the volume disk`.
        what: &'static str,
        /// The cause.
        #[source]
        source: hypedeck_images::ImageError,
    },
    /// The instance's sandbox network could not start.
    #[error("sandbox network: {what}")]
    Network {
        /// The step that failed, e.g. `connect to the VMM's frame socket`.
        what: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The guest agent could not be reached or answered badly.
    #[error("{0}")]
    Agent(String),
}

/// A backend, or why it cannot run on this host (what to install or fix).
pub type MaybeBackend = Result<Arc<dyn Hypervisor>, String>;

/// One backend as the engine knows it.
#[derive(Debug, Clone)]
pub struct BackendInfo {
    /// Which backend.
    pub kind: HypervisorKind,
    /// Whether instances get it when they do not ask.
    pub default: bool,
    /// What it supports, or why it cannot run on this host.
    pub capabilities: Result<hypedeck_hypervisor::Capabilities, String>,
}

/// How the engine is put together.
#[derive(Debug)]
pub struct EngineConfig {
    /// The data dir layout.
    pub paths: Paths,
    /// Where credential values are kept.
    pub secrets: Arc<dyn SecretStore>,
    /// The host's default backend, or why there is none.
    pub hypervisor: Result<Arc<dyn Hypervisor>, String>,
    /// The other backends an instance can ask for with `hypervisor`, each with why it
    /// cannot run here when it cannot.
    pub alternatives: Vec<(HypervisorKind, MaybeBackend)>,
    /// Images and boot assets for real guests (`None`: fake-hypervisor tests).
    pub guest: Option<GuestRuntime>,
    /// Fingerprints of credential values: the data dir's key, the same the egress proxy
    /// fingerprints its trail events with (tests: any key).
    pub fingerprints: hypedeck_egress::Fingerprinter,
}

/// The instance manager.
#[derive(Debug)]
pub struct Engine {
    paths: Paths,
    hypervisor: Result<Arc<dyn Hypervisor>, String>,
    alternatives: Vec<(HypervisorKind, MaybeBackend)>,
    guest: Option<GuestRuntime>,
    /// Credential values: the only owner of the keychain's instance items.
    vault: Arc<vault::Vault>,
    /// Running VMs, their agent links and boot markers.
    runtime: Arc<runtime::Runtime>,
    /// Serializes creates so names stay unique.
    create_lock: tokio::sync::Mutex<()>,
    /// Serializes schedule writes (PUT, DELETE, the runner).
    schedules: tokio::sync::Mutex<()>,
    /// Claims volume ids (create); imports run outside it.
    volume_lock: tokio::sync::Mutex<()>,
    /// Per-instance locks for mutating verbs.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Pulls started through the API: normalized name and digest, so `GET /images/{name}`
    /// can report progress before the cache has a record.
    pulls: Mutex<Vec<(String, hypedeck_images::Digest)>>,
    /// Running sandbox networks and their flow logs.
    networks: Arc<network::Networks>,
    /// Parsed metadata, re-read only when a file changes (listing is a `stat` per instance).
    records: Arc<records::Records>,
    /// Console logs are rotated beyond this size (see `console.rs`).
    console_log_max: std::sync::atomic::AtomicU64,
    /// Fingerprints of credential values (the data dir's key).
    fingerprints: hypedeck_egress::Fingerprinter,
    /// VM templates: made and used by starts (`boot.rs`).
    templates: Arc<templates::Templates>,
    /// Recent resource samples of every VM (`stats.rs`).
    samples: stats::Samples,
    /// The auto-standby controller's state, sleepers and exec counts (`autostandby.rs`).
    auto_standby: autostandby::AutoStandby,
    /// The memory reclaim hold and the balloons the engine moved (`reclaim.rs`).
    reclaim: reclaim::Reclaim,
    /// Whether this process pruned the boot cache yet (`boot.rs`).
    boot_cache_pruned: std::sync::atomic::AtomicBool,
}

impl Engine {
    /// An engine over a data dir. Call [`Engine::reconcile`] once before serving.
    pub fn new(config: EngineConfig) -> Engine {
        let templates = Arc::new(templates::Templates::new(config.paths.templates()));
        Engine {
            paths: config.paths.clone(),
            vault: Arc::new(vault::Vault::new(config.secrets)),
            runtime: Arc::default(),
            hypervisor: config.hypervisor,
            alternatives: config.alternatives,
            guest: config.guest,
            create_lock: tokio::sync::Mutex::new(()),
            schedules: tokio::sync::Mutex::new(()),
            volume_lock: tokio::sync::Mutex::new(()),
            locks: Mutex::new(HashMap::new()),
            pulls: Mutex::new(Vec::new()),
            networks: Arc::default(),
            records: Arc::new(records::Records::new(config.paths)),
            console_log_max: std::sync::atomic::AtomicU64::new(console::DEFAULT_CONSOLE_LOG_MAX),
            fingerprints: config.fingerprints,
            templates,
            samples: stats::Samples::default(),
            auto_standby: autostandby::AutoStandby::default(),
            boot_cache_pruned: std::sync::atomic::AtomicBool::new(false),
            reclaim: reclaim::Reclaim::default(),
        }
    }

    /// The data dir layout.
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// The host's default backend, if it can run.
    pub fn hypervisor_kind(&self) -> Option<HypervisorKind> {
        self.hypervisor.as_ref().ok().map(|h| h.kind())
    }

    /// Every backend this engine knows: kind, whether it is the default, and its
    /// capabilities or why it cannot run here.
    pub fn hypervisors(&self) -> Vec<BackendInfo> {
        let default = self.hypervisor.as_ref().ok().map(|h| BackendInfo {
            kind: h.kind(),
            default: true,
            capabilities: Ok(h.capabilities()),
        });
        default
            .into_iter()
            .chain(self.alternatives.iter().map(|(kind, h)| BackendInfo {
                kind: *kind,
                default: false,
                capabilities: h.as_ref().map(|h| h.capabilities()).map_err(Clone::clone),
            }))
            .collect()
    }

    /// The backend that runs `kind` instances.
    pub(crate) fn backend(&self, kind: HypervisorKind) -> Result<Arc<dyn Hypervisor>, EngineError> {
        if let Ok(h) = &self.hypervisor
            && h.kind() == kind
        {
            return Ok(h.clone());
        }
        match self.alternatives.iter().find(|(k, _)| *k == kind) {
            Some((_, Ok(h))) => Ok(h.clone()),
            Some((_, Err(reason))) => Err(EngineError::BackendUnavailable {
                kind,
                reason: reason.clone(),
            }),
            None => match &self.hypervisor {
                Err(reason) => Err(EngineError::NoHypervisor(reason.clone())),
                Ok(_) => Err(EngineError::HypervisorUnavailable {
                    requested: kind,
                    available: self
                        .hypervisors()
                        .iter()
                        .filter(|b| b.capabilities.is_ok())
                        .map(|b| b.kind.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                }),
            },
        }
    }

    /// Re-attaches to VMMs that outlived a previous engine. Idempotent.
    pub async fn reconcile(&self) -> Result<(), EngineError> {
        // Uploads are per request: whatever a crash left behind is garbage.
        let _ = std::fs::remove_dir_all(self.paths.root().join("uploads"));
        self.remove_crash_leftovers();
        self.remove_partial_snapshots().await;
        if let Some(guest) = &self.guest {
            let hypervisor = self.hypervisor.as_ref().ok().map(|h| h.as_ref());
            self.templates
                .sweep(hypervisor, |digest| guest.images.get(digest).is_some())
                .await;
        }
        for record in self.records.all()? {
            let Ok(id) = hypedeck_model::InstanceId::parse(&record.id) else {
                continue;
            };
            let Ok(hypervisor) = self.backend(record.hypervisor) else {
                continue;
            };
            if let Some(vm) = hypervisor
                .attach(&record.id, &self.paths.instance_runtime(&id))
                .await?
            {
                let vm: Arc<dyn Vm> = Arc::from(vm);
                self.runtime.started(&record.id, vm.clone());
                // Upstream loses proxy rules on restart; Hypedeck reloads them from the keychain.
                let mut record = record.clone();
                let before = record.network.proxy_port;
                if let Err(e) = self.register_egress(&mut record).await {
                    tracing::error!(error = %e, id = %record.id, "could not restore egress rules");
                } else if record.network.proxy_port != before {
                    self.records.save(&record)?;
                }
                // The VM kept running; its network stack died with the old engine.
                if let Err(e) = self.attach_network(&record, vm.as_ref()).await {
                    tracing::error!(error = %e, id = %record.id, "could not restore the sandbox network");
                }
            }
        }
        Ok(())
    }

    /// What a crash of an earlier engine left half-written: temporary files of atomic writes,
    /// and instance directories whose create never wrote their metadata (the instance never
    /// existed for any client). Runs before serving, under the data dir's lock.
    fn remove_crash_leftovers(&self) {
        let mut temps = hypedeck_store::remove_temp_files(self.paths.root());
        let Ok(entries) = std::fs::read_dir(self.paths.instances()) else {
            return;
        };
        for entry in entries.flatten() {
            let dir = entry.path();
            temps += hypedeck_store::remove_temp_files(&dir);
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| hypedeck_model::InstanceId::parse(n).ok())
            else {
                continue;
            };
            if !self.paths.instance_metadata(&id).exists() {
                match std::fs::remove_dir_all(&dir) {
                    Ok(()) => tracing::warn!(%id, "removed an instance a crash left half-created"),
                    Err(e) => {
                        tracing::error!(%id, error = %e, "cannot remove a half-created instance")
                    }
                }
            }
        }
        if temps > 0 {
            tracing::warn!(count = temps, "removed temporary files a crash left");
        }
    }

    fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(id.to_string()).or_default().clone()
    }
}

/// Which log of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSource {
    /// The guest's serial console (`app.log`).
    App,
    /// The VMM's own output.
    Vmm,
    /// The engine's operations log for this instance.
    Hypeman,
}

impl Engine {
    /// The file behind a log source of an instance (it may not exist yet).
    pub fn log_path(
        &self,
        id_or_name: &str,
        source: LogSource,
    ) -> Result<std::path::PathBuf, EngineError> {
        let record = self.resolve(id_or_name)?;
        let id =
            hypedeck_model::InstanceId::parse(&record.id).map_err(|_| EngineError::NotFound)?;
        Ok(match source {
            LogSource::App => self.paths.instance_logs(&id).join("app.log"),
            LogSource::Hypeman => self.paths.instance_logs(&id).join("hypeman.log"),
            LogSource::Vmm => self.paths.instance_runtime(&id).join("vmm.log"),
        })
    }
}

/// The keychain service Hypedeck's own items live under (token, CA key, credential values).
pub const KEYCHAIN_SERVICE: &str = "hypedeck";

/// A refusal with upstream's `code` and `message` (the API answers it as it is).
pub(crate) fn rejected(code: hypedeck_model::ErrorCode, message: impl Into<String>) -> EngineError {
    EngineError::Rejected(hypedeck_model::Rejection::new(code, message))
}

/// Locks one of the owners' std mutexes. Only whole inserts, removes and replacements happen
/// under them, so a poisoned one is still consistent.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Keychain account of one credential-backed env var.
fn secret_account(instance_id: &str, key: &str) -> String {
    format!("instance/{instance_id}/env/{key}")
}
