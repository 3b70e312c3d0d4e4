//! A minimal client for Cloud Hypervisor's REST API: HTTP/1.1 over its unix socket, one
//! request per connection, `Content-Length` bodies, every call under a timeout.
//!
//! Answers: `200` carries JSON, `204` nothing; `4xx`/`5xx` carry the VMM's error chain (a JSON
//! array of strings in current releases, plain text in old ones) and become
//! [`HypervisorError::Operation`] naming the endpoint. Transport failures (no socket, a
//! timeout, a garbled answer) are [`HypervisorError::Query`]: the VMM could not be asked.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hypedeck_hypervisor::{HypervisorError, VmmState};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::config::VmConfig;

/// Timeout of quick control calls (ping, info, pause, resume, power button, resize).
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout of `vm.create` and `vm.boot` (boot sets up every device).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of `vm.snapshot` and `vm.restore` (they copy all of guest memory).
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(300);

/// Largest response we accept (a `vm.info` is a few KiB).
const MAX_BODY: usize = 4 << 20;

/// HTTP method of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Queries.
    Get,
    /// Actions.
    Put,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
        }
    }
}

/// The REST API of one `cloud-hypervisor` process.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// A client for the API socket at `socket` (nothing is connected until a call).
    pub fn new(socket: impl Into<PathBuf>) -> Client {
        Client {
            socket: socket.into(),
        }
    }

    /// The API socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one request to `/api/v1/<endpoint>` and returns the JSON body of a `200`, or
    /// `None` for a `204`.
    pub async fn call(
        &self,
        method: Method,
        endpoint: &'static str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Option<Value>, HypervisorError> {
        let exchange = exchange(&self.socket, method, endpoint, body);
        let (status, text) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| {
                HypervisorError::Query(format!(
                    "{endpoint}: no answer from {} within {}ms",
                    self.socket.display(),
                    timeout.as_millis()
                ))
            })??;
        match status {
            200 => {
                if text.trim().is_empty() {
                    return Ok(None);
                }
                serde_json::from_str(&text)
                    .map(Some)
                    .map_err(|e| HypervisorError::Query(format!("{endpoint}: bad JSON: {e}")))
            }
            201..=299 => Ok(None),
            _ => Err(HypervisorError::Operation {
                operation: endpoint,
                detail: error_detail(status, &text),
            }),
        }
    }

    /// `GET vmm.ping`: the VMM's version information.
    pub async fn ping(&self, timeout: Duration) -> Result<Value, HypervisorError> {
        self.call(Method::Get, "vmm.ping", None, timeout)
            .await?
            .ok_or_else(|| HypervisorError::Query("vmm.ping: empty answer".into()))
    }

    /// `PUT vmm.shutdown`: ends the VMM process (and the VM with it).
    pub async fn shutdown_vmm(&self, timeout: Duration) -> Result<(), HypervisorError> {
        self.put("vmm.shutdown", None, timeout).await
    }

    /// `PUT vm.create`: creates (does not boot) the VM.
    pub async fn create(&self, config: &VmConfig) -> Result<(), HypervisorError> {
        let body = serde_json::to_value(config).map_err(|e| HypervisorError::Operation {
            operation: "vm.create",
            detail: format!("encode config: {e}"),
        })?;
        self.put("vm.create", Some(&body), BOOT_TIMEOUT).await
    }

    /// `PUT vm.boot`.
    pub async fn boot(&self) -> Result<(), HypervisorError> {
        self.put("vm.boot", None, BOOT_TIMEOUT).await
    }

    /// `PUT vm.pause`.
    pub async fn pause(&self) -> Result<(), HypervisorError> {
        self.put("vm.pause", None, CONTROL_TIMEOUT).await
    }

    /// `PUT vm.resume`.
    pub async fn resume(&self) -> Result<(), HypervisorError> {
        self.put("vm.resume", None, CONTROL_TIMEOUT).await
    }

    /// `PUT vm.shutdown`: stops the VM at once (no guest cooperation); the VMM stays.
    pub async fn shutdown(&self) -> Result<(), HypervisorError> {
        self.put("vm.shutdown", None, CONTROL_TIMEOUT).await
    }

    /// `PUT vm.power-button`: the ACPI power button (the guest decides what to do).
    pub async fn power_button(&self) -> Result<(), HypervisorError> {
        self.put("vm.power-button", None, CONTROL_TIMEOUT).await
    }

    /// `PUT vm.snapshot` into directory `dir` (the VM must be paused).
    pub async fn snapshot(&self, dir: &Path) -> Result<(), HypervisorError> {
        let body = json!({ "destination_url": file_url(dir) });
        self.put("vm.snapshot", Some(&body), SNAPSHOT_TIMEOUT).await
    }

    /// `PUT vm.restore` from directory `dir` into a fresh VMM (the VM comes back paused).
    pub async fn restore(&self, dir: &Path) -> Result<(), HypervisorError> {
        let body = json!({ "source_url": file_url(dir), "prefault": false });
        self.put("vm.restore", Some(&body), SNAPSHOT_TIMEOUT).await
    }

    /// `GET vm.info`: `{config, state, memory_actual_size, …}`.
    pub async fn info(&self) -> Result<Value, HypervisorError> {
        self.call(Method::Get, "vm.info", None, CONTROL_TIMEOUT)
            .await?
            .ok_or_else(|| HypervisorError::Query("vm.info: empty answer".into()))
    }

    /// The `state` of `vm.info`.
    pub async fn state(&self) -> Result<VmmState, HypervisorError> {
        let info = self.info().await?;
        let state = info.get("state").and_then(Value::as_str).unwrap_or("");
        parse_state(state)
    }

    /// `PUT vm.resize {desired_ram}`: grows (or shrinks) guest memory to `bytes` within the
    /// configured hotplug size.
    pub async fn resize_memory(&self, bytes: u64) -> Result<(), HypervisorError> {
        let body = json!({ "desired_ram": bytes });
        self.put("vm.resize", Some(&body), CONTROL_TIMEOUT).await
    }

    /// `PUT vm.resize {desired_balloon}`: inflates or deflates the balloon to `bytes`.
    pub async fn resize_balloon(&self, bytes: u64) -> Result<(), HypervisorError> {
        let body = json!({ "desired_balloon": bytes });
        self.put("vm.resize", Some(&body), CONTROL_TIMEOUT).await
    }

    async fn put(
        &self,
        endpoint: &'static str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<(), HypervisorError> {
        self.call(Method::Put, endpoint, body, timeout)
            .await
            .map(|_| ())
    }
}

/// Maps a `VmState` of the OpenAPI spec.
pub fn parse_state(state: &str) -> Result<VmmState, HypervisorError> {
    match state {
        "Created" => Ok(VmmState::Created),
        "Running" => Ok(VmmState::Running),
        // A guest stopped at a debugger breakpoint is not running either.
        "Paused" | "BreakPoint" => Ok(VmmState::Paused),
        "Shutdown" => Ok(VmmState::Shutdown),
        other => Err(HypervisorError::Query(format!("vm state {other:?}"))),
    }
}

/// `file://` + the absolute path (Cloud Hypervisor strips the scheme; no percent-encoding).
pub fn file_url(dir: &Path) -> String {
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    format!("file://{}", abs.display())
}

/// The error text of a failed call: `"<status> <reason>: <message chain>"`.
fn error_detail(status: u16, body: &str) -> String {
    let text = match serde_json::from_str::<Value>(body) {
        Ok(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| i.to_string())
            })
            .collect::<Vec<_>>()
            .join(": "),
        Ok(Value::String(s)) => s,
        _ => body.trim().to_string(),
    };
    let head = match reason(status) {
        "" => format!("HTTP {status}"),
        reason => format!("HTTP {status} {reason}"),
    };
    if text.is_empty() {
        head
    } else {
        format!("{head}: {text}")
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

fn transport(endpoint: &str, what: &str, e: impl std::fmt::Display) -> HypervisorError {
    HypervisorError::Query(format!("{endpoint}: {what}: {e}"))
}

/// One request/response exchange on a fresh connection.
async fn exchange(
    socket: &Path,
    method: Method,
    endpoint: &'static str,
    body: Option<&Value>,
) -> Result<(u16, String), HypervisorError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| transport(endpoint, &format!("connect {}", socket.display()), e))?;
    let (read, mut write) = stream.into_split();
    let payload = body.map(Value::to_string).unwrap_or_default();
    let mut request = format!(
        "{} /api/v1/{endpoint} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n",
        method.as_str()
    );
    if body.is_some() {
        request.push_str("Content-Type: application/json\r\n");
    }
    if method == Method::Put || body.is_some() {
        request.push_str(&format!("Content-Length: {}\r\n", payload.len()));
    }
    request.push_str("\r\n");
    request.push_str(&payload);
    write
        .write_all(request.as_bytes())
        .await
        .map_err(|e| transport(endpoint, "write", e))?;
    write
        .flush()
        .await
        .map_err(|e| transport(endpoint, "write", e))?;

    let mut reader = BufReader::new(read);
    let mut line = String::new();
    let n = reader
        .read_line(&mut line)
        .await
        .map_err(|e| transport(endpoint, "read", e))?;
    if n == 0 {
        return Err(transport(
            endpoint,
            "read",
            "connection closed without an answer",
        ));
    }
    let status = parse_status_line(&line)
        .ok_or_else(|| transport(endpoint, "bad status line", line.trim()))?;
    let mut content_length: Option<usize> = None;
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .await
            .map_err(|e| transport(endpoint, "read", e))?;
        if n == 0 {
            return Err(transport(
                endpoint,
                "read",
                "connection closed in the headers",
            ));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                let len = value
                    .trim()
                    .parse()
                    .map_err(|e| transport(endpoint, "bad Content-Length", e))?;
                content_length = Some(len);
            } else if name.trim().eq_ignore_ascii_case("transfer-encoding") {
                return Err(transport(endpoint, "unsupported", header));
            }
        }
    }
    let mut bytes = Vec::new();
    match content_length {
        // 204 and 1xx/304 never carry a body.
        _ if status == 204 || status == 304 || status < 200 => {}
        Some(len) if len > MAX_BODY => {
            return Err(transport(endpoint, "answer too large", len));
        }
        Some(len) => {
            bytes.resize(len, 0);
            reader
                .read_exact(&mut bytes)
                .await
                .map_err(|e| transport(endpoint, "read body", e))?;
        }
        None => {
            (&mut reader)
                .take(MAX_BODY as u64)
                .read_to_end(&mut bytes)
                .await
                .map_err(|e| transport(endpoint, "read body", e))?;
        }
    }
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// `HTTP/1.1 204 No Content` -> 204.
fn parse_status_line(line: &str) -> Option<u16> {
    let mut parts = line.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::fake_api::FakeCh;

    fn sock() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ch.sock");
        (dir, path)
    }

    fn config() -> VmConfig {
        let mut spec = crate::fake_api::spec();
        spec.hotplug_bytes = 1 << 30;
        crate::config::vm_config(&spec)
    }

    fn op_detail(e: HypervisorError) -> (&'static str, String) {
        match e {
            HypervisorError::Operation { operation, detail } => (operation, detail),
            other => panic!("expected an operation error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn every_endpoint_against_the_documented_api() {
        let (_dir, path) = sock();
        let fake = FakeCh::serve(&path);
        let c = Client::new(&path);
        let snap = tempfile::tempdir().unwrap();

        let ping = c.ping(CONTROL_TIMEOUT).await.unwrap();
        assert!(ping["version"].is_string(), "{ping}");

        // Nothing created yet: vm.info and vm.boot answer 404.
        let (op, detail) = op_detail(c.info().await.unwrap_err());
        assert_eq!(op, "vm.info");
        assert!(detail.starts_with("HTTP 404 Not Found"), "{detail}");
        let (op, detail) = op_detail(c.boot().await.unwrap_err());
        assert_eq!(op, "vm.boot");
        assert!(detail.contains("VM is not created"), "{detail}");

        c.create(&config()).await.unwrap();
        assert_eq!(c.state().await.unwrap(), VmmState::Created);
        let (_, detail) = op_detail(c.create(&config()).await.unwrap_err());
        assert!(detail.contains("already created"), "{detail}");
        // Pausing a VM that never booted is refused (405).
        let (_, detail) = op_detail(c.pause().await.unwrap_err());
        assert!(detail.starts_with("HTTP 405"), "{detail}");

        c.boot().await.unwrap();
        assert_eq!(c.state().await.unwrap(), VmmState::Running);
        // Snapshots need a paused VM.
        let (op, detail) = op_detail(c.snapshot(snap.path()).await.unwrap_err());
        assert_eq!(op, "vm.snapshot");
        assert!(detail.contains("not paused"), "{detail}");

        c.resize_memory(2 << 30).await.unwrap();
        assert_eq!(c.info().await.unwrap()["memory_actual_size"], 2u64 << 30);
        let (op, detail) = op_detail(c.resize_memory(64 << 30).await.unwrap_err());
        assert_eq!(op, "vm.resize");
        assert!(detail.starts_with("HTTP 500"), "{detail}");

        c.pause().await.unwrap();
        assert_eq!(c.state().await.unwrap(), VmmState::Paused);
        c.snapshot(snap.path()).await.unwrap();
        assert!(snap.path().join("config.json").is_file());
        assert!(snap.path().join("state.json").is_file());
        c.resume().await.unwrap();
        assert_eq!(c.state().await.unwrap(), VmmState::Running);
        let (_, detail) = op_detail(c.resume().await.unwrap_err());
        assert!(detail.starts_with("HTTP 405"), "{detail}");

        // The restore endpoint refuses a VMM that already has a VM.
        let (op, detail) = op_detail(c.restore(snap.path()).await.unwrap_err());
        assert_eq!(op, "vm.restore");
        assert!(detail.starts_with("HTTP 404"), "{detail}");

        c.power_button().await.unwrap();
        c.shutdown().await.unwrap();
        assert_eq!(c.state().await.unwrap(), VmmState::Shutdown);
        c.shutdown_vmm(CONTROL_TIMEOUT).await.unwrap();
        fake.stopped().await;

        let seen: Vec<String> = fake
            .requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        for expected in [
            "GET /api/v1/vmm.ping",
            "PUT /api/v1/vm.create",
            "PUT /api/v1/vm.boot",
            "PUT /api/v1/vm.pause",
            "PUT /api/v1/vm.resume",
            "PUT /api/v1/vm.snapshot",
            "PUT /api/v1/vm.restore",
            "GET /api/v1/vm.info",
            "PUT /api/v1/vm.resize",
            "PUT /api/v1/vm.power-button",
            "PUT /api/v1/vm.shutdown",
            "PUT /api/v1/vmm.shutdown",
        ] {
            assert!(
                seen.iter().any(|s| s == expected),
                "{expected} not in {seen:?}"
            );
        }
        let bodies = fake.requests();
        let create = bodies
            .iter()
            .find(|r| r.path.ends_with("vm.create"))
            .unwrap();
        assert_eq!(
            create.body["payload"]["kernel"],
            "/data/system/kernel/vmlinuz"
        );
        let snapshot = bodies
            .iter()
            .rfind(|r| r.path.ends_with("vm.snapshot"))
            .unwrap();
        assert_eq!(
            snapshot.body["destination_url"],
            format!("file://{}", snap.path().display())
        );
        let restore = bodies
            .iter()
            .find(|r| r.path.ends_with("vm.restore"))
            .unwrap();
        assert_eq!(restore.body["prefault"], false);
        let resize = bodies
            .iter()
            .rfind(|r| r.path.ends_with("vm.resize"))
            .unwrap();
        assert_eq!(resize.body["desired_ram"], 64u64 << 30);
    }

    #[tokio::test]
    async fn restore_into_a_fresh_vmm_comes_back_paused() {
        let (dir, path) = sock();
        let snap = dir.path().join("snap");
        std::fs::create_dir_all(&snap).unwrap();
        {
            let fake = FakeCh::serve(&path);
            let c = Client::new(&path);
            c.create(&config()).await.unwrap();
            c.boot().await.unwrap();
            c.pause().await.unwrap();
            c.snapshot(&snap).await.unwrap();
            c.shutdown_vmm(CONTROL_TIMEOUT).await.unwrap();
            fake.stopped().await;
        }
        let path2 = dir.path().join("ch2.sock");
        let _fake = FakeCh::serve(&path2);
        let c = Client::new(&path2);
        // A directory without a snapshot is refused.
        let (_, detail) = op_detail(c.restore(dir.path()).await.unwrap_err());
        assert!(detail.contains("config.json"), "{detail}");
        c.restore(&snap).await.unwrap();
        assert_eq!(c.state().await.unwrap(), VmmState::Paused);
        let info = c.info().await.unwrap();
        assert_eq!(info["config"]["net"][0]["vhost_mode"], "Client");
        c.resume().await.unwrap();
        assert_eq!(c.state().await.unwrap(), VmmState::Running);
    }

    #[tokio::test]
    async fn unknown_endpoints_and_bad_bodies_are_errors() {
        let (_dir, path) = sock();
        let _fake = FakeCh::serve(&path);
        let c = Client::new(&path);
        let (op, detail) = op_detail(
            c.call(Method::Get, "vm.nope", None, CONTROL_TIMEOUT)
                .await
                .unwrap_err(),
        );
        assert_eq!(op, "vm.nope");
        assert_eq!(detail, "HTTP 404 Not Found: Not Found");
        let (_, detail) = op_detail(
            c.call(
                Method::Put,
                "vm.create",
                Some(&json!({"cpus": 1})),
                CONTROL_TIMEOUT,
            )
            .await
            .unwrap_err(),
        );
        assert!(
            detail.starts_with("HTTP 400 Bad Request: Failed to deserialize JSON"),
            "{detail}"
        );
        // GET on an action endpoint.
        let (_, detail) = op_detail(
            c.call(Method::Get, "vm.boot", None, CONTROL_TIMEOUT)
                .await
                .unwrap_err(),
        );
        assert!(detail.starts_with("HTTP 400"), "{detail}");
    }

    #[tokio::test]
    async fn a_silent_vmm_times_out_and_a_missing_one_fails_fast() {
        let (_dir, path) = sock();
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        // Accepts and reads, never answers.
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                held.push(s);
            }
        });
        let c = Client::new(&path);
        let started = std::time::Instant::now();
        let err = c.ping(Duration::from_millis(200)).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3));
        match err {
            HypervisorError::Query(m) => {
                assert!(m.contains("no answer") && m.contains("200ms"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        silent.abort();

        let gone = Client::new(path.with_file_name("missing.sock"));
        match gone.state().await.unwrap_err() {
            HypervisorError::Query(m) => assert!(m.starts_with("vm.info: connect"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn raw_answers_are_parsed_by_the_book() {
        // Old releases answer errors in plain text; 200s may come without a length.
        async fn serve_once(path: PathBuf, answer: &'static str) {
            let listener = tokio::net::UnixListener::bind(&path).unwrap();
            tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                s.write_all(answer.as_bytes()).await.unwrap();
                s.shutdown().await.unwrap();
            });
        }
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);

        serve_once(
            p("a"),
            "HTTP/1.1 500 Internal Server Error\r\n\r\nVM is not booted\n",
        )
        .await;
        let (_, detail) = op_detail(Client::new(p("a")).pause().await.unwrap_err());
        assert_eq!(detail, "HTTP 500 Internal Server Error: VM is not booted");

        serve_once(
            p("b"),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"state\":\"Paused\"}",
        )
        .await;
        assert_eq!(Client::new(p("b")).state().await.unwrap(), VmmState::Paused);

        serve_once(p("c"), "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nnope!").await;
        assert!(matches!(
            Client::new(p("c")).info().await.unwrap_err(),
            HypervisorError::Query(m) if m.contains("bad JSON")
        ));

        serve_once(p("d"), "SSH-2.0-OpenSSH\r\n").await;
        assert!(matches!(
            Client::new(p("d")).ping(CONTROL_TIMEOUT).await.unwrap_err(),
            HypervisorError::Query(m) if m.contains("bad status line")
        ));

        serve_once(
            p("e"),
            "HTTP/1.1 200 OK\r\nContent-Length: 19\r\n\r\n{\"state\":\"Weird\"}  ",
        )
        .await;
        assert!(matches!(
            Client::new(p("e")).state().await.unwrap_err(),
            HypervisorError::Query(m) if m.contains("Weird")
        ));

        serve_once(
            p("f"),
            "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        Client::new(p("f")).power_button().await.unwrap();

        serve_once(p("g"), "").await;
        assert!(matches!(
            Client::new(p("g")).resume().await.unwrap_err(),
            HypervisorError::Query(m) if m.contains("closed without an answer")
        ));
    }

    #[test]
    fn details_and_urls() {
        assert_eq!(
            error_detail(
                500,
                r#"["Error from API","The VM could not boot","VM is not created"]"#
            ),
            "HTTP 500 Internal Server Error: Error from API: The VM could not boot: VM is not created"
        );
        assert_eq!(error_detail(404, ""), "HTTP 404 Not Found");
        assert_eq!(error_detail(418, "\"teapot\""), "HTTP 418: teapot");
        assert_eq!(parse_status_line("HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status_line("HTTP/2 200"), None);
        assert_eq!(file_url(Path::new("/a b/c")), "file:///a b/c");
        assert!(file_url(Path::new("rel")).starts_with("file:///"));
    }
}
