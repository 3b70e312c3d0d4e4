//! A minimal QMP client: one connection per command, with a timeout.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Runs one QMP command and returns its `return` value.
pub async fn execute(
    socket: &Path,
    command: &str,
    arguments: Option<Value>,
    timeout: Duration,
) -> Result<Value, String> {
    tokio::time::timeout(timeout, execute_inner(socket, command, arguments))
        .await
        .map_err(|_| format!("qmp {command}: timed out after {}ms", timeout.as_millis()))?
}

async fn execute_inner(
    socket: &Path,
    command: &str,
    arguments: Option<Value>,
) -> Result<Value, String> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| format!("connect qmp: {e}"))?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    // Greeting.
    next_reply(&mut lines, false).await?;
    write
        .write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
        .await
        .map_err(|e| format!("qmp write: {e}"))?;
    next_reply(&mut lines, true).await?;
    let mut request = json!({ "execute": command });
    if let Some(args) = arguments {
        request["arguments"] = args;
    }
    let mut bytes = request.to_string().into_bytes();
    bytes.push(b'\n');
    write
        .write_all(&bytes)
        .await
        .map_err(|e| format!("qmp write: {e}"))?;
    next_reply(&mut lines, true).await
}

async fn next_reply(
    lines: &mut tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    want_return: bool,
) -> Result<Value, String> {
    loop {
        let line = lines
            .next_line()
            .await
            .map_err(|e| format!("qmp read: {e}"))?
            .ok_or_else(|| "qmp connection closed".to_string())?;
        let value: Value = serde_json::from_str(&line).map_err(|e| format!("qmp decode: {e}"))?;
        if value.get("event").is_some() {
            continue;
        }
        if let Some(error) = value.get("error") {
            let desc = error
                .get("desc")
                .and_then(Value::as_str)
                .unwrap_or("unknown error");
            return Err(format!("qmp error: {desc}"));
        }
        if !want_return {
            return Ok(value);
        }
        if let Some(ret) = value.get("return") {
            return Ok(ret.clone());
        }
    }
}
