//! Every path under the data dir.

use std::path::{Path, PathBuf};

use hypedeck_model::InstanceId;

/// Environment variable that overrides the data dir.
pub const DATA_DIR_ENV: &str = "HYPEDECK_DATA_DIR";

/// The platform's default data dir (`~/.local/share/hypedeck` on Linux,
/// `~/Library/Application Support/dev.hypedeck.Hypedeck` on macOS), or `HYPEDECK_DATA_DIR`.
pub fn default_data_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(DATA_DIR_ENV).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    directories::ProjectDirs::from("dev", "hypedeck", "Hypedeck")
        .map(|d| d.data_dir().to_path_buf())
}

/// The layout of one data dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    root: PathBuf,
}

impl Paths {
    /// Layout rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Paths { root: root.into() }
    }

    /// The data dir itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The engine lock file.
    pub fn engine_lock(&self) -> PathBuf {
        self.root.join("engine.lock")
    }

    /// Where the running engine advertises its API address (`{"url": …, "pid": …}`).
    pub fn engine_endpoint(&self) -> PathBuf {
        self.root.join("engine.json")
    }

    /// The engine's Unix socket (the API for the user at this machine).
    pub fn api_socket(&self) -> PathBuf {
        self.root.join("api.sock")
    }

    /// Directory holding one directory per instance.
    pub fn instances(&self) -> PathBuf {
        self.root.join("instances")
    }

    /// One instance's directory.
    pub fn instance_dir(&self, id: &InstanceId) -> PathBuf {
        self.instances().join(id.as_str())
    }

    /// One instance's metadata.
    pub fn instance_metadata(&self, id: &InstanceId) -> PathBuf {
        self.instance_dir(id).join("metadata.json")
    }

    /// One instance's runtime dir (VMM sockets, pidfile).
    pub fn instance_runtime(&self, id: &InstanceId) -> PathBuf {
        self.instance_dir(id).join("run")
    }

    /// One instance's log dir (`app.log`, `vmm.log`, `hypeman.log`).
    pub fn instance_logs(&self, id: &InstanceId) -> PathBuf {
        self.instance_dir(id).join("logs")
    }

    /// One instance's credential usage trail (JSON lines; `.1` is the previous file).
    pub fn credential_events(&self, id: &InstanceId) -> PathBuf {
        self.instance_dir(id).join("credentials.jsonl")
    }

    /// Snapshots, one directory each: `snapshot.json` and `guest/` (the saved files).
    pub fn snapshots(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// One snapshot's directory (`id` is a validated snapshot id).
    pub fn snapshot_dir(&self, id: &InstanceId) -> PathBuf {
        self.snapshots().join(id.as_str())
    }

    /// Image cache.
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }

    /// The egress proxy's CA certificate (its private key lives in the OS keychain).
    pub fn egress_ca_cert(&self) -> PathBuf {
        self.root.join("egress").join("ca.crt")
    }

    /// VM templates, one directory each (named by the backend's template key).
    pub fn templates(&self) -> PathBuf {
        self.root.join("templates")
    }

    /// Kernel, initramfs and other system files.
    pub fn system(&self) -> PathBuf {
        self.root.join("system")
    }
}
