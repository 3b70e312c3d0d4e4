//! Validation at the edge: a wire request in, typed domain values (or upstream's error) out.
//!
//! Two kinds of rejection mirror upstream's two layers:
//! - schema violations (upstream's OpenAPI validator): code `"Bad Request"`, message
//!   `request body has an error: doesn't match schema: Error at "/field": …`;
//! - handler checks: snake_case codes (`invalid_size`, `invalid_request`, …).
//!
//! By concern: [`create`] (`CreateInstanceRequest::validate`, defaults and limits),
//! [`update`] (`UpdateInstanceRequest::validate` and the env-update checks), [`credentials`],
//! [`ports`], [`volumes`] and [`patterns`] (names, platforms, tags). The values they produce
//! live in [`crate::spec`]; image references in [`crate::reference`].

use std::fmt;

use crate::error::ErrorCode;

pub mod create;
pub mod credentials;
pub mod patterns;
pub mod ports;
pub mod update;
pub mod volumes;

pub use crate::reference::{InvalidReference, check_image_reference};
pub use crate::spec::{
    EgressMode, InstanceSpec, InstanceUpdate, NetworkSpec, credential_source_keys, mock_value,
};
pub use create::{
    DEFAULT_MEMORY, DEFAULT_OVERLAY, DEFAULT_VCPUS, MAX_MEMORY, MAX_OVERLAY, MAX_VCPUS,
};
pub use credentials::normalize_host_pattern;
pub use patterns::{
    NAME_MAX_LEN, NAME_PATTERN, PLATFORM_PATTERN, TAG_KEY_PATTERN, TAG_VALUE_PATTERN,
    is_valid_name, is_valid_name_pattern, is_valid_platform_syntax,
};
pub use ports::check_ports;
pub use update::{check_bindings_non_empty, check_env_update};

/// A refused request: the code and message the API answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Error code.
    pub code: ErrorCode,
    /// Message (never contains a secret value).
    pub message: String,
}

impl Rejection {
    /// A handler-level rejection.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Rejection {
            code,
            message: message.into(),
        }
    }

    /// A schema violation of component `schema` at JSON pointer `pointer` (e.g. `/name`).
    pub fn schema(schema: &str, pointer: &str, reason: impl fmt::Display) -> Self {
        Rejection {
            code: ErrorCode::SchemaViolation,
            message: format!(
                "request body has an error: doesn't match schema #/components/schemas/{schema}: Error at \"{pointer}\": {reason}"
            ),
        }
    }

    /// An `invalid_request` rejection with upstream's `invalid request: ` prefix.
    pub fn invalid_request(detail: impl fmt::Display) -> Self {
        Rejection::new(
            ErrorCode::InvalidRequest,
            format!("invalid request: {detail}"),
        )
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Rejection {}

/// Builds request bodies the way the API does (schema first, then `validate`), for the tests of
/// every concern.
#[cfg(test)]
pub(crate) mod test_support {
    use super::{InstanceSpec, Rejection};
    use crate::request::CreateInstanceRequest;
    use crate::schema;

    /// A create body through the schema and `validate`.
    pub(crate) fn create(body: serde_json::Value) -> Result<InstanceSpec, Rejection> {
        schema::check_body(
            "CreateInstanceRequest",
            &schema::create_instance_request(),
            &body,
        )?;
        let request: CreateInstanceRequest =
            serde_json::from_value(body).expect("schema-valid body");
        request.validate()
    }

    /// The (code, message) a create body is refused with.
    pub(crate) fn rejected(body: serde_json::Value) -> (String, String) {
        let r = create(body).unwrap_err();
        (r.code.as_str().to_string(), r.message)
    }
}
