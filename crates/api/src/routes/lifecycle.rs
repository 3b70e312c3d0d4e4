//! `/instances/{id}/start|stop|wait|logs`.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::sse::{Event, Sse};
use axum::routing::{get, post};
use axum::{Json, Router};
use hypedeck_engine::{LogSource, StartOverrides};
use hypedeck_model::schema::start_instance_request;
use hypedeck_model::{ErrorCode, Instance, InstanceState};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::{ApiState, body};

/// Lifecycle routes (all need auth).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/instances/{id}/start", post(start))
        .route("/instances/{id}/stop", post(stop))
        .route("/instances/{id}/standby", post(standby))
        .route("/instances/{id}/restore", post(restore))
        .route("/instances/{id}/wait", get(wait))
        .route("/instances/{id}/logs", get(logs))
}

#[derive(Debug, Deserialize)]
struct StartBody {
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
}

async fn start(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Instance>, ApiError> {
    let body: StartBody = body::parse(
        &headers,
        &bytes,
        "StartInstanceRequest",
        &start_instance_request(),
    )?;
    let overrides = StartOverrides {
        entrypoint: body.entrypoint,
        cmd: body.cmd,
    };
    let instance = super::detached(
        &state.engine,
        |e| async move { e.start(&id, overrides).await },
    )
    .await
    .map_err(|e| ApiError::from_engine("start instance", e))?;
    Ok(Json(instance))
}

async fn stop(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Instance>, ApiError> {
    let instance = super::detached(&state.engine, |e| async move { e.stop(&id).await })
        .await
        .map_err(|e| ApiError::from_engine("stop instance", e))?;
    Ok(Json(instance))
}

async fn standby(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Instance>, ApiError> {
    // The body is optional (upstream replaces an empty body by `{}`).
    let request: hypedeck_model::StandbyInstanceRequest =
        if bytes.iter().all(u8::is_ascii_whitespace) {
            hypedeck_model::StandbyInstanceRequest::default()
        } else {
            body::parse(
                &headers,
                &bytes,
                "StandbyInstanceRequest",
                &hypedeck_model::schema::standby_instance_request(),
            )?
        };
    let instance = super::detached(&state.engine, |e| async move {
        e.standby_with(&id, request).await
    })
    .await
    .map_err(|e| ApiError::from_engine("standby instance", e))?;
    Ok(Json(instance))
}

async fn restore(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Instance>, ApiError> {
    let instance = super::detached(&state.engine, |e| async move { e.restore(&id).await })
        .await
        .map_err(|e| ApiError::from_engine("restore instance", e))?;
    Ok(Json(instance))
}

/// Parses a Go duration (`"300ms"`, `"1m30s"`, `"2h"`); negative ones are refused.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    hypedeck_model::duration::parse(text.trim())
}

#[derive(Debug, Serialize)]
struct WaitResponse {
    state: InstanceState,
    #[serde(skip_serializing_if = "Option::is_none")]
    state_error: Option<String>,
    timed_out: bool,
}

async fn wait(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<WaitResponse>, ApiError> {
    let get = |k: &str| super::query_param(&query, k);
    let Some(target) = get("state") else {
        return Err(ApiError::bad_request(
            "parameter \"state\" in query has an error: value is required but missing",
        ));
    };
    let target = super::state_param(&target)?;
    if target == InstanceState::Unknown {
        return Err(
            ApiError::new(ErrorCode::InvalidState, "cannot wait for state Unknown")
                .with_status(400),
        );
    }
    let timeout = match get("timeout") {
        None => Duration::from_secs(60),
        Some(t) => match parse_go_duration(&t) {
            Some(d) if !d.is_zero() => d,
            _ => {
                return Err(ApiError::new(
                    ErrorCode::InvalidTimeout,
                    format!("invalid timeout {t:?}: must be a positive duration such as \"30s\""),
                ));
            }
        },
    };
    let outcome = state
        .engine
        .wait(&id, target, timeout)
        .await
        .map_err(|e| ApiError::from_engine("wait for instance", e))?;
    Ok(Json(WaitResponse {
        state: outcome.state,
        state_error: outcome.state_error,
        timed_out: outcome.timed_out,
    }))
}

/// Lines upstream hides from the app log.
fn hidden(line: &str) -> bool {
    line.contains("HYPEMAN-PROGRAM-START")
        || line.contains("HYPEMAN-AGENT-READY")
        || line.contains("HYPEMAN-HEADERS-")
}

async fn logs(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<impl IntoResponse, ApiError> {
    let get = |k: &str| super::query_param(&query, k);
    let tail: usize = match get("tail") {
        None => 100,
        Some(t) => t.parse().map_err(|_| {
            ApiError::bad_request(format!("parameter \"tail\" in query has an error: value {t}: an invalid integer: invalid syntax"))
        })?,
    };
    let follow = match get("follow").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "parameter \"follow\" in query has an error: value {other}: an invalid boolean: invalid syntax"
            )));
        }
    };
    let source = match get("source").as_deref() {
        None | Some("app") => LogSource::App,
        Some("vmm") => LogSource::Vmm,
        Some("hypeman") => LogSource::Hypeman,
        Some(_) => {
            return Err(ApiError::bad_request(
                "parameter \"source\" in query has an error: value is not one of the allowed values [\"app\",\"vmm\",\"hypeman\"]",
            ));
        }
    };
    let path = state
        .engine
        .log_path(&id, source)
        .map_err(|e| ApiError::from_engine("read logs of instance", e))?;
    let filter = source == LogSource::App;
    let read = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            crate::logtail::tail(&path, tail, |l| !(filter && hidden(l)), follow)
        })
        .await
    };
    let (initial, offset) = match read {
        Ok(Ok(found)) => found,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::new(ErrorCode::LogNotFound, "log file not found"));
        }
        _ => {
            return Err(ApiError::new(
                ErrorCode::InternalError,
                "failed to read logs",
            ));
        }
    };
    let stream = async_stream(initial, follow.then_some((path, offset)), filter);
    Ok(Sse::new(stream).into_response_with_headers())
}

/// The SSE body: the tail, then (when following) lines appended to the file.
fn async_stream(
    initial: Vec<String>,
    follow: Option<(std::path::PathBuf, u64)>,
    filter: bool,
) -> impl futures_core::Stream<Item = Result<Event, Infallible>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(64);
    tokio::spawn(async move {
        for line in initial {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        let Some((path, offset)) = follow else {
            return;
        };
        let mut follower = crate::logtail::Follower::new(offset);
        loop {
            if tx.is_closed() {
                return;
            }
            let read = {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    let lines = follower.step(&path);
                    (follower, lines)
                })
                .await
            };
            let Ok((next, lines)) = read else { return };
            follower = next;
            let more = !lines.is_empty();
            for line in lines {
                if filter && hidden(&line) {
                    continue;
                }
                if tx.send(line).await.is_err() {
                    return;
                }
            }
            // Caught up: wait for more; behind: read on at once.
            if !more {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    tokio_stream_from(rx)
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<String>,
) -> impl futures_core::Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|line| {
            line.map(|l| {
                Ok(Event::default()
                    .data(serde_json::to_string(&l).unwrap_or_else(|_| "\"\"".into())))
            })
        })
    })
}

/// SSE headers upstream sends.
trait SseHeaders {
    fn into_response_with_headers(self) -> axum::response::Response;
}

impl<S> SseHeaders for Sse<S>
where
    S: futures_core::Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    fn into_response_with_headers(self) -> axum::response::Response {
        let mut response = self.into_response();
        let headers = response.headers_mut();
        headers.insert(
            "cache-control",
            axum::http::HeaderValue::from_static("no-cache"),
        );
        headers.insert(
            "x-accel-buffering",
            axum::http::HeaderValue::from_static("no"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::parse_go_duration;
    use std::time::Duration;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("-1s"), None);
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration("abc"), None);
    }
}
