//! The image record, its status, the runtime config kept from the OCI config blob, and the
//! progress of a pull.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::platform::Platform;
use crate::reference::Digest;

/// Where an image is in its life. Transitions: `pending -> pulling -> converting -> ready`,
/// any of the first three `-> failed`. A failed image is pulled again from scratch when asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageStatus {
    /// Resolved, waiting for a pull slot.
    Pending,
    /// Downloading blobs and applying layers.
    Pulling,
    /// Building the ext4 disk.
    Converting,
    /// The disk is complete and may be booted.
    Ready,
    /// The pull failed; `error` says why.
    Failed,
}

impl ImageStatus {
    /// Wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageStatus::Pending => "pending",
            ImageStatus::Pulling => "pulling",
            ImageStatus::Converting => "converting",
            ImageStatus::Ready => "ready",
            ImageStatus::Failed => "failed",
        }
    }

    /// `ready` or `failed`: nothing will change without a new pull.
    pub fn is_terminal(self) -> bool {
        matches!(self, ImageStatus::Ready | ImageStatus::Failed)
    }
}

/// The runtime defaults of an image (the `config` object of the OCI image config).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `Entrypoint`; `None` when the image sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`; `None` when the image sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// `Env`, as `KEY=value` strings in image order.
    #[serde(default)]
    pub env: Vec<String>,
    /// `WorkingDir`; `None` when unset or empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// `User`; `None` when unset or empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// An image known to the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// The normalized reference this record is seen through (`docker.io/library/alpine:latest`,
    /// or `registry/repo@sha256:…` for an untagged digest).
    pub name: String,
    /// The manifest digest (for a multi-platform image: the chosen platform's manifest).
    pub digest: Digest,
    /// The platform the image was built for.
    pub platform: Platform,
    /// Where the image is in its life.
    pub status: ImageStatus,
    /// Why the pull failed (`failed` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Bytes the root disk occupies on the host (allocated blocks of the sparse file);
    /// `None` until `ready`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Runtime defaults from the image config.
    pub config: ImageConfig,
    /// When the pull of this digest started.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A snapshot of a pull, published on every status change and downloaded chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullProgress {
    /// Current status.
    pub status: ImageStatus,
    /// The manifest digest being pulled.
    pub digest: Digest,
    /// Blob bytes downloaded so far (config and layers).
    pub bytes_done: u64,
    /// Blob bytes to download in total (sum of manifest descriptor sizes).
    pub bytes_total: u64,
    /// Layers applied to the root filesystem so far.
    pub layers_done: usize,
    /// Layers in the manifest.
    pub layers_total: usize,
    /// Why the pull failed (`failed` only).
    pub error: Option<String>,
}

/// The subset of the OCI image config blob this crate reads.
#[derive(Debug, Deserialize)]
pub(crate) struct ConfigBlob {
    #[serde(default)]
    pub architecture: Option<String>,
    #[serde(default)]
    pub os: Option<String>,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub config: Option<RuntimeConfig>,
    #[serde(default)]
    pub rootfs: Option<RootFs>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RuntimeConfig {
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

impl ConfigBlob {
    /// The runtime defaults, with empty strings folded into `None`.
    pub fn image_config(&self) -> ImageConfig {
        let empty = RuntimeConfig::default();
        let c = self.config.as_ref().unwrap_or(&empty);
        let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        ImageConfig {
            entrypoint: c.entrypoint.clone(),
            cmd: c.cmd.clone(),
            env: c.env.clone().unwrap_or_default(),
            working_dir: non_empty(&c.working_dir),
            user: non_empty(&c.user),
        }
    }

    /// The platform the config declares, when it declares os and architecture.
    pub fn platform(&self) -> Option<Platform> {
        match (&self.os, &self.architecture) {
            (Some(os), Some(arch)) if !os.is_empty() && !arch.is_empty() => {
                Some(Platform::new(os, arch, self.variant.as_deref()))
            }
            _ => None,
        }
    }

    /// The uncompressed layer digests, in order.
    pub fn diff_ids(&self) -> &[String] {
        self.rootfs.as_ref().map_or(&[], |r| r.diff_ids.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_blob_fields() {
        let blob: ConfigBlob = serde_json::from_str(
            r#"{"architecture":"arm64","os":"linux","variant":"v8",
                "config":{"Env":["PATH=/bin","A=b"],"Entrypoint":["/app/run.sh"],"Cmd":["x"],
                          "WorkingDir":"/app","User":""},
                "rootfs":{"type":"layers","diff_ids":["sha256:aa"]}}"#,
        )
        .unwrap();
        let c = blob.image_config();
        assert_eq!(
            c.entrypoint.as_deref(),
            Some(&["/app/run.sh".to_owned()][..])
        );
        assert_eq!(c.cmd.as_deref(), Some(&["x".to_owned()][..]));
        assert_eq!(c.env, ["PATH=/bin", "A=b"]);
        assert_eq!(c.working_dir.as_deref(), Some("/app"));
        assert_eq!(c.user, None);
        assert_eq!(blob.platform().unwrap().to_string(), "linux/arm64");
        assert_eq!(blob.diff_ids(), ["sha256:aa"]);
    }

    #[test]
    fn minimal_config_blob() {
        let blob: ConfigBlob = serde_json::from_str(r#"{"config":null}"#).unwrap();
        assert_eq!(blob.image_config(), ImageConfig::default());
        assert!(blob.platform().is_none());
        assert!(blob.diff_ids().is_empty());
    }

    #[test]
    fn status_spelling() {
        for s in [
            ImageStatus::Pending,
            ImageStatus::Pulling,
            ImageStatus::Converting,
            ImageStatus::Ready,
            ImageStatus::Failed,
        ] {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
    }
}
