//! Request bodies: bytes -> JSON -> schema check -> typed request, with upstream's messages.

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use hypedeck_model::schema::{Schema, check_body};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Parses a JSON body against component schema `name`.
pub fn parse<T: DeserializeOwned>(
    headers: &HeaderMap,
    bytes: &Bytes,
    name: &str,
    schema: &Schema,
) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "request body has an error: value is required but missing",
        ));
    }
    if let Some(content_type) = headers.get(CONTENT_TYPE) {
        let text = content_type.to_str().unwrap_or("");
        let essence = text.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::bad_request(format!(
                "request body has an error: header Content-Type has unexpected value {text:?}"
            )));
        }
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "request body has an error: failed to decode request body: {e}"
        ))
    })?;
    check_body(name, schema, &value)?;
    serde_json::from_value(value).map_err(|e| {
        ApiError::bad_request(format!(
            "request body has an error: failed to decode request body: {e}"
        ))
    })
}
