//! The verbs of upstream's `hypeman` CLI that `hypedeck` speaks, with its names, flags and
//! output shapes: a table or a line for people (`--format auto`, the default), the API's JSON
//! for scripts (`--format json`, one document per answer, never reshaped). Progress goes to
//! stderr, results to stdout.

use std::io::Write as _;

use futures_util::StreamExt as _;
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{Api, CliError, segment};

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tables and lines for people.
    Auto,
    /// The API's JSON.
    Json,
}

fn print_json(value: &Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::Other(format!("print JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

fn instance_path(instance: &str) -> String {
    format!("/instances/{}", segment(instance))
}

fn text(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_string()
}

/// `12 seconds ago`, like upstream's `FormatTimeAgo`.
pub fn time_ago(rfc3339: &str, now: time::OffsetDateTime) -> String {
    let Ok(t) =
        time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
    else {
        return "N/A".into();
    };
    let secs = (now - t).whole_seconds().max(0);
    let plural = |n: i64, unit: &str| {
        if n == 1 {
            format!("1 {unit} ago")
        } else {
            format!("{n} {unit}s ago")
        }
    };
    match secs {
        s if s < 60 => format!("{s} seconds ago"),
        s if s < 3600 => plural(s / 60, "minute"),
        s if s < 86_400 => plural(s / 3600, "hour"),
        s => plural(s / 86_400, "day"),
    }
}

/// Columns padded to their widest cell, separated by three spaces (upstream's table).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            if i == last {
                out.push_str(&cell);
            } else {
                out.push_str(&format!("{cell:<w$}   ", w = widths[i]));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.clone()));
    }
    out
}

/// `ps`: running instances (all with `-a`), or only their ids (`-q`).
pub async fn ps(
    api: &Api,
    format: Format,
    all: bool,
    quiet: bool,
    state: Option<&str>,
    tags: &[String],
) -> Result<(), CliError> {
    let mut query: Vec<(String, String)> = Vec::new();
    if let Some(s) = state {
        query.push(("state".into(), s.to_string()));
    }
    for tag in tags {
        match tag.split_once('=') {
            Some((k, v)) if !k.is_empty() => query.push((format!("tags[{k}]"), v.to_string())),
            _ => eprintln!("Warning: ignoring malformed tag filter: {tag}"),
        }
    }
    let server_filtered = !query.is_empty();
    let response = api.get_query("/instances", &query).await?;
    let list: Value = response
        .json()
        .await
        .map_err(|e| CliError::Other(format!("the instance list is not JSON: {e}")))?;
    let shown: Vec<&Value> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| all || server_filtered || text(i, "state") == "Running")
        .collect();
    if format == Format::Json {
        return print_json(&Value::Array(shown.into_iter().cloned().collect()));
    }
    if quiet {
        for i in &shown {
            println!("{}", text(i, "id"));
        }
        return Ok(());
    }
    if shown.is_empty() {
        if !all && !server_filtered {
            eprintln!("No running instances. Use -a to show all.");
        }
        return Ok(());
    }
    let now = time::OffsetDateTime::now_utc();
    let rows: Vec<Vec<String>> = shown
        .iter()
        .map(|i| {
            let id = text(i, "id");
            vec![
                id.chars().take(12).collect(),
                text(i, "name"),
                text(i, "image"),
                text(i, "state"),
                i.pointer("/gpu/profile")
                    .and_then(Value::as_str)
                    .unwrap_or("-")
                    .to_string(),
                match text(i, "hypervisor").as_str() {
                    "cloud-hypervisor" => "ch".to_string(),
                    "" => "-".to_string(),
                    other => other.to_string(),
                },
                time_ago(&text(i, "created_at"), now),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "INSTANCE ID",
                "NAME",
                "IMAGE",
                "STATE",
                "GPU",
                "HV",
                "CREATED"
            ],
            &rows
        )
    );
    Ok(())
}

/// `inspect`: the instance's JSON.
pub async fn inspect(api: &Api, instance: &str) -> Result<(), CliError> {
    print_json(&api.get(&instance_path(instance)).await?)
}

/// `stop`, `start`, `standby`, `restore`: the verb, then a line (or the instance's JSON).
pub async fn lifecycle(
    api: &Api,
    format: Format,
    verb: &str,
    instance: &str,
    body: Option<Value>,
) -> Result<(), CliError> {
    let (doing, done) = match verb {
        "stop" => ("Stopping", "Stopped"),
        "start" => ("Starting", "Started"),
        "standby" => ("Putting", "Standby"),
        _ => ("Restoring", "Restored"),
    };
    if verb == "standby" {
        eprintln!("Putting {instance} into standby...");
    } else {
        eprintln!("{doing} {instance}...");
    }
    let path = format!("{}/{verb}", instance_path(instance));
    let answer = api.call(Method::POST, &path, body.as_ref()).await?;
    if format == Format::Json {
        return print_json(&answer);
    }
    if verb == "standby" {
        eprintln!(
            "{} is in standby (state: {})",
            text(&answer, "name"),
            text(&answer, "state")
        );
    } else {
        eprintln!(
            "{done} {} (state: {})",
            text(&answer, "name"),
            text(&answer, "state")
        );
    }
    Ok(())
}

/// `start`'s body: `{}` or the overrides.
pub fn start_body(entrypoint: &[String], cmd: &[String]) -> Value {
    let mut body = json!({});
    if !entrypoint.is_empty() {
        body["entrypoint"] = json!(entrypoint);
    }
    if !cmd.is_empty() {
        body["cmd"] = json!(cmd);
    }
    body
}

/// `rm`: deletes each instance (running ones only with `--force`); `--all` every instance
/// (running ones skipped without `--force`). Every one is tried; the last error is returned.
pub async fn rm(api: &Api, instances: &[String], force: bool, all: bool) -> Result<(), CliError> {
    if !all && instances.is_empty() {
        return Err(CliError::Usage(
            "instance ID required\nUsage: hypedeck rm [flags] <instance> [instance...]\n       hypedeck rm --all [--force]"
                .into(),
        ));
    }
    let targets: Vec<String> = if all {
        let list = api.get("/instances").await?;
        let ids: Vec<String> = list
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| text(i, "id"))
            .collect();
        if ids.is_empty() {
            println!("No instances to remove");
            return Ok(());
        }
        ids
    } else {
        instances.to_vec()
    };
    let mut last = None;
    for target in &targets {
        if !force {
            match api.get(&instance_path(target)).await {
                Ok(i) if text(&i, "state") == "Running" => {
                    if !all {
                        eprintln!(
                            "Error: cannot remove running instance {target}. Stop it first or use --force"
                        );
                        last = Some(CliError::Api {
                            status: 409,
                            code: "invalid_state".into(),
                            message: format!("instance {target} is running"),
                        });
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("Error: {e}");
                    last = Some(e);
                    continue;
                }
            }
        }
        match api.call(Method::DELETE, &instance_path(target), None).await {
            Ok(_) => println!("{target}"),
            Err(e) => {
                eprintln!("Error: {e}");
                last = Some(e);
            }
        }
    }
    last.map_or(Ok(()), Err)
}

/// `wait`: the state it reached (a time-out is an error, exit 1).
pub async fn wait(
    api: &Api,
    format: Format,
    instance: &str,
    state: &str,
    timeout: Option<&str>,
) -> Result<(), CliError> {
    let mut query = vec![("state", state.to_string())];
    if let Some(t) = timeout {
        query.push(("timeout", t.to_string()));
    }
    let path = format!("{}/wait", instance_path(instance));
    let response = api.get_query(&path, &query).await?;
    let answer: Value = response
        .json()
        .await
        .map_err(|e| CliError::Other(format!("the wait answer is not JSON: {e}")))?;
    if format == Format::Json {
        return print_json(&answer);
    }
    let reached = text(&answer, "state");
    if answer.get("timed_out").and_then(Value::as_bool) == Some(true) {
        eprintln!("Timed out waiting (last state: {reached})");
        return Err(CliError::Other(format!(
            "timed out waiting for instance to reach state {state}"
        )));
    }
    match answer.get("state_error").and_then(Value::as_str) {
        Some(err) if !err.is_empty() => {
            println!("{:<14} {reached}", "STATE");
            println!("{:<14} {err}", "STATE ERROR");
        }
        _ => println!("{reached}"),
    }
    Ok(())
}

/// `logs`: the lines (followed with `-f` until the server ends the stream or ^C).
pub async fn logs(
    api: &Api,
    instance: &str,
    follow: bool,
    tail: Option<u32>,
    source: Option<&str>,
) -> Result<(), CliError> {
    let mut query: Vec<(&str, String)> = Vec::new();
    if follow {
        query.push(("follow", "true".into()));
    }
    if let Some(n) = tail {
        query.push(("tail", n.to_string()));
    }
    if let Some(s) = source {
        query.push(("source", s.to_string()));
    }
    let path = format!("{}/logs", instance_path(instance));
    let response = api.get_query(&path, &query).await?;
    let mut stream = response.bytes_stream();
    let mut pending = Vec::new();
    let stdout = std::io::stdout();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| CliError::Unreachable(format!("the log stream broke: {e}")))?;
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if let Some(text) = sse_data(&line) {
                let mut out = stdout.lock();
                let _ = writeln!(out, "{text}");
                let _ = out.flush();
            }
        }
    }
    Ok(())
}

/// The log line an SSE `data: "<JSON string>"` line carries.
pub fn sse_data(line: &[u8]) -> Option<String> {
    let line = std::str::from_utf8(line)
        .ok()?
        .trim_end_matches(['\r', '\n']);
    let data = line.strip_prefix("data:")?.trim_start();
    serde_json::from_str::<String>(data).ok()
}

/// `health`, `resources`, `image ls` and the like: a GET whose JSON is the answer.
pub async fn show(api: &Api, path: &str) -> Result<(), CliError> {
    print_json(&api.get(path).await?)
}

/// `volume-id:/mount/path[:ro[:overlay=SIZE]]` (upstream's `--volume`) as a `VolumeMount`.
pub fn volume_spec(spec: &str) -> Result<Value, CliError> {
    let bad = |why: &str| {
        CliError::Usage(format!(
            "invalid volume spec {spec:?}: {why} (expected volume-id:/mount/path[:ro[:overlay=SIZE]])"
        ))
    };
    let (id, rest) = spec.split_once(':').ok_or_else(|| bad("no mount path"))?;
    if id.is_empty() {
        return Err(bad("volume ID cannot be empty"));
    }
    let mut parts = rest.split(':');
    let path = parts
        .next()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| bad("mount path cannot be empty"))?;
    let mut mount = json!({"volume_id": id, "mount_path": path});
    for option in parts {
        match option {
            "ro" => mount["readonly"] = json!(true),
            o if o.starts_with("overlay=") => {
                mount["overlay"] = json!(true);
                mount["overlay_size"] = json!(&o["overlay=".len()..]);
            }
            o => return Err(bad(&format!("unknown option {o:?}"))),
        }
    }
    Ok(mount)
}

/// `KEY=VALUE` pairs into a map; malformed ones are warned about and skipped (upstream).
pub fn key_values(pairs: &[String], what: &str) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    for pair in pairs {
        match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                out.insert(k.to_string(), json!(v));
            }
            _ => eprintln!(
                "Warning: ignoring malformed {what}: {}",
                pair.split('=').next().unwrap_or("")
            ),
        }
    }
    out
}

/// `<name>-<4 random lowercase letters and digits>` from an image reference (upstream's
/// `GenerateInstanceName`).
pub fn generated_name(image: &str) -> String {
    let base = image.rsplit('/').next().unwrap_or(image);
    let base = base.split([':', '@']).next().unwrap_or(base);
    let mut bytes = [0u8; 4];
    let _ = getrandom_fill(&mut bytes);
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let suffix: String = bytes
        .iter()
        .map(|b| alphabet[usize::from(*b) % alphabet.len()] as char)
        .collect();
    format!("{base}-{suffix}")
}

fn getrandom_fill(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

/// `pull`: asks the server for the image and waits until it is ready (or failed).
pub async fn pull(api: &Api, format: Format, image: &str) -> Result<Value, CliError> {
    let path = format!("/images/{}", segment(image));
    let mut current = match api.get(&path).await {
        Ok(found) => found,
        Err(CliError::Api { status: 404, .. }) => {
            eprintln!("Pulling {image}...");
            api.call(Method::POST, "/images", Some(&json!({ "name": image })))
                .await?
        }
        Err(e) => return Err(e),
    };
    let mut last = String::new();
    loop {
        let status = text(&current, "status");
        if status != last {
            if format == Format::Auto && status != "ready" {
                eprintln!("{}...", capitalized(&status));
            }
            last = status.clone();
        }
        match status.as_str() {
            "ready" => return Ok(current),
            "failed" => {
                return Err(CliError::Other(format!(
                    "image {image} failed: {}",
                    current
                        .get("error")
                        .and_then(Value::as_str)
                        .unwrap_or("no reason given")
                )));
            }
            _ => {}
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        current = api.get(&path).await?;
    }
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// `run`: pulls the image when the server lacks it, creates the instance and prints its id.
pub async fn run(api: &Api, format: Format, image: &str, mut body: Value) -> Result<(), CliError> {
    pull(api, format, image).await?;
    body["image"] = json!(image);
    if body.get("name").is_none_or(Value::is_null) {
        body["name"] = json!(generated_name(image));
    }
    eprintln!("Creating instance {}...", text(&body, "name"));
    let created = api.call(Method::POST, "/instances", Some(&body)).await?;
    if format == Format::Json {
        return print_json(&created);
    }
    println!("{}", text(&created, "id"));
    Ok(())
}

/// `update egress-credentials`: PATCHes the bound credentials' values (a rotation the guest
/// never sees); prints the instance's name and state.
pub async fn update_credentials(
    api: &Api,
    format: Format,
    instance: &str,
    env: serde_json::Map<String, Value>,
) -> Result<(), CliError> {
    if env.is_empty() {
        return Err(CliError::Usage(
            "no credential given: --env KEY=VALUE, or `hypedeck rotate <instance> KEY` to type it"
                .into(),
        ));
    }
    let keys: Vec<String> = env.keys().cloned().collect();
    let answer = api
        .call(
            Method::PATCH,
            &instance_path(instance),
            Some(&json!({ "env": env })),
        )
        .await?;
    if format == Format::Json {
        return print_json(&answer);
    }
    eprintln!("Updated {} on {}", keys.join(", "), text(&answer, "name"));
    Ok(())
}

/// `volume attach` / `volume detach`.
pub async fn volume_attachment(
    api: &Api,
    format: Format,
    volume: &str,
    instance: &str,
    mount: Option<(&str, bool)>,
) -> Result<(), CliError> {
    let path = format!("{}/volumes/{}", instance_path(instance), segment(volume));
    let answer = match mount {
        Some((mount_path, readonly)) => {
            let body = json!({ "mount_path": mount_path, "readonly": readonly });
            api.call(Method::POST, &path, Some(&body)).await?
        }
        None => api.call(Method::DELETE, &path, None).await?,
    };
    if format == Format::Json {
        return print_json(&answer);
    }
    match mount {
        Some((p, _)) => eprintln!("Attached {volume} to {} at {p}", text(&answer, "name")),
        None => eprintln!("Detached {volume} from {}", text(&answer, "name")),
    }
    Ok(())
}

/// `credentials`: each credential's env var, the fingerprint of the value in force, when it
/// was rotated and last used (never a value: the API has none to give).
pub async fn credentials(api: &Api, format: Format, instance: &str) -> Result<(), CliError> {
    let list = api
        .get(&format!("{}/credentials", instance_path(instance)))
        .await?;
    if format == Format::Json {
        return print_json(&list);
    }
    let now = time::OffsetDateTime::now_utc();
    let when = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .map_or_else(|| "never".to_string(), |t| time_ago(t, now))
    };
    let rows: Vec<Vec<String>> = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            vec![
                text(c, "env"),
                c.get("fingerprint")
                    .and_then(Value::as_str)
                    .unwrap_or("-")
                    .to_string(),
                c.get("hosts").and_then(Value::as_array).map_or_else(
                    || "any host".to_string(),
                    |h| {
                        h.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(",")
                    },
                ),
                when(c.get("rotated_at")),
                when(c.pointer("/last_used/time")),
            ]
        })
        .collect();
    if rows.is_empty() {
        eprintln!("No credentials.");
        return Ok(());
    }
    println!(
        "{}",
        table(
            &["ENV", "FINGERPRINT", "HOSTS", "ROTATED", "LAST USED"],
            &rows
        )
    );
    Ok(())
}

/// A table column: its header and how to print one item's cell.
pub type Column<'a> = (&'a str, &'a dyn Fn(&Value) -> String);

/// A list from `path` as a table of `columns` (`(header, cell of one item)`), or its ids
/// (`-q`, the `id_key` of each item), or the JSON.
pub async fn list(
    api: &Api,
    format: Format,
    path: &str,
    quiet: bool,
    id_key: &str,
    columns: &[Column<'_>],
) -> Result<(), CliError> {
    let items = api.get(path).await?;
    if format == Format::Json {
        return print_json(&items);
    }
    let items: Vec<&Value> = items.as_array().into_iter().flatten().collect();
    if quiet {
        for item in items {
            println!("{}", text(item, id_key));
        }
        return Ok(());
    }
    if items.is_empty() {
        return Ok(());
    }
    let header: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| columns.iter().map(|(_, cell)| cell(item)).collect())
        .collect();
    println!("{}", table(&header, &rows));
    Ok(())
}

/// A cell: the string at `pointer` (`-` when absent).
pub fn cell(item: &Value, pointer: &str) -> String {
    match item.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

/// A cell: how long ago the time at `pointer` was.
pub fn ago(item: &Value, pointer: &str) -> String {
    item.pointer(pointer).and_then(Value::as_str).map_or_else(
        || "-".into(),
        |t| time_ago(t, time::OffsetDateTime::now_utc()),
    )
}

/// A call whose answer is one resource: its `id_key` printed (the JSON with --format json).
pub async fn create(
    api: &Api,
    format: Format,
    path: &str,
    body: &Value,
    id_key: &str,
) -> Result<(), CliError> {
    let answer = api.call(Method::POST, path, Some(body)).await?;
    if format == Format::Json {
        return print_json(&answer);
    }
    println!("{}", text(&answer, id_key));
    Ok(())
}

/// `DELETE path`, then `name` printed.
pub async fn delete(api: &Api, path: &str, name: &str) -> Result<(), CliError> {
    api.call(Method::DELETE, path, None).await?;
    println!("{name}");
    Ok(())
}

/// `fork <source> <name>`: the fork's id.
pub async fn fork(
    api: &Api,
    format: Format,
    source: &str,
    name: &str,
    from_running: bool,
    target_state: Option<&str>,
) -> Result<(), CliError> {
    let mut body = json!({ "name": name });
    if from_running {
        body["from_running"] = json!(true);
    }
    if let Some(t) = target_state {
        body["target_state"] = json!(t);
    }
    eprintln!("Forking {source} as {name}...");
    create(
        api,
        format,
        &format!("{}/fork", instance_path(source)),
        &body,
        "id",
    )
    .await
}

/// `stats <instance>`: CPU, memory and network of its VMM, as the API reports them.
pub async fn stats(api: &Api, format: Format, instance: &str) -> Result<(), CliError> {
    let s = api
        .get(&format!("{}/stats", instance_path(instance)))
        .await?;
    if format == Format::Json {
        return print_json(&s);
    }
    let n = |k: &str| s.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let mib = |b: f64| format!("{:.1} MiB", b / 1048576.0);
    println!(
        "{}",
        table(
            &[
                "CPU SECONDS",
                "MEMORY (RSS)",
                "ALLOCATED",
                "NET RX",
                "NET TX",
                "VCPUS"
            ],
            &[vec![
                format!("{:.2}", n("cpu_seconds")),
                mib(n("memory_rss_bytes")),
                mib(n("allocated_memory_bytes")),
                mib(n("network_rx_bytes")),
                mib(n("network_tx_bytes")),
                format!("{}", n("allocated_vcpus")),
            ]]
        )
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_every_column_but_the_last() {
        let t = table(
            &["ID", "NAME", "CREATED"],
            &[vec!["abc".into(), "web".into(), "1 minute ago".into()]],
        );
        assert_eq!(t, "ID    NAME   CREATED\nabc   web    1 minute ago");
    }

    #[test]
    fn ages_read_like_upstreams() {
        let now = time::OffsetDateTime::parse(
            "2026-12-07T12:00:00Z",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert_eq!(time_ago("2026-12-07T11:59:48Z", now), "12 seconds ago");
        assert_eq!(time_ago("2026-12-07T11:59:00Z", now), "1 minute ago");
        assert_eq!(time_ago("2026-12-07T09:00:00Z", now), "3 hours ago");
        assert_eq!(time_ago("2026-12-05T12:00:00Z", now), "2 days ago");
        assert_eq!(time_ago("junk", now), "N/A");
    }

    #[test]
    fn log_events_are_json_strings() {
        assert_eq!(
            sse_data(b"data: \"hello \\\"x\\\"\"\n").as_deref(),
            Some("hello \"x\"")
        );
        assert_eq!(sse_data(b"\n"), None);
        assert_eq!(sse_data(b"event: x\n"), None);
    }

    #[test]
    fn volume_specs_read_like_upstreams() {
        assert_eq!(
            volume_spec("data:/mnt/data").unwrap(),
            json!({"volume_id": "data", "mount_path": "/mnt/data"})
        );
        assert_eq!(
            volume_spec("seed:/d:ro:overlay=1GB").unwrap(),
            json!({"volume_id": "seed", "mount_path": "/d", "readonly": true, "overlay": true, "overlay_size": "1GB"})
        );
        for bad in ["data", ":/d", "data:", "data:/d:rw"] {
            assert!(matches!(volume_spec(bad), Err(CliError::Usage(_))), "{bad}");
        }
    }

    #[test]
    fn generated_names_follow_the_image() {
        let n = generated_name("docker.io/library/nginx:1.27");
        assert!(
            n.starts_with("nginx-") && n.len() == "nginx-".len() + 4,
            "{n}"
        );
        assert!(generated_name("alpine@sha256:abc").starts_with("alpine-"));
    }

    #[test]
    fn start_takes_overrides_only_when_given() {
        assert_eq!(start_body(&[], &[]), json!({}));
        assert_eq!(
            start_body(&["/bin/sh".into()], &["-c".into(), "x".into()]),
            json!({"entrypoint": ["/bin/sh"], "cmd": ["-c", "x"]})
        );
    }
}
