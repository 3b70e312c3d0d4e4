//! `hypedeck exec`: a command in a running instance over the API's exec WebSocket (upstream's
//! protocol: a JSON request first, stdin as binary frames, `{"resize":…}` text frames in a
//! terminal, output as binary frames, and `{"exitCode":N}` last). With a terminal (`-it`, or
//! when stdin and stdout are terminals) the local terminal is raw while it runs and its size
//! follows the window. The process exits with the command's exit code. An `https://` server is
//! reached over `wss://` with the same TLS trust as the HTTP client
//! ([`crate::client::tls_config`]: the OS's roots, or `SSL_CERT_FILE`).

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::client::{Api, CliError, instance_path};

/// What to run.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// argv (`/bin/sh` when empty, upstream's default).
    pub command: Vec<String>,
    /// A terminal (`None`: when stdin and stdout are terminals).
    pub tty: Option<bool>,
    /// Extra env.
    pub env: serde_json::Map<String, Value>,
    /// Working directory.
    pub cwd: Option<String>,
    /// Timeout in seconds (0: none).
    pub timeout: u32,
}

/// The terminal's size (rows, cols), if stdout is one.
#[cfg(unix)]
fn window_size() -> Option<(u16, u16)> {
    let size = rustix::termios::tcgetwinsize(std::io::stdout()).ok()?;
    (size.ws_row > 0 && size.ws_col > 0).then_some((size.ws_row, size.ws_col))
}

/// Puts stdin in raw mode until dropped.
#[cfg(unix)]
struct RawMode(Option<rustix::termios::Termios>);

#[cfg(unix)]
impl RawMode {
    fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let Ok(saved) = rustix::termios::tcgetattr(&stdin) else {
            return RawMode(None);
        };
        let mut raw = saved.clone();
        raw.make_raw();
        if rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw).is_err()
        {
            return RawMode(None);
        }
        RawMode(Some(saved))
    }
}

#[cfg(unix)]
impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                saved,
            );
        }
    }
}

/// Runs `request` in `instance`; returns the command's exit code.
pub async fn exec(api: &Api, instance: &str, request: ExecRequest) -> Result<i32, CliError> {
    use std::io::IsTerminal as _;
    let terminals = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let tty = request.tty.unwrap_or(terminals);
    let mut body = json!({ "command": if request.command.is_empty() { vec!["/bin/sh".to_string()] } else { request.command.clone() }, "tty": tty });
    if !request.env.is_empty() {
        body["env"] = Value::Object(request.env.clone());
    }
    if let Some(cwd) = &request.cwd {
        body["cwd"] = json!(cwd);
    }
    if request.timeout > 0 {
        body["timeout"] = json!(request.timeout);
    }
    #[cfg(unix)]
    if tty && let Some((rows, cols)) = window_size() {
        body["rows"] = json!(rows);
        body["cols"] = json!(cols);
    }

    let socket = connect(api, instance, "exec").await?;
    let (mut sink, mut stream) = socket.split();
    sink.send(Message::text(body.to_string()))
        .await
        .map_err(|e| CliError::Unreachable(format!("exec: {e}")))?;

    #[cfg(unix)]
    let _raw = (tty && std::io::stdin().is_terminal()).then(RawMode::enter);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Message>(16);
    // stdin → binary frames; an empty frame says EOF.
    let stdin_tx = tx.clone();
    let stdin_task = tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = stdin_tx.send(Message::binary(Vec::new())).await;
                    break;
                }
                Ok(n) => {
                    if stdin_tx
                        .send(Message::binary(buf[..n].to_vec()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    // The window's size follows the terminal.
    #[cfg(unix)]
    let resize_task = tty.then(|| {
        let tx = tx.clone();
        tokio::spawn(async move {
            let Ok(mut winch) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            while winch.recv().await.is_some() {
                if let Some((rows, cols)) = window_size() {
                    let frame = json!({ "resize": { "rows": rows, "cols": cols } }).to_string();
                    if tx.send(Message::text(frame)).await.is_err() {
                        break;
                    }
                }
            }
        })
    });
    drop(tx);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
    });

    let mut stdout = tokio::io::stdout();
    let mut code = None;
    while let Some(message) = stream.next().await {
        match message {
            Ok(Message::Binary(bytes)) => {
                let _ = stdout.write_all(&bytes).await;
                let _ = stdout.flush().await;
            }
            Ok(Message::Text(text)) => {
                if let Ok(v) = serde_json::from_str::<Value>(&text)
                    && let Some(c) = v.get("exitCode").and_then(Value::as_i64)
                {
                    code = Some(i32::try_from(c).unwrap_or(1));
                    break;
                }
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    stdin_task.abort();
    #[cfg(unix)]
    if let Some(t) = resize_task {
        t.abort();
    }
    writer.abort();
    code.ok_or_else(|| CliError::Unreachable("the exec session ended without an exit code".into()))
}

/// A WebSocket to the API's `/instances/{instance}/{verb}` (exec, cp), authenticated like
/// every request; a refused upgrade is the API's error.
pub(crate) async fn connect(
    api: &Api,
    instance: &str,
    verb: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    CliError,
> {
    let target = api.target();
    let (ws_url, connector) = match target.base_url.split_once("://") {
        Some(("http", rest)) => (format!("ws://{rest}"), None),
        Some(("https", rest)) => {
            let tls = match api.tls() {
                Some(tls) => tls,
                None => crate::client::tls_config()?,
            };
            (
                format!("wss://{rest}"),
                Some(tokio_tungstenite::Connector::Rustls(tls)),
            )
        }
        _ => return Err(CliError::Usage(format!("bad base URL {}", target.base_url))),
    };
    let url = format!("{ws_url}{}/{verb}", instance_path(instance));
    let mut ws_request = url
        .into_client_request()
        .map_err(|e| CliError::Other(format!("{verb} request: {e}")))?;
    if let Some(key) = api.api_key() {
        let value = format!("Bearer {key}")
            .parse()
            .map_err(|_| CliError::Other("the API key is not a valid header value".into()))?;
        ws_request.headers_mut().insert("authorization", value);
    }
    let connecting =
        tokio_tungstenite::connect_async_tls_with_config(ws_request, None, false, connector);
    match connecting.await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body: Value = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            let field = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
            Err(CliError::Api {
                status,
                code: field("code").unwrap_or_else(|| status.to_string()),
                message: field("message").unwrap_or_else(|| "no message".into()),
            })
        }
        Err(e) => Err(CliError::Unreachable(format!(
            "cannot reach {}: {}",
            target.base_url,
            crate::client::with_causes(&e)
        ))),
    }
}
