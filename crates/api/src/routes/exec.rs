//! `GET /instances/{id}/exec` (WebSocket, upstream's framing) and `GET /instances/{id}/stat`.
//!
//! Exec framing (hypeman-semantics §3.1): the client's first frame is a text JSON
//! `ExecRequest`; then binary frames are stdin (text frames too, unless they are
//! `{"resize":{"rows":R,"cols":C}}` in TTY mode); the server sends stdout/stderr as binary
//! frames and ends with a text `{"exitCode":N}`. Errors: binary `"Error: …\r\n"` then
//! `{"exitCode":127}`. Not Running: a JSON 409 before the upgrade. Hypedeck extension: an empty
//! binary frame closes stdin (so `cat` ends); closing the socket kills the process.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use hypedeck_engine::{AgentEvent, OpenRequest, PathInfo};
use serde::Deserialize;

use crate::ApiState;
use crate::error::ApiError;
use crate::routes::query_param;

/// Exec and stat routes (need auth).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/instances/{id}/exec", get(exec))
        .route("/instances/{id}/stat", get(stat))
}

/// Upstream's `ExecRequest`.
#[derive(Debug, Deserialize)]
struct ExecRequest {
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    tty: bool,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    cwd: Option<String>,
    #[serde(default)]
    timeout: Option<i64>,
    #[serde(default)]
    wait_for_agent: Option<i64>,
    #[serde(default)]
    rows: Option<u32>,
    #[serde(default)]
    cols: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct Resize {
    resize: Size,
}

#[derive(Debug, Deserialize)]
struct Size {
    rows: u32,
    cols: u32,
}

async fn exec(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ws: WebSocketUpgrade,
) -> Response {
    upgrade_running(state, id, ws, "exec in instance", run).await
}

/// Upgrades a request on an instance's WebSocket route (exec, cp) when the instance is Running
/// (else the JSON 409, or 404, before the upgrade; `what` names the verb in it), and hands the
/// socket to `session`.
pub(crate) async fn upgrade_running<F, Fut>(
    state: ApiState,
    id: String,
    ws: WebSocketUpgrade,
    what: &'static str,
    session: F,
) -> Response
where
    F: FnOnce(ApiState, String, WebSocket) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    if let Err(e) = state.engine.exec_precheck(&id).await {
        return ApiError::from_engine(what, e).into_response();
    }
    // A browser sends the token as a subprotocol; the handshake must name it back.
    let protocol = format!("{}{}", crate::auth::WS_TOKEN_PROTOCOL, state.token.expose());
    ws.protocols([protocol])
        .on_upgrade(move |socket| session(state, id, socket))
}

fn clamp16(v: Option<u32>) -> u16 {
    u16::try_from(v.unwrap_or(0)).unwrap_or(u16::MAX)
}

async fn run(state: ApiState, id: String, socket: WebSocket) {
    let (mut tx, mut rx) = socket.split();
    let first = match tokio::time::timeout(Duration::from_secs(30), rx.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => text,
        _ => {
            let _ = tx.close().await;
            return;
        }
    };
    let request: ExecRequest = match serde_json::from_str(first.as_str()) {
        Ok(r) => r,
        Err(e) => {
            fail(&mut tx, format!("invalid exec request: {e}")).await;
            return;
        }
    };
    let tty = request.tty;
    let open = OpenRequest {
        command: if request.command.is_empty() {
            vec!["/bin/sh".into()]
        } else {
            request.command
        },
        env: request.env.into_iter().collect(),
        cwd: request.cwd.unwrap_or_default(),
        tty,
        rows: clamp16(request.rows),
        cols: clamp16(request.cols),
    };
    let wait = Duration::from_secs(
        u64::try_from(request.wait_for_agent.unwrap_or(10).clamp(0, 300)).unwrap_or(10),
    );
    let mut session = match state.engine.exec(&id, &open, wait).await {
        Ok(s) => s,
        Err(e) => {
            fail(&mut tx, e.to_string()).await;
            return;
        }
    };
    let deadline = request
        .timeout
        .filter(|t| *t > 0)
        .map(|t| tokio::time::Instant::now() + Duration::from_secs(u64::try_from(t).unwrap_or(0)));
    let mut timed_out = false;
    loop {
        let timer = async {
            match deadline {
                Some(d) if !timed_out => tokio::time::sleep_until(d).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            message = rx.next() => match message {
                Some(Ok(Message::Binary(bytes))) => {
                    let sent = if bytes.is_empty() { session.close_stdin().await } else { session.stdin(&bytes).await };
                    if sent.is_err() { break; }
                }
                Some(Ok(Message::Text(text))) => {
                    let resize = if tty { serde_json::from_str::<Resize>(text.as_str()).ok() } else { None };
                    let sent = match resize {
                        Some(r) => session.resize(clamp16(Some(r.resize.rows)), clamp16(Some(r.resize.cols))).await,
                        None => session.stdin(text.as_bytes()).await,
                    };
                    if sent.is_err() { break; }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    // The client left: dropping the session kills the process.
                    return;
                }
                Some(Ok(_)) => {}
            },
            event = session.next() => match event {
                Some(AgentEvent::Stdout(bytes) | AgentEvent::Stderr(bytes)) => {
                    if tx.send(Message::Binary(bytes.into())).await.is_err() { return; }
                }
                Some(AgentEvent::Exit(code)) => {
                    let _ = tx.send(Message::Text(format!("{{\"exitCode\":{code}}}").into())).await;
                    let _ = tx.close().await;
                    return;
                }
                Some(AgentEvent::Error(message)) => {
                    fail(&mut tx, message).await;
                    return;
                }
                // A process session hears no copy events.
                Some(_) => {}
                None => break,
            },
            () = timer => {
                timed_out = true;
                let _ = session.signal(9).await;
            }
        }
    }
    fail(&mut tx, "the exec session ended unexpectedly".into()).await;
}

/// Upstream's error ending: `Error: …` on the output, exit code 127, close.
async fn fail(tx: &mut SplitSink<WebSocket, Message>, message: String) {
    let _ = tx
        .send(Message::Binary(
            format!("Error: {message}\r\n").into_bytes().into(),
        ))
        .await;
    let _ = tx.send(Message::Text("{\"exitCode\":127}".into())).await;
    let _ = tx.close().await;
}

async fn stat(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<PathInfo>, ApiError> {
    let path = query_param(&query, "path").ok_or_else(|| {
        ApiError::bad_request(
            "parameter \"path\" in query has an error: value is required but missing",
        )
    })?;
    let follow = match query_param(&query, "follow_links").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "parameter \"follow_links\" in query has an error: value {other} is not a boolean"
            )));
        }
    };
    let info = state
        .engine
        .stat_path(&id, &path, follow)
        .await
        .map_err(|e| ApiError::from_engine("stat in instance", e))?;
    Ok(Json(info))
}
