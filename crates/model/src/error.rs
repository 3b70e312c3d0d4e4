//! The `{code, message}` error body and upstream's error codes.

use serde::{Deserialize, Serialize};

/// Upstream's machine-readable error codes.
///
/// Handler errors are snake_case; errors raised by upstream's OpenAPI request validator and its
/// auth layer use the HTTP status text instead (`"Bad Request"`, `"Unauthorized"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 400 from the schema validator (`"Bad Request"`).
    SchemaViolation,
    /// 401 (`"Unauthorized"`).
    Unauthorized,
    /// 403 (`"Forbidden"`).
    Forbidden,
    /// 405 (`"Method Not Allowed"`).
    MethodNotAllowed,
    /// `invalid_request`.
    InvalidRequest,
    /// `invalid_name`.
    InvalidName,
    /// `invalid_state`.
    InvalidState,
    /// `port_in_use` (409): a forwarded host port is taken (upstream's ingress code).
    PortInUse,
    /// `invalid_size`.
    InvalidSize,
    /// `invalid_hotplug_size`.
    InvalidHotplugSize,
    /// `invalid_overlay_size`.
    InvalidOverlaySize,
    /// `invalid_disk_io_bps`.
    InvalidDiskIoBps,
    /// `invalid_bandwidth_download`.
    InvalidBandwidthDownload,
    /// `invalid_bandwidth_upload`.
    InvalidBandwidthUpload,
    /// `invalid_platform`.
    InvalidPlatform,
    /// `invalid_timeout`.
    InvalidTimeout,
    /// `invalid_snapshot_compression` (400): a compression setting out of range.
    InvalidSnapshotCompression,
    /// `bad_request` (400): upstream's code for a bad memory reclaim.
    BadRequest,
    /// `invalid_auto_standby` (400): an auto-standby port out of range.
    InvalidAutoStandby,
    /// `instance_in_standby` (409): a hold asked of an instance in standby.
    InstanceInStandby,
    /// `invalid_compression_delay` (400): a standby's compression delay is no duration.
    InvalidCompressionDelay,
    /// `not_found`.
    NotFound,
    /// `already_exists`.
    AlreadyExists,
    /// `conflict` (409): a snapshot whose source is in the wrong state, or whose name its
    /// source instance already uses.
    Conflict,
    /// `name_conflict`.
    NameConflict,
    /// `ambiguous`.
    Ambiguous,
    /// `insufficient_resources`.
    InsufficientResources,
    /// `image_not_ready`.
    ImageNotReady,
    /// `not_supported`.
    NotSupported,
    /// `rate_limited`.
    RateLimited,
    /// `log_not_found`.
    LogNotFound,
    /// `secrets_unavailable` (Hypedeck): the OS keychain cannot be reached.
    SecretsUnavailable,
    /// `platform_not_available`.
    PlatformNotAvailable,
    /// `dependency_missing`.
    DependencyMissing,
    /// `not_implemented` (501): an upstream operation Hypedeck does not serve.
    NotImplemented,
    /// `internal_error`.
    InternalError,
}

impl ErrorCode {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::SchemaViolation => "Bad Request",
            ErrorCode::Unauthorized => "Unauthorized",
            ErrorCode::Forbidden => "Forbidden",
            ErrorCode::MethodNotAllowed => "Method Not Allowed",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidName => "invalid_name",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::InvalidSize => "invalid_size",
            ErrorCode::InvalidHotplugSize => "invalid_hotplug_size",
            ErrorCode::InvalidOverlaySize => "invalid_overlay_size",
            ErrorCode::InvalidDiskIoBps => "invalid_disk_io_bps",
            ErrorCode::InvalidBandwidthDownload => "invalid_bandwidth_download",
            ErrorCode::InvalidBandwidthUpload => "invalid_bandwidth_upload",
            ErrorCode::InvalidPlatform => "invalid_platform",
            ErrorCode::InvalidTimeout => "invalid_timeout",
            ErrorCode::InvalidSnapshotCompression => "invalid_snapshot_compression",
            ErrorCode::InvalidAutoStandby => "invalid_auto_standby",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InstanceInStandby => "instance_in_standby",
            ErrorCode::InvalidCompressionDelay => "invalid_compression_delay",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::Conflict => "conflict",
            ErrorCode::NameConflict => "name_conflict",
            ErrorCode::PortInUse => "port_in_use",
            ErrorCode::Ambiguous => "ambiguous",
            ErrorCode::InsufficientResources => "insufficient_resources",
            ErrorCode::ImageNotReady => "image_not_ready",
            ErrorCode::NotSupported => "not_supported",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::LogNotFound => "log_not_found",
            ErrorCode::SecretsUnavailable => "secrets_unavailable",
            ErrorCode::PlatformNotAvailable => "platform_not_available",
            ErrorCode::DependencyMissing => "dependency_missing",
            ErrorCode::NotImplemented => "not_implemented",
            ErrorCode::InternalError => "internal_error",
        }
    }

    /// The HTTP status upstream answers with for this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::SchemaViolation
            | ErrorCode::InvalidRequest
            | ErrorCode::InvalidName
            | ErrorCode::InvalidSize
            | ErrorCode::InvalidHotplugSize
            | ErrorCode::InvalidOverlaySize
            | ErrorCode::InvalidDiskIoBps
            | ErrorCode::InvalidBandwidthDownload
            | ErrorCode::InvalidBandwidthUpload
            | ErrorCode::InvalidPlatform
            | ErrorCode::InvalidTimeout
            | ErrorCode::InvalidSnapshotCompression
            | ErrorCode::InvalidAutoStandby
            | ErrorCode::BadRequest
            | ErrorCode::InvalidCompressionDelay
            | ErrorCode::AlreadyExists
            | ErrorCode::NameConflict
            | ErrorCode::ImageNotReady => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound | ErrorCode::PlatformNotAvailable | ErrorCode::LogNotFound => 404,
            ErrorCode::RateLimited => 429,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::InvalidState
            | ErrorCode::Conflict
            | ErrorCode::Ambiguous
            | ErrorCode::InsufficientResources
            | ErrorCode::InstanceInStandby
            | ErrorCode::PortInUse => 409,
            ErrorCode::NotSupported | ErrorCode::NotImplemented => 501,
            ErrorCode::DependencyMissing | ErrorCode::InternalError => 500,
            ErrorCode::SecretsUnavailable => 503,
        }
    }
}

/// The error body every route answers with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable code.
    pub code: String,
    /// Human-readable message (never contains a secret value).
    pub message: String,
}

impl ErrorBody {
    /// A body for `code` with `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            code: code.as_str().to_string(),
            message: message.into(),
        }
    }
}

/// An error and its causes on one line, skipping causes the message already spells out
/// (`"listen on 127.0.0.1:4973: no secret service: connection refused"`).
pub fn sentence(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod sentence_tests {
    use std::error::Error;
    use std::fmt;

    use super::sentence;

    #[derive(Debug)]
    struct Failure(&'static str, Option<Box<Failure>>);

    impl fmt::Display for Failure {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Failure {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as &(dyn Error + 'static))
        }
    }

    #[test]
    fn sentence_joins_causes_once() {
        let inner = Failure("connection refused", None);
        let middle = Failure(
            "no secret service: connection refused",
            Some(Box::new(inner)),
        );
        let outer = Failure("listen on 127.0.0.1:4973", Some(Box::new(middle)));
        assert_eq!(
            sentence(&outer),
            "listen on 127.0.0.1:4973: no secret service: connection refused"
        );
    }
}
