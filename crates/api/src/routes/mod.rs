//! One module per resource.

pub mod exec;
pub mod hypervisors;
pub mod images;
pub mod instances;
pub mod lifecycle;
pub mod meta;
pub mod volumes;

use hypedeck_model::InstanceState;

use crate::error::ApiError;

/// The value of query parameter `key` (the last one when it is repeated).
pub(crate) fn query_param(query: &[(String, String)], key: &str) -> Option<String> {
    query
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

/// Parses the `state` query parameter with the validator's error text.
pub(crate) fn state_param(value: &str) -> Result<InstanceState, ApiError> {
    InstanceState::parse(value).ok_or_else(|| {
        let allowed: Vec<String> =
            InstanceState::ALL.iter().map(|s| format!("{:?}", s.as_str())).collect();
        ApiError::bad_request(format!(
            "parameter \"state\" in query has an error: value is not one of the allowed values [{}]",
            allowed.join(",")
        ))
    })
}
