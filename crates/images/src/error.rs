//! The crate's error type. Messages are short and lowercase; causes sit in `#[source]`.
//! No message ever contains a credential: registry errors are rebuilt from status codes and
//! registry error codes, never from request data.

use std::path::PathBuf;
use std::sync::Arc;

use crate::platform::InvalidPlatform;
use crate::reference::{Digest, ReferenceError};
use crate::unpack::UnpackError;

/// Errors of the image store. `Clone` so that every caller waiting on a shared pull gets it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImageError {
    /// The reference does not follow the grammar.
    #[error("invalid image reference")]
    InvalidReference(#[from] ReferenceError),
    /// The platform is not `os/arch[/variant]`.
    #[error("invalid platform")]
    InvalidPlatform(#[from] InvalidPlatform),
    /// The registry does not have this repository or tag, or refused access to it
    /// (401/403/404, `NAME_UNKNOWN`, `MANIFEST_UNKNOWN`, `UNAUTHORIZED`, `DENIED`).
    /// The same variant answers local lookups of images that are not in the cache.
    #[error("image not found: {reference}")]
    NotFound {
        /// The normalized reference (or digest) that was looked up.
        reference: String,
    },
    /// The registry answered 429 / `TOOMANYREQUESTS`.
    #[error("registry rate limit exceeded")]
    RateLimited,
    /// The image index has no manifest for the wanted platform, or a single-platform image
    /// was built for another one.
    #[error("image is not available for platform {platform}")]
    PlatformNotAvailable {
        /// The wanted platform.
        platform: String,
    },
    /// Any other registry failure (connection, 5xx, malformed answer). The text names the
    /// operation and status, never request headers or credentials.
    #[error("registry error: {0}")]
    Registry(String),
    /// The image uses something this crate cannot turn into a disk (schema 1 manifest,
    /// foreign or unknown layer media types).
    #[error("unsupported image: {0}")]
    Unsupported(String),
    /// A downloaded blob did not hash to the digest that named it.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest from the manifest (or reference).
        expected: String,
        /// What the content hashed to.
        actual: String,
    },
    /// A layer could not be applied to the root filesystem.
    #[error("apply layer {layer}")]
    Unpack {
        /// The layer's (compressed) digest.
        layer: Digest,
        /// What went wrong.
        #[source]
        source: UnpackError,
    },
    /// A volume archive could not be unpacked (bad path, bad compression, bad tar).
    #[error("archive: {0}")]
    Archive(UnpackError),
    /// `mkfs.ext4` is not installed.
    #[error("mkfs.ext4 not found: install e2fsprogs")]
    MkfsMissing,
    /// Building the ext4 disk failed; the text is the tool's own stderr.
    #[error("build ext4 disk: {0}")]
    Convert(String),
    /// A filesystem operation on the cache failed.
    #[error("{op} {path}")]
    Io {
        /// The operation, e.g. `write`.
        op: &'static str,
        /// The path operated on.
        path: PathBuf,
        /// Cause.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A cache metadata file is not what this build expects.
    #[error("corrupt image metadata {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// The image is being pulled; it cannot be deleted until the pull ends.
    #[error("image is being pulled")]
    Busy,
}

impl ImageError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ImageError::Io {
            op,
            path: path.into(),
            source: Arc::new(source),
        }
    }
}

/// `Result` with [`ImageError`].
pub type Result<T, E = ImageError> = std::result::Result<T, E>;
