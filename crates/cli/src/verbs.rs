//! The verbs of upstream's `hypeman` CLI that `hypedeck` speaks, with its names, flags and
//! output shapes: a table or a line for people (`--format auto`, the default), the API's
//! answer for scripts (`--format json|jsonl|raw|yaml|pretty`, one document per answer, never
//! reshaped; [`crate::output`]). Progress goes to stderr, results to stdout.

use std::io::Write as _;

use futures_util::StreamExt as _;
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{Api, CliError, instance_path, segment};
pub use crate::output::{Doc, Format, Output};
use crate::progress::Progress;

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
    table_painted(header, rows, &|_, cell| cell.to_string())
}

/// [`table`] with each body cell passed through `paint(column, cell)` after its width is
/// measured (colour codes take no room on screen).
pub fn table_painted(
    header: &[&str],
    rows: &[Vec<String>],
    paint: &dyn Fn(usize, &str) -> String,
) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: &[String], painted: bool| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let shown = if painted {
                paint(i, cell)
            } else {
                cell.clone()
            };
            out.push_str(&shown);
            if i != last {
                let pad = widths[i] - cell.chars().count() + 3;
                out.push_str(&" ".repeat(pad));
            }
        }
        out.trim_end().to_string()
    };
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let mut out = line(&header, false);
    for row in rows {
        out.push('\n');
        out.push_str(&line(row, true));
    }
    out
}

/// `ps`: running instances (all with `-a`), or only their ids (`-q`).
pub async fn ps(
    api: &Api,
    out: &Output,
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
    let list = api.doc(response).await?;
    let shown: Vec<&Value> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| all || server_filtered || text(i, "state") == "Running")
        .collect();
    if out.machine() {
        if list.as_array().map(Vec::len) == Some(shown.len()) {
            return out.show("instance list", &list);
        }
        let kept = Value::Array(shown.into_iter().cloned().collect());
        return out.show("instance list", &Doc::from_value(kept));
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
    let header = [
        "INSTANCE ID",
        "NAME",
        "IMAGE",
        "STATE",
        "GPU",
        "HV",
        "CREATED",
    ];
    let color = out.color;
    let paint = move |column: usize, cell: &str| {
        if column == 3 {
            crate::output::state(cell, color)
        } else {
            cell.to_string()
        }
    };
    println!("{}", table_painted(&header, &rows, &paint));
    Ok(())
}

/// `inspect`: the instance's JSON (in `--format`; `auto` is `json`).
pub async fn inspect(api: &Api, out: &Output, instance: &str) -> Result<(), CliError> {
    out.show(
        "instance inspect",
        &api.get_doc(&instance_path(instance)).await?,
    )
}

/// `stop`, `start`, `standby`, `restore`: the verb, then a line (or the instance's JSON).
pub async fn lifecycle(
    api: &Api,
    out: &Output,
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
    let answer = api.call_doc(Method::POST, &path, body.as_ref()).await?;
    if out.machine() {
        return out.show(&format!("instance {verb}"), &answer);
    }
    let state = crate::output::state(&text(&answer, "state"), crate::output::colors_for(true));
    if verb == "standby" {
        eprintln!("{} is in standby (state: {state})", text(&answer, "name"));
    } else {
        eprintln!("{done} {} (state: {state})", text(&answer, "name"));
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
    out: &Output,
    instance: &str,
    state: &str,
    timeout: Option<&str>,
) -> Result<(), CliError> {
    let mut query = vec![("state", state.to_string())];
    if let Some(t) = timeout {
        query.push(("timeout", t.to_string()));
    }
    let path = format!("{}/wait", instance_path(instance));
    let progress = Progress::spinner(&format!("Waiting for {instance} to reach {state}..."));
    let response = api.get_query(&path, &query).await;
    progress.finish();
    let answer = api.doc(response?).await?;
    if out.machine() {
        return out.show("instance wait", &answer);
    }
    let reached = text(&answer, "state");
    let painted = crate::output::state(&reached, out.color);
    if answer.get("timed_out").and_then(Value::as_bool) == Some(true) {
        eprintln!("Timed out waiting (last state: {reached})");
        return Err(CliError::Other(format!(
            "timed out waiting for instance to reach state {state}"
        )));
    }
    match answer.get("state_error").and_then(Value::as_str) {
        Some(err) if !err.is_empty() => {
            println!("{:<14} {painted}", "STATE");
            println!("{:<14} {err}", "STATE ERROR");
        }
        _ => println!("{painted}"),
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

/// `health`, `resources`, `volume get` and the like: a GET whose JSON is the answer (in
/// `--format`; `auto` is `json`), `title` heading `pretty`.
pub async fn show(api: &Api, out: &Output, title: &str, path: &str) -> Result<(), CliError> {
    out.show(title, &api.get_doc(path).await?)
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

/// What a pull's spinner says for the image's state: `Pulling <image> (queue position 2)`.
pub fn pull_status(image: &str, answer: &Value) -> String {
    let status = text(answer, "status");
    let mut line = format!("{} {image}", capitalized(&status));
    if let Some(n) = answer.get("queue_position").and_then(Value::as_u64) {
        line.push_str(&format!(" (queue position {n})"));
    }
    line
}

/// `pull`: asks the server for the image and waits until it is ready (or failed). On a
/// terminal a spinner shows the status and the time so far; elsewhere a line per status
/// (with `--format auto`).
pub async fn pull(api: &Api, out: &Output, image: &str) -> Result<Doc, CliError> {
    let path = crate::client::path("images", image);
    let terminal = crate::progress::stderr_is_terminal();
    let spinner = Progress::spinner(&format!("Looking up {image}"));
    let mut current = match api.get_doc(&path).await {
        Ok(found) => found,
        Err(CliError::Api { status: 404, .. }) => {
            if !terminal {
                eprintln!("Pulling {image}...");
            }
            spinner.set(&format!("Pulling {image}"));
            api.call_doc(Method::POST, "/images", Some(&json!({ "name": image })))
                .await?
        }
        Err(e) => return Err(e),
    };
    let mut last = String::new();
    loop {
        let status = text(&current, "status");
        if status != last {
            if !terminal && out.format == Format::Auto && status != "ready" {
                eprintln!("{}...", capitalized(&status));
            }
            last = status.clone();
        }
        spinner.set(&pull_status(image, &current));
        match status.as_str() {
            "ready" => {
                spinner.finish();
                return Ok(current);
            }
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
        current = api.get_doc(&path).await?;
    }
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// `run`: pulls the image when the server lacks it, creates the instance and prints its id.
pub async fn run(api: &Api, out: &Output, image: &str, mut body: Value) -> Result<(), CliError> {
    pull(api, out, image).await?;
    body["image"] = json!(image);
    if body.get("name").is_none_or(Value::is_null) {
        body["name"] = json!(generated_name(image));
    }
    eprintln!("Creating instance {}...", text(&body, "name"));
    let created = api
        .call_doc(Method::POST, "/instances", Some(&body))
        .await?;
    if out.machine() {
        return out.show("instance run", &created);
    }
    println!("{}", text(&created, "id"));
    Ok(())
}

/// `update egress-credentials`: PATCHes the bound credentials' values (a rotation the guest
/// never sees); prints the instance's name and state.
pub async fn update_credentials(
    api: &Api,
    out: &Output,
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
        .call_doc(
            Method::PATCH,
            &instance_path(instance),
            Some(&json!({ "env": env })),
        )
        .await?;
    if out.machine() {
        return out.show("instance update egress-credentials", &answer);
    }
    eprintln!("Updated {} on {}", keys.join(", "), text(&answer, "name"));
    Ok(())
}

/// `update auto-standby`'s `AutoStandbyPolicy` from its flags (upstream's): `enabled` is true
/// unless `--enabled=false`; `None` when no flag was given. Ports must be 1-65535; empty
/// values are skipped.
pub fn auto_standby_policy(
    enabled: Option<bool>,
    idle_timeout: Option<&str>,
    ports: &[String],
    cidrs: &[String],
) -> Result<Option<Value>, CliError> {
    let mut parsed = Vec::new();
    for raw in ports {
        let value = raw.trim();
        if value.is_empty() {
            continue;
        }
        let port: i64 = value.parse().map_err(|e| {
            CliError::Usage(format!(
                "invalid --ignore-destination-port value {raw:?}: {e}"
            ))
        })?;
        if !(1..=65535).contains(&port) {
            return Err(CliError::Usage(format!(
                "--ignore-destination-port must be between 1 and 65535: {raw:?}"
            )));
        }
        parsed.push(port);
    }
    let cidrs: Vec<&str> = cidrs
        .iter()
        .map(|c| c.trim())
        .filter(|c| !c.is_empty())
        .collect();
    let idle_timeout = idle_timeout.filter(|t| !t.is_empty());
    if enabled.is_none() && idle_timeout.is_none() && parsed.is_empty() && cidrs.is_empty() {
        return Ok(None);
    }
    let mut policy = json!({ "enabled": enabled.unwrap_or(true) });
    if let Some(t) = idle_timeout {
        policy["idle_timeout"] = json!(t);
    }
    if !parsed.is_empty() {
        policy["ignore_destination_ports"] = json!(parsed);
    }
    if !cidrs.is_empty() {
        policy["ignore_source_cidrs"] = json!(cidrs);
    }
    Ok(Some(policy))
}

/// `update auto-standby`: PATCHes the instance's `auto_standby` policy; prints its id (the
/// instance with `--format`).
pub async fn update_auto_standby(
    api: &Api,
    out: &Output,
    instance: &str,
    policy: Option<Value>,
) -> Result<(), CliError> {
    let Some(policy) = policy else {
        return Err(CliError::Usage(
            "at least one auto-standby flag is required\nUsage: hypedeck update auto-standby <instance> [--enabled[=BOOL]] [--idle-timeout D] [--ignore-destination-port P] [--ignore-source-cidr CIDR]".into(),
        ));
    };
    if !out.machine() {
        eprintln!("Updating auto-standby for {instance}...");
    }
    let answer = api
        .call_doc(
            Method::PATCH,
            &instance_path(instance),
            Some(&json!({ "auto_standby": policy })),
        )
        .await?;
    if out.machine() {
        return out.show("update auto-standby", &answer);
    }
    println!("{}", text(&answer, "id"));
    Ok(())
}

/// `snapshot schedule set`'s `SetSnapshotScheduleRequest` (upstream's flags): `--max-age` or
/// `--max-count` is required.
pub fn schedule_request(
    interval: &str,
    max_age: Option<&str>,
    max_count: Option<u32>,
    name_prefix: Option<&str>,
    metadata: &[String],
) -> Result<Value, CliError> {
    if max_age.is_none() && max_count.is_none() {
        return Err(CliError::Usage(
            "at least one of --max-age or --max-count is required".into(),
        ));
    }
    let mut retention = json!({});
    if let Some(age) = max_age.filter(|a| !a.is_empty()) {
        retention["max_age"] = json!(age);
    }
    if let Some(count) = max_count {
        retention["max_count"] = json!(count);
    }
    let mut body = json!({ "interval": interval, "retention": retention });
    if let Some(prefix) = name_prefix.filter(|p| !p.is_empty()) {
        body["name_prefix"] = json!(prefix);
    }
    let metadata = key_values(metadata, "metadata entry");
    if !metadata.is_empty() {
        body["metadata"] = Value::Object(metadata);
    }
    Ok(body)
}

/// Upstream's summary of a `SnapshotSchedule`: `LABEL          value` lines.
pub fn schedule_summary(schedule: &Value) -> String {
    let field = |pointer: &str| {
        schedule
            .pointer(pointer)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("-")
            .to_string()
    };
    let max_count = schedule
        .pointer("/retention/max_count")
        .and_then(Value::as_i64)
        .filter(|n| *n > 0)
        .map_or_else(|| "-".to_string(), |n| n.to_string());
    let created = schedule
        .get("created_at")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut out = String::new();
    for (label, value) in [
        ("INSTANCE", text(schedule, "instance_id")),
        ("INTERVAL", text(schedule, "interval")),
        ("MAX AGE", field("/retention/max_age")),
        ("MAX COUNT", max_count),
        ("PREFIX", field("/name_prefix")),
        ("NEXT RUN", field("/next_run_at")),
        ("CREATED", created),
    ] {
        out.push_str(&format!("{label:<14} {value}\n"));
    }
    if let Some(metadata) = schedule.get("metadata").and_then(Value::as_object) {
        if metadata.is_empty() {
            out.push_str(&format!("{:<14} -\n", "METADATA"));
        }
        for (i, (k, v)) in metadata.iter().enumerate() {
            let label = if i == 0 { "METADATA" } else { "" };
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            out.push_str(&format!("{label:<14} {k}={v}\n"));
        }
    }
    out
}

/// `snapshot schedule set|get`: the schedule (PUT with `body`, else GET), as upstream's
/// summary or in `--format`.
pub async fn snapshot_schedule(
    api: &Api,
    out: &Output,
    instance: &str,
    body: Option<Value>,
) -> Result<(), CliError> {
    let path = format!("{}/snapshot-schedule", instance_path(instance));
    let (verb, answer) = match &body {
        Some(body) => ("set", api.call_doc(Method::PUT, &path, Some(body)).await?),
        None => ("get", api.get_doc(&path).await?),
    };
    if out.machine() {
        return out.show(&format!("snapshot schedule {verb}"), &answer);
    }
    print!("{}", schedule_summary(&answer));
    Ok(())
}

/// `snapshot schedule delete`.
pub async fn snapshot_schedule_delete(api: &Api, instance: &str) -> Result<(), CliError> {
    let path = format!("{}/snapshot-schedule", instance_path(instance));
    api.call(Method::DELETE, &path, None).await?;
    eprintln!("Deleted snapshot schedule for {instance}");
    Ok(())
}

/// `volume attach` / `volume detach`.
pub async fn volume_attachment(
    api: &Api,
    out: &Output,
    volume: &str,
    instance: &str,
    mount: Option<(&str, bool)>,
) -> Result<(), CliError> {
    let path = format!("{}/volumes/{}", instance_path(instance), segment(volume));
    let answer = match mount {
        Some((mount_path, readonly)) => {
            let body = json!({ "mount_path": mount_path, "readonly": readonly });
            api.call_doc(Method::POST, &path, Some(&body)).await?
        }
        None => api.call_doc(Method::DELETE, &path, None).await?,
    };
    if out.machine() {
        let verb = if mount.is_some() { "attach" } else { "detach" };
        return out.show(&format!("volume {verb}"), &answer);
    }
    match mount {
        Some((p, _)) => eprintln!("Attached {volume} to {} at {p}", text(&answer, "name")),
        None => eprintln!("Detached {volume} from {}", text(&answer, "name")),
    }
    Ok(())
}

/// `credentials`: each credential's env var, the fingerprint of the value in force, when it
/// was rotated and last used (never a value: the API has none to give).
pub async fn credentials(api: &Api, out: &Output, instance: &str) -> Result<(), CliError> {
    let list = api
        .get_doc(&format!("{}/credentials", instance_path(instance)))
        .await?;
    if out.machine() {
        return out.show("credentials", &list);
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
    out: &Output,
    path: &str,
    quiet: bool,
    id_key: &str,
    columns: &[Column<'_>],
) -> Result<(), CliError> {
    let items = api.get_doc(path).await?;
    if out.machine() {
        let noun = path.trim_start_matches('/').trim_end_matches('s');
        return out.show(&format!("{noun} list"), &items);
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
    out: &Output,
    path: &str,
    body: &Value,
    id_key: &str,
) -> Result<(), CliError> {
    let answer = api.call_doc(Method::POST, path, Some(body)).await?;
    if out.machine() {
        return out.show("created", &answer);
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
    out: &Output,
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
        out,
        &format!("{}/fork", instance_path(source)),
        &body,
        "id",
    )
    .await
}

/// `stats <instance>`: CPU, memory and network of its VMM, as the API reports them.
pub async fn stats(api: &Api, out: &Output, instance: &str) -> Result<(), CliError> {
    let s = api
        .get_doc(&format!("{}/stats", instance_path(instance)))
        .await?;
    if out.machine() {
        return out.show("instance stats", &s);
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
    fn painted_tables_pad_by_the_visible_text() {
        let t = table_painted(
            &["A", "STATE", "Z"],
            &[vec!["x".into(), "Running".into(), "1".into()]],
            &|c, cell| {
                if c == 1 {
                    crate::output::state(cell, true)
                } else {
                    cell.to_string()
                }
            },
        );
        assert_eq!(t, "A   STATE     Z\nx   \x1b[32mRunning\x1b[0m   1");
    }

    #[test]
    fn auto_standby_flags_make_upstreams_policy() {
        assert_eq!(auto_standby_policy(None, None, &[], &[]).unwrap(), None);
        assert_eq!(
            auto_standby_policy(None, Some("10m"), &[], &[]).unwrap(),
            Some(json!({"enabled": true, "idle_timeout": "10m"}))
        );
        assert_eq!(
            auto_standby_policy(
                Some(false),
                None,
                &["22".into(), " ".into()],
                &[" 10.0.0.0/8 ".into()]
            )
            .unwrap(),
            Some(
                json!({"enabled": false, "ignore_destination_ports": [22], "ignore_source_cidrs": ["10.0.0.0/8"]})
            )
        );
        for bad in ["0", "65536", "ssh"] {
            assert!(matches!(
                auto_standby_policy(None, None, &[bad.into()], &[]),
                Err(CliError::Usage(_))
            ));
        }
    }

    #[test]
    fn schedules_need_a_retention_and_print_like_upstream() {
        assert!(matches!(
            schedule_request("1h", None, None, None, &[]),
            Err(CliError::Usage(_))
        ));
        assert_eq!(
            schedule_request("1h", Some("24h"), Some(3), Some("nightly"), &["k=v".into()]).unwrap(),
            json!({"interval": "1h", "name_prefix": "nightly", "metadata": {"k": "v"},
                   "retention": {"max_age": "24h", "max_count": 3}})
        );
        let summary = schedule_summary(&json!({
            "instance_id": "abc", "interval": "1h", "retention": {"max_count": 3},
            "next_run_at": "2026-12-07T13:00:00Z", "created_at": "2026-12-07T12:00:00Z",
            "metadata": {"a": "1", "b": "2"}
        }));
        assert_eq!(
            summary,
            "INSTANCE       abc\nINTERVAL       1h\nMAX AGE        -\nMAX COUNT      3\nPREFIX         -\nNEXT RUN       2026-12-07T13:00:00Z\nCREATED        2026-12-07T12:00:00Z\nMETADATA       a=1\n               b=2\n"
        );
    }

    #[test]
    fn pull_status_names_the_queue_position() {
        assert_eq!(
            pull_status("alpine", &json!({"status": "pending", "queue_position": 2})),
            "Pending alpine (queue position 2)"
        );
        assert_eq!(
            pull_status("alpine", &json!({"status": "pulling"})),
            "Pulling alpine"
        );
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
