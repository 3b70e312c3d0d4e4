//! The sandbox network (Hypedeck extension; clients of upstream servers get a 404):
//! - `GET /instances/{id}/network/flows?limit=` → the instance's recent flow decisions, newest
//!   first: `{at_ms, protocol, destination, name?, verdict, reason?}` with `protocol` one of
//!   `tcp`, `udp`, `dns` and `verdict` one of `allowed`, `denied` (with the policy's reason)
//!   and `unreachable` (allowed, but the destination did not answer);
//! - `GET /instances/{id}/network/policy` → `{enabled, egress, mode, allow}`: what the network
//!   lets through. `allow` is replaced with `PATCH /instances/{id}` and
//!   `{"network": {"egress": {"allow": [...]}}}`, live.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use hypedeck_netstack::FlowEvent;

use crate::ApiState;
use crate::error::ApiError;
use crate::routes::query_param;

/// Flows one call returns unless `limit` says otherwise.
const DEFAULT_LIMIT: usize = 200;

/// The routes (all need auth).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/instances/{id}/network/flows", get(flows))
        .route("/instances/{id}/network/policy", get(policy))
}

async fn policy(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<hypedeck_engine::NetworkPolicy>, ApiError> {
    state
        .engine
        .network_policy(&id)
        .map(Json)
        .map_err(|e| ApiError::from_engine("read the network policy", e))
}

async fn flows(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    query: super::ListQuery,
) -> Result<Json<Vec<FlowEvent>>, ApiError> {
    let pairs = super::list_query(query)?;
    let max = hypedeck_engine::FLOW_LOG_ENTRIES;
    let limit = match query_param(&pairs, "limit") {
        None => DEFAULT_LIMIT,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "parameter \"limit\" in query has an error: must be an integer from 1 to {max}"
                )));
            }
        },
    };
    state
        .engine
        .network_flows(&id, limit)
        .map(Json)
        .map_err(|e| ApiError::from_engine("read the flow log", e))
}
