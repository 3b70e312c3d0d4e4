//! One module per resource.

pub mod autostandby;
pub mod cp;
pub mod credentials;
pub mod exec;
pub mod hypervisors;
pub mod images;
pub mod instances;
pub mod lifecycle;
pub mod meta;
pub mod network;
pub mod snapshots;
pub mod stats;
pub mod system;
pub mod templates;
pub mod unsupported;
pub mod volumes;

use std::collections::BTreeMap;

use hypedeck_model::InstanceState;

use crate::error::ApiError;

/// Runs a mutating verb to its end even when the request goes away: a client that times out
/// or closes its connection drops the handler's future, not the verb's work, so a create, a
/// rotation or a delete is never cut half-way by the network.
pub(crate) async fn detached<T, F, Fut>(
    engine: &std::sync::Arc<hypedeck_engine::Engine>,
    verb: F,
) -> Result<T, hypedeck_engine::EngineError>
where
    F: FnOnce(std::sync::Arc<hypedeck_engine::Engine>) -> Fut,
    Fut: std::future::Future<Output = Result<T, hypedeck_engine::EngineError>> + Send + 'static,
    T: Send + 'static,
{
    tokio::spawn(verb(engine.clone()))
        .await
        .unwrap_or(Err(hypedeck_engine::EngineError::Task))
}

/// The value of query parameter `key` (the last one when it is repeated).
pub(crate) fn query_param(query: &[(String, String)], key: &str) -> Option<String> {
    query
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

/// A list route's query string, kept as a `Result` so a malformed one gets our JSON 400.
pub(crate) type ListQuery =
    Result<axum::extract::Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>;

/// The `(key, value)` pairs of a list route's query string.
pub(crate) fn list_query(query: ListQuery) -> Result<Vec<(String, String)>, ApiError> {
    query
        .map(|q| q.0)
        .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))
}

/// The `?tags[key]=value` filter (deepObject, ANDed), each pair checked like a body's `tags`.
pub(crate) fn tag_filter(query: &[(String, String)]) -> Result<BTreeMap<String, String>, ApiError> {
    let mut tags = BTreeMap::new();
    for (key, value) in query {
        if let Some(tag) = key.strip_prefix("tags[").and_then(|k| k.strip_suffix(']')) {
            let refuse = |e: String| {
                ApiError::bad_request(format!("parameter \"tags\" in query has an error: {e}"))
            };
            hypedeck_model::schema::check_tag_filter(tag, value).map_err(refuse)?;
            // Two values for one key match nothing; say so rather than pick one.
            if tags.insert(tag.to_string(), value.clone()).is_some() {
                return Err(refuse(format!("property {tag:?} is given more than once")));
            }
            // The `Tags` schema's `maxProperties`.
            if tags.len() > 50 {
                return Err(refuse("maximum number of properties is 50".into()));
            }
        }
    }
    Ok(tags)
}

/// Whether `tags` has every pair of `filter`.
pub(crate) fn tags_match(
    tags: &BTreeMap<String, String>,
    filter: &BTreeMap<String, String>,
) -> bool {
    filter.iter().all(|(k, v)| tags.get(k) == Some(v))
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
