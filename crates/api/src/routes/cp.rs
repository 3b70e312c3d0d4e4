//! `GET /instances/{id}/cp` (WebSocket, upstream's framing; hypeman-semantics §3): files in and
//! out of a running instance.
//!
//! The client's first frame is a text JSON `CpRequest` (`direction` `to` or `from`,
//! `guest_path`, `is_dir`, `mode`, `follow_links`, `uid`, `gid`).
//! - `to`: one file or directory per connection. Binary frames are the file's bytes, then a
//!   text `{"type":"end"}`; the server answers `{"type":"result",success,error?,bytes_written}`.
//!   A connection that closes before `end` leaves the copy incomplete (an error).
//! - `from`: per entry a text `{"type":"header",path,mode,is_dir,is_symlink,link_target,size,
//!   mtime,uid,gid}`, its bytes as binary frames, then `{"type":"end","final":bool}`. An entry
//!   that cannot be read is `{"type":"error",message,path}` and ends the stream.
//!
//! Not Running is a JSON 409 before the upgrade; other failures are an `error` message.

use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hypedeck_engine::{AgentEvent, ExecSession, GetRequest, PutRequest};
use serde::Deserialize;
use serde_json::json;

use crate::ApiState;

/// The cp route (needs auth).
pub fn routes() -> Router<ApiState> {
    Router::new().route("/instances/{id}/cp", get(cp))
}

/// Upstream's `CpRequest`.
#[derive(Debug, Deserialize)]
struct CpRequest {
    direction: String,
    guest_path: String,
    #[serde(default)]
    is_dir: bool,
    #[serde(default)]
    mode: u32,
    #[serde(default)]
    follow_links: bool,
    #[serde(default)]
    uid: u32,
    #[serde(default)]
    gid: u32,
}

type Tx = SplitSink<WebSocket, Message>;

async fn cp(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ws: WebSocketUpgrade,
) -> Response {
    super::exec::upgrade_running(state, id, ws, "copy in instance", run).await
}

async fn run(state: ApiState, id: String, socket: WebSocket) {
    let (mut tx, mut rx) = socket.split();
    let first = match tokio::time::timeout(Duration::from_secs(30), rx.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => text,
        Ok(Some(Ok(_))) => {
            fail(&mut tx, "first message must be JSON text".into()).await;
            return;
        }
        _ => {
            let _ = tx.close().await;
            return;
        }
    };
    let request: CpRequest = match serde_json::from_str(first.as_str()) {
        Ok(r) => r,
        Err(e) => {
            fail(&mut tx, format!("invalid JSON: {e}")).await;
            return;
        }
    };
    if !request.guest_path.starts_with('/') {
        fail(
            &mut tx,
            format!("guest_path must be absolute, not {:?}", request.guest_path),
        )
        .await;
        return;
    }
    let outcome = match request.direction.as_str() {
        "to" => copy_to(&state, &id, request, &mut tx, &mut rx).await,
        "from" => copy_from(&state, &id, request, &mut tx).await,
        other => Err(format!(
            "invalid direction: {other} (must be 'to' or 'from')"
        )),
    };
    if let Err(message) = outcome {
        fail(&mut tx, message).await;
        return;
    }
    let _ = tx.close().await;
}

/// Client → guest: one file or directory.
async fn copy_to(
    state: &ApiState,
    id: &str,
    request: CpRequest,
    tx: &mut Tx,
    rx: &mut SplitStream<WebSocket>,
) -> Result<(), String> {
    let put = PutRequest {
        path: request.guest_path,
        mode: request.mode,
        is_dir: request.is_dir,
        uid: request.uid,
        gid: request.gid,
        mtime: 0,
    };
    let mut session = state
        .engine
        .copy_into(id, &put)
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match rx.next().await {
            Some(Ok(Message::Binary(bytes))) => {
                session
                    .put_data(&bytes)
                    .await
                    .map_err(|e| format!("send to the guest: {e}"))?;
            }
            Some(Ok(Message::Text(text))) => {
                let end = serde_json::from_str::<serde_json::Value>(text.as_str())
                    .is_ok_and(|v| v["type"] == "end");
                if end {
                    break;
                }
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                // Dropping the session tells the guest the copy is off.
                return Err("client disconnected before completing transfer".into());
            }
            Some(Ok(_)) => {}
        }
    }
    session
        .put_end()
        .await
        .map_err(|e| format!("send to the guest: {e}"))?;
    match next(&mut session).await? {
        AgentEvent::PutResult(result) => {
            let mut answer = json!({
                "type": "result",
                "success": result.success,
                "bytes_written": result.bytes_written,
            });
            if !result.error.is_empty() {
                answer["error"] = json!(result.error);
            }
            let _ = tx.send(Message::Text(answer.to_string().into())).await;
            Ok(())
        }
        other => Err(unexpected(&other)),
    }
}

/// Guest → client: the path, and for a directory everything under it.
async fn copy_from(
    state: &ApiState,
    id: &str,
    request: CpRequest,
    tx: &mut Tx,
) -> Result<(), String> {
    let get = GetRequest {
        path: request.guest_path,
        follow_links: request.follow_links,
    };
    let mut session = state
        .engine
        .copy_out_of(id, &get)
        .await
        .map_err(|e| e.to_string())?;
    let gone = |_| "the client went away".to_string();
    loop {
        match next(&mut session).await? {
            AgentEvent::CopyHeader(h) => {
                let header = json!({
                    "type": "header", "path": h.path, "mode": h.mode, "is_dir": h.is_dir,
                    "is_symlink": h.is_symlink, "link_target": h.link_target, "size": h.size,
                    "mtime": h.mtime, "uid": h.uid, "gid": h.gid,
                });
                tx.send(Message::Text(header.to_string().into()))
                    .await
                    .map_err(gone)?;
            }
            AgentEvent::CopyData(bytes) => {
                tx.send(Message::Binary(bytes.into())).await.map_err(gone)?;
            }
            AgentEvent::CopyEnd(last) => {
                let end = json!({"type": "end", "final": last});
                tx.send(Message::Text(end.to_string().into()))
                    .await
                    .map_err(gone)?;
                if last {
                    return Ok(());
                }
            }
            AgentEvent::CopyError(e) => {
                let error = json!({"type": "error", "message": e.message, "path": e.path});
                let _ = tx.send(Message::Text(error.to_string().into())).await;
                let _ = tx.close().await;
                return Ok(());
            }
            AgentEvent::CopyDone => {
                return Err("copy stream ended without completion marker".into());
            }
            other => return Err(unexpected(&other)),
        }
    }
}

async fn next(session: &mut ExecSession) -> Result<AgentEvent, String> {
    match session.next().await {
        Some(AgentEvent::Error(message)) => Err(message),
        Some(event) => Ok(event),
        None => Err("the guest agent dropped the copy".into()),
    }
}

fn unexpected(event: &AgentEvent) -> String {
    format!("unexpected answer from the guest agent: {event:?}")
}

/// Upstream's error message, then close.
async fn fail(tx: &mut Tx, message: String) {
    let error = json!({"type": "error", "message": message});
    let _ = tx.send(Message::Text(error.to_string().into())).await;
    let _ = tx.close().await;
}
