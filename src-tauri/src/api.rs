//! The shell's own small client of the Hypeman API: list instances, stop them. The UI has the
//! full SDK; the shell needs just these two calls, for the tray and the notifications.
//!
//! Invariants: the token is only ever put in the `Authorization` header — never in a log line,
//! an error or `Debug`. Requests go straight to the engine's loopback address (proxy variables
//! are ignored) and every request has a timeout, so a hung engine cannot hang the shell. Errors
//! are sentences with the API's own `message` when it sent one.

use std::fmt;
use std::time::Duration;

use hypedeck_model::error::sentence;
use serde::Deserialize;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout_at};

use crate::link::Connection;
use crate::status::{self, InstanceSummary};

/// Timeout of one list request (the poller asks again soon).
const LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// A client for one engine.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Api")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// What "stop all" achieved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StopReport {
    /// Instances that were asked to stop.
    pub asked: usize,
    /// Instances the API confirmed stopped.
    pub stopped: usize,
    /// Whether the deadline passed before every answer came.
    pub timed_out: bool,
}

#[derive(Deserialize)]
struct ErrorBody {
    message: String,
}

impl Api {
    /// A client for the API at `connection`.
    pub fn new(connection: &Connection) -> Result<Api, String> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
        Ok(Api {
            http,
            url: connection.url.trim_end_matches('/').to_owned(),
            token: connection.token.clone(),
        })
    }

    /// The engine's URL (no secret in it).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `GET /instances`.
    pub async fn list(&self) -> Result<Vec<InstanceSummary>, String> {
        let response = self
            .http
            .get(format!("{}/instances", self.url))
            .bearer_auth(&self.token)
            .timeout(LIST_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("list instances: {}", sentence(&e)))?;
        let response = checked("list instances", response).await?;
        response
            .json()
            .await
            .map_err(|e| format!("list instances: unexpected answer: {}", sentence(&e)))
    }

    /// `GET /stats` (a Hypedeck extension): `None` from servers without it.
    pub async fn fleet_stats(&self) -> Result<Option<hypedeck_model::FleetStats>, String> {
        let response = self
            .http
            .get(format!("{}/stats", self.url))
            .bearer_auth(&self.token)
            .timeout(LIST_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("read stats: {}", sentence(&e)))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = checked("read stats", response).await?;
        response
            .json()
            .await
            .map(Some)
            .map_err(|e| format!("read stats: unexpected answer: {}", sentence(&e)))
    }

    /// `POST /instances/{id}/stop`. The caller bounds how long it waits.
    pub async fn stop(&self, id: &str) -> Result<(), String> {
        let what = format!("stop {id}");
        let response = self
            .http
            .post(format!("{}/instances/{id}/stop", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| format!("{what}: {}", sentence(&e)))?;
        checked(&what, response).await.map(drop)
    }

    /// Stops every running or paused instance ([`status::to_stop`]), all at once, and waits for
    /// the answers for at most `limit` in all (the list included). Failures are logged, not
    /// returned: quitting goes on regardless. Requests still out at the deadline are dropped.
    pub async fn stop_all(&self, limit: Duration) -> StopReport {
        let deadline = Instant::now() + limit;
        let mut report = StopReport::default();
        let instances = match timeout_at(deadline, self.list()).await {
            Ok(Ok(instances)) => instances,
            Ok(Err(e)) => {
                tracing::warn!("cannot stop instances: {e}");
                return report;
            }
            Err(_) => {
                tracing::warn!("cannot stop instances: the instance list did not come in time");
                report.timed_out = true;
                return report;
            }
        };
        let mut stops = JoinSet::new();
        for id in status::to_stop(&instances) {
            let api = self.clone();
            report.asked += 1;
            stops.spawn(async move {
                let result = api.stop(&id).await;
                (id, result)
            });
        }
        loop {
            match timeout_at(deadline, stops.join_next()).await {
                Ok(None) => break,
                Ok(Some(Ok((id, Ok(()))))) => {
                    tracing::info!(%id, "instance stopped");
                    report.stopped += 1;
                }
                Ok(Some(Ok((_, Err(e))))) => tracing::warn!("{e}"),
                Ok(Some(Err(e))) => tracing::warn!("stop task failed: {e}"),
                Err(_) => {
                    tracing::warn!(
                        pending = stops.len(),
                        "gave up waiting for instances to stop after {} s",
                        limit.as_secs()
                    );
                    report.timed_out = true;
                    // Dropping the set aborts the requests still out.
                    break;
                }
            }
        }
        report
    }
}

/// `response` if it is a success, else an error with the API's message.
async fn checked(what: &str, response: reqwest::Response) -> Result<reqwest::Response, String> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let detail = match response.json::<ErrorBody>().await {
        Ok(body) => body.message,
        Err(_) => status
            .canonical_reason()
            .unwrap_or("no reason given")
            .to_owned(),
    };
    Err(format!("{what}: HTTP {}: {detail}", status.as_u16()))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::link::Mode;

    /// One request as the fake engine saw it: `"POST /instances/a/stop"` and its bearer token.
    type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

    /// A canned answer: status and body, or `None` to never answer.
    type Answer = Option<(u16, &'static str)>;

    /// A fake engine on a loopback port that answers `route(method_and_path)`.
    async fn fake_engine(route: fn(&str) -> Answer) -> (Api, Seen) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen: Seen = Arc::default();
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let log = log.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    let request: String = head.split(' ').take(2).collect::<Vec<_>>().join(" ");
                    let token = head.lines().find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("authorization")
                            .then(|| value.trim().trim_start_matches("Bearer ").to_owned())
                    });
                    log.lock().unwrap().push((request.clone(), token));
                    let Some((status, body)) = route(&request) else {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    };
                    let response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                });
            }
        });
        let api = Api::new(&Connection {
            url: format!("{url}/"),
            token: "hdk_test_token".into(),
            mode: Mode::Attached,
        })
        .unwrap();
        (api, seen)
    }

    const LIST: &str = r#"[
        {"id": "a", "name": "web", "state": "Running"},
        {"id": "b", "name": "db", "state": "Paused"},
        {"id": "c", "name": "old", "state": "Stopped", "exit_code": 0},
        {"id": "d", "name": "job", "state": "Initializing"}
    ]"#;

    fn engine(request: &str) -> Answer {
        match request {
            "GET /instances" => Some((200, LIST)),
            "POST /instances/a/stop" | "POST /instances/d/stop" => Some((200, "{}")),
            "POST /instances/b/stop" => Some((
                409,
                r#"{"code": "invalid_state", "message": "cannot stop from state Paused"}"#,
            )),
            _ => Some((404, r#"{"code": "not_found", "message": "no such route"}"#)),
        }
    }

    fn stored(seen: &Seen) -> Vec<String> {
        let mut requests: Vec<_> = seen.lock().unwrap().iter().map(|r| r.0.clone()).collect();
        requests.sort();
        requests
    }

    #[tokio::test]
    async fn lists_with_the_token_and_debug_hides_it() {
        let (api, seen) = fake_engine(engine).await;
        let list = api.list().await.unwrap();
        assert_eq!(list.len(), 4);
        assert_eq!(list[1].name, "db");
        assert_eq!(
            seen.lock().unwrap()[0],
            (
                "GET /instances".to_owned(),
                Some("hdk_test_token".to_owned())
            )
        );
        assert!(!format!("{api:?}").contains("hdk_test_token"));
        assert!(!api.url().ends_with('/'));
    }

    #[tokio::test]
    async fn errors_carry_the_api_message() {
        let (api, _) = fake_engine(|_| {
            Some((
                401,
                r#"{"code": "unauthorized", "message": "invalid token"}"#,
            ))
        })
        .await;
        let err = api.list().await.unwrap_err();
        assert_eq!(err, "list instances: HTTP 401: invalid token");
        assert!(!err.contains("hdk_test_token"));

        let (api, _) = fake_engine(|_| Some((500, "not json"))).await;
        assert_eq!(
            api.stop("a").await.unwrap_err(),
            "stop a: HTTP 500: Internal Server Error"
        );
    }

    #[tokio::test]
    async fn stop_all_stops_running_initializing_and_paused() {
        let (api, seen) = fake_engine(engine).await;
        let report = api.stop_all(Duration::from_secs(10)).await;
        assert_eq!(
            report,
            StopReport {
                asked: 3,
                stopped: 2,
                timed_out: false
            }
        );
        assert_eq!(
            stored(&seen),
            [
                "GET /instances",
                "POST /instances/a/stop",
                "POST /instances/b/stop",
                "POST /instances/d/stop"
            ]
        );
        assert!(
            seen.lock()
                .unwrap()
                .iter()
                .all(|r| r.1.as_deref() == Some("hdk_test_token"))
        );
    }

    #[tokio::test]
    async fn stop_all_gives_up_at_the_deadline() {
        let (api, _) = fake_engine(|request| match request {
            "POST /instances/d/stop" => None,
            other => engine(other),
        })
        .await;
        let started = std::time::Instant::now();
        let report = api.stop_all(Duration::from_millis(500)).await;
        assert!(report.timed_out);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn stop_all_without_an_engine_returns_at_once() {
        let (api, _) = fake_engine(|_| Some((503, "{}"))).await;
        let report = api.stop_all(Duration::from_secs(10)).await;
        assert_eq!(report, StopReport::default());
    }
}
