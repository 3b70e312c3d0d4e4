//! How the API verbs print an answer: `--format` (upstream's values), `--transform` (a GJSON
//! path, [`crate::gjson`]), and colour on a terminal.
//!
//! Where upstream prints a document (`inspect`, `get`, the JSON of lists and answers), the
//! formats are:
//! - `json` (and `auto` for verbs whose only output is the document): indented, as the API's
//!   JSON (keys sorted, two-space indent);
//! - `jsonl`: the document on one line (a list is one document, so one line);
//! - `raw`: the bytes of the answer as the server sent them, then a newline (`--transform`
//!   is ignored, as upstream does; a list that `ps` filters is re-encoded, compactly);
//! - `yaml`: the same data as a YAML document (block style; strings quoted whenever a plain
//!   scalar could read as something else);
//! - `pretty`: a title, then `key: value` lines indented by nesting, arrays numbered `1.`,
//!   `yes`/`no` for booleans, `(empty)`/`(none)` for empty strings, objects and arrays;
//! - `explore`: upstream's interactive viewer; printed as `pretty` here.
//!
//! Colour (`json`, `jsonl`, `pretty`, and the state in tables and state lines) follows
//! upstream's `shouldUseColors`: `FORCE_COLOR=1` forces it, `FORCE_COLOR=0` or a non-empty
//! `NO_COLOR` turns it off, otherwise only when that stream is a terminal, so never in a pipe.
//! JSON: keys blue, strings green, numbers yellow, booleans magenta, null dim. States:
//! Running green; Created, Initializing and Paused yellow; Standby cyan; Stopped and Shutdown
//! dim; Unknown and anything else red.

use std::io::Write as _;

use serde_json::Value;

use crate::client::CliError;

/// `--format` and `--format-error` (upstream's values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tables and lines for people (JSON for verbs that only print a document).
    Auto,
    /// Upstream's interactive viewer; printed as `pretty` here.
    Explore,
    /// The API's JSON, indented.
    Json,
    /// The API's JSON on one line.
    Jsonl,
    /// `key: value` lines for people.
    Pretty,
    /// The answer's bytes as received (no --transform).
    Raw,
    /// The answer as YAML.
    Yaml,
}

/// Whether to colour a stream: `FORCE_COLOR` (`1` on, `0` off), then a non-empty `NO_COLOR`
/// (off), then whether it is a terminal.
pub fn colors(force_color: Option<&str>, no_color: Option<&str>, terminal: bool) -> bool {
    match force_color {
        Some("1") => return true,
        Some("0") => return false,
        _ => {}
    }
    if no_color.is_some_and(|v| !v.is_empty()) {
        return false;
    }
    terminal
}

/// [`colors`] for stdout (`stderr == false`) or stderr, from the environment.
pub fn colors_for(stderr: bool) -> bool {
    use std::io::IsTerminal as _;
    let terminal = if stderr {
        std::io::stderr().is_terminal()
    } else {
        std::io::stdout().is_terminal()
    };
    colors(
        std::env::var("FORCE_COLOR").ok().as_deref(),
        std::env::var("NO_COLOR").ok().as_deref(),
        terminal,
    )
}

/// `text` in the SGR colour `code` when `on`.
pub fn paint(code: &str, text: &str, on: bool) -> String {
    if on {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// The SGR colour of an instance state (see the module docs).
pub fn state_code(state: &str) -> &'static str {
    match state {
        "Running" => "32",
        "Created" | "Initializing" | "Paused" => "33",
        "Standby" => "36",
        "Stopped" | "Shutdown" => "2",
        _ => "31",
    }
}

/// An instance state, coloured when `on`.
pub fn state(state: &str, on: bool) -> String {
    paint(state_code(state), state, on)
}

/// An answer: its bytes as received and its JSON.
#[derive(Debug, Clone)]
pub struct Doc {
    /// The body as the server sent it.
    pub raw: Vec<u8>,
    /// The body parsed.
    pub value: Value,
}

impl Doc {
    /// An answer from its bytes (an empty body is `null`).
    pub fn parse(raw: Vec<u8>) -> Result<Doc, CliError> {
        let value = if raw.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&raw)
                .map_err(|e| CliError::Other(format!("the server's answer is not JSON: {e}")))?
        };
        Ok(Doc { raw, value })
    }

    /// A document made here (its raw form is its compact JSON).
    pub fn from_value(value: Value) -> Doc {
        Doc {
            raw: serde_json::to_vec(&value).unwrap_or_default(),
            value,
        }
    }
}

impl std::ops::Deref for Doc {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.value
    }
}

/// How one run prints documents.
#[derive(Debug, Clone)]
pub struct Output {
    /// `--format`.
    pub format: Format,
    /// `--transform`.
    pub transform: Option<String>,
    /// Colour stdout.
    pub color: bool,
}

impl Output {
    /// For stdout with `format` and `transform`; colour from the environment.
    pub fn stdout(format: Format, transform: Option<String>) -> Output {
        Output {
            format,
            transform: transform.filter(|t| !t.is_empty()),
            color: colors_for(false),
        }
    }

    /// Whether verbs print the document instead of their table or line (`--format` other than
    /// `auto`).
    pub fn machine(&self) -> bool {
        self.format != Format::Auto
    }

    /// Prints `doc` on stdout (`title` heads `pretty`).
    pub fn show(&self, title: &str, doc: &Doc) -> Result<(), CliError> {
        let text = self.render(title, doc);
        let mut out = std::io::stdout().lock();
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            Err(e) => Err(CliError::Other(format!("write the output: {e}"))),
        }
    }

    /// The text [`Output::show`] prints.
    pub fn render(&self, title: &str, doc: &Doc) -> String {
        if self.format == Format::Raw {
            let mut text = String::from_utf8_lossy(&doc.raw).into_owned();
            if !text.ends_with('\n') {
                text.push('\n');
            }
            return text;
        }
        let picked = self
            .transform
            .as_deref()
            .and_then(|path| crate::gjson::get(&doc.value, path));
        let value = picked.as_ref().unwrap_or(&doc.value);
        match self.format {
            Format::Auto | Format::Json => json_pretty(value, self.color) + "\n",
            Format::Jsonl => json_line(value, self.color) + "\n",
            Format::Yaml => yaml(value),
            Format::Pretty | Format::Explore => pretty(title, value, self.color),
            Format::Raw => unreachable!("handled above"),
        }
    }
}

const KEY: &str = "34";
const STRING: &str = "32";
const NUMBER: &str = "33";
const BOOL: &str = "35";
const NULL: &str = "2";

fn scalar_json(value: &Value, color: bool) -> String {
    match value {
        Value::Null => paint(NULL, "null", color),
        Value::Bool(b) => paint(BOOL, &b.to_string(), color),
        Value::Number(n) => paint(NUMBER, &n.to_string(), color),
        Value::String(s) => paint(STRING, &Value::from(s.as_str()).to_string(), color),
        _ => unreachable!("containers are not scalars"),
    }
}

fn key_json(key: &str, color: bool) -> String {
    paint(KEY, &Value::from(key).to_string(), color)
}

/// Indented JSON (serde_json's pretty form), coloured when `color`.
pub fn json_pretty(value: &Value, color: bool) -> String {
    fn write(value: &Value, indent: usize, color: bool, out: &mut String) {
        let pad = |n: usize| "  ".repeat(n);
        match value {
            Value::Array(items) if items.is_empty() => out.push_str("[]"),
            Value::Object(map) if map.is_empty() => out.push_str("{}"),
            Value::Array(items) => {
                out.push_str("[\n");
                for (i, item) in items.iter().enumerate() {
                    out.push_str(&pad(indent + 1));
                    write(item, indent + 1, color, out);
                    out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
                }
                out.push_str(&pad(indent));
                out.push(']');
            }
            Value::Object(map) => {
                out.push_str("{\n");
                for (i, (k, v)) in map.iter().enumerate() {
                    out.push_str(&pad(indent + 1));
                    out.push_str(&key_json(k, color));
                    out.push_str(": ");
                    write(v, indent + 1, color, out);
                    out.push_str(if i + 1 < map.len() { ",\n" } else { "\n" });
                }
                out.push_str(&pad(indent));
                out.push('}');
            }
            scalar => out.push_str(&scalar_json(scalar, color)),
        }
    }
    let mut out = String::new();
    write(value, 0, color, &mut out);
    out
}

/// Compact JSON on one line, coloured when `color`.
pub fn json_line(value: &Value, color: bool) -> String {
    match value {
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(|i| json_line(i, color))
                .collect::<Vec<_>>()
                .join(",")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}:{}", key_json(k, color), json_line(v, color)))
                .collect::<Vec<_>>()
                .join(",")
        ),
        scalar => scalar_json(scalar, color),
    }
}

/// A string as a YAML scalar: plain when it cannot read as anything but that string, else
/// double-quoted with escapes.
fn yaml_string(s: &str) -> String {
    let plain = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '/')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-' | ':'))
        && !s.ends_with(':')
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null"
        );
    if plain {
        return s.to_string();
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20
                || (0x7f..=0x9f).contains(&(c as u32))
                || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') =>
            {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn yaml_scalar(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => yaml_string(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

fn is_block(value: &Value) -> bool {
    match value {
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => false,
    }
}

/// A YAML document (block style, two-space indent), ending with a newline.
pub fn yaml(value: &Value) -> String {
    /// Lines of `value` (a non-empty container) at `indent`.
    fn block(value: &Value, indent: usize, out: &mut String) {
        let pad = " ".repeat(indent);
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    if is_block(v) {
                        out.push_str(&format!("{pad}{}:\n", yaml_string(k)));
                        block(v, indent + 2, out);
                    } else {
                        out.push_str(&format!("{pad}{}: {}\n", yaml_string(k), yaml_scalar(v)));
                    }
                }
            }
            Value::Array(items) => {
                for item in items {
                    if is_block(item) {
                        // The item's block at indent + 2, its first indent replaced by "- ".
                        let mut inner = String::new();
                        block(item, indent + 2, &mut inner);
                        out.push_str(&pad);
                        out.push_str("- ");
                        out.push_str(&inner[indent + 2..]);
                    } else {
                        out.push_str(&format!("{pad}- {}\n", yaml_scalar(item)));
                    }
                }
            }
            scalar => out.push_str(&format!("{pad}{}\n", yaml_scalar(scalar))),
        }
    }
    let mut out = String::new();
    if is_block(value) {
        block(value, 0, &mut out);
    } else {
        out.push_str(&yaml_scalar(value));
        out.push('\n');
    }
    out
}

/// `pretty`: `title`, then the value as indented `key: value` lines.
pub fn pretty(title: &str, value: &Value, color: bool) -> String {
    fn scalar(value: &Value, color: bool) -> String {
        match value {
            Value::String(s) if s.is_empty() => paint(NULL, "(empty)", color),
            Value::String(s) => paint(STRING, s, color),
            Value::Number(n) => paint(NUMBER, &n.to_string(), color),
            Value::Bool(true) => paint(BOOL, "yes", color),
            Value::Bool(false) => paint(BOOL, "no", color),
            Value::Null => paint(NULL, "null", color),
            Value::Array(_) => paint(NULL, "(none)", color),
            Value::Object(_) => paint(NULL, "(empty)", color),
        }
    }
    fn lines(value: &Value, indent: usize, color: bool, out: &mut String) {
        let pad = "  ".repeat(indent);
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let key = paint(KEY, &format!("{k}:"), color);
                    if is_block(v) {
                        out.push_str(&format!("{pad}{key}\n"));
                        lines(v, indent + 1, color, out);
                    } else {
                        out.push_str(&format!("{pad}{key} {}\n", scalar(v, color)));
                    }
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let number = format!("{}.", i + 1);
                    if is_block(item) {
                        out.push_str(&format!("{pad}{number}\n"));
                        lines(item, indent + 1, color, out);
                    } else {
                        out.push_str(&format!("{pad}{number} {}\n", scalar(item, color)));
                    }
                }
            }
            other => out.push_str(&format!("{pad}{}\n", scalar(other, color))),
        }
    }
    let mut out = paint("1", title, color);
    out.push('\n');
    lines(value, 1, color, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "id": "abc",
            "name": "web",
            "size": 1024,
            "ok": true,
            "gone": null,
            "empty": "",
            "created_at": "2026-12-07T12:00:00Z",
            "image": "docker.io/library/alpine:latest",
            "env": {"A": "yes", "B C": "x: y", "n": "12"},
            "tags": {},
            "volumes": [{"id": "v1", "ro": false}, {"id": "v2", "ro": true}],
            "cmd": ["sh", "-c", "echo \"hi\"\nbye"],
            "nested": [[1, 2], []]
        })
    }

    fn out(format: Format, transform: Option<&str>) -> Output {
        Output {
            format,
            transform: transform.map(str::to_string),
            color: false,
        }
    }

    #[test]
    fn uncoloured_json_is_serde_jsons_pretty_and_compact_form() {
        let v = sample();
        assert_eq!(
            json_pretty(&v, false),
            serde_json::to_string_pretty(&v).unwrap()
        );
        assert_eq!(json_line(&v, false), serde_json::to_string(&v).unwrap());
        assert_eq!(json_pretty(&json!([]), false), "[]");
    }

    #[test]
    fn coloured_json_wraps_tokens_and_strips_back_to_the_same_text() {
        let v = json!({"a": "s", "n": 1, "b": false, "z": null});
        let coloured = json_pretty(&v, true);
        assert!(
            coloured.contains("\x1b[34m\"a\"\x1b[0m: \x1b[32m\"s\"\x1b[0m"),
            "{coloured}"
        );
        assert!(coloured.contains("\x1b[33m1\x1b[0m"));
        let stripped = coloured.replace("\x1b[0m", "").replace("\x1b[34m", "");
        let stripped = ["32", "33", "35", "2"]
            .iter()
            .fold(stripped, |s, c| s.replace(&format!("\x1b[{c}m"), ""));
        assert_eq!(stripped, serde_json::to_string_pretty(&v).unwrap());
    }

    #[test]
    fn yaml_reads_as_expected() {
        let v = json!({
            "name": "web",
            "n": 3,
            "when": "2026-12-07T12:00:00Z",
            "flag": "true",
            "list": [{"a": 1, "b": [1, 2]}, "x", [], {}],
            "deep": [[1, 2]],
            "s": "line\n\"q\"",
            "empty": {}
        });
        assert_eq!(
            yaml(&v),
            "deep:\n  - - 1\n    - 2\nempty: {}\nflag: \"true\"\nlist:\n  - a: 1\n    b:\n      - 1\n      - 2\n  - x\n  - []\n  - {}\n\"n\": 3\nname: web\ns: \"line\\n\\\"q\\\"\"\nwhen: \"2026-12-07T12:00:00Z\"\n"
        );
        assert_eq!(yaml(&json!("plain")), "plain\n");
        assert_eq!(yaml(&json!([])), "[]\n");
    }

    #[test]
    fn yaml_quotes_what_would_read_otherwise() {
        for s in [
            "", "12", "yes", "No", "null", "a b", "x: y", "#c", "-a", "a:", "ünï", "@x",
        ] {
            assert!(yaml_string(s).starts_with('"'), "{s:?}");
        }
        for s in [
            "web",
            "docker.io/library/alpine:latest",
            "/bin/sh",
            "sha256:ab",
        ] {
            assert_eq!(yaml_string(s), s);
        }
        assert_eq!(yaml_string("\u{1}\u{85}"), "\"\\u0001\\u0085\"");
    }

    #[test]
    fn pretty_is_key_value_lines() {
        let v = json!({"name": "web", "ok": true, "e": "", "tags": {}, "v": [{"id": "a"}, 2]});
        assert_eq!(
            pretty("instance inspect", &v, false),
            "instance inspect\n  e: (empty)\n  name: web\n  ok: yes\n  tags: (empty)\n  v:\n    1.\n      id: a\n    2. 2\n"
        );
    }

    #[test]
    fn transform_picks_a_part_unless_it_matches_nothing_or_raw() {
        let doc = Doc::parse(br#"{"b":{"c":[1,2]},"a":1}"#.to_vec()).unwrap();
        assert_eq!(out(Format::Json, Some("b.c.#")).render("t", &doc), "2\n");
        assert_eq!(
            out(Format::Jsonl, Some("b")).render("t", &doc),
            "{\"c\":[1,2]}\n"
        );
        assert_eq!(
            out(Format::Jsonl, Some("nope")).render("t", &doc),
            "{\"a\":1,\"b\":{\"c\":[1,2]}}\n"
        );
        assert_eq!(
            out(Format::Raw, Some("b")).render("t", &doc),
            "{\"b\":{\"c\":[1,2]},\"a\":1}\n",
            "raw is the bytes as received"
        );
        assert_eq!(
            out(Format::Yaml, Some("b.c")).render("t", &doc),
            "- 1\n- 2\n"
        );
        assert_eq!(
            out(Format::Explore, None).render("t", &doc),
            out(Format::Pretty, None).render("t", &doc)
        );
    }

    #[test]
    fn colour_follows_force_color_no_color_and_the_terminal() {
        assert!(colors(Some("1"), Some("1"), false));
        assert!(!colors(Some("0"), None, true));
        assert!(!colors(None, Some("1"), true));
        assert!(colors(None, Some(""), true));
        assert!(colors(Some("yes"), None, true));
        assert!(!colors(None, None, false));
    }

    #[test]
    fn states_have_colours() {
        assert_eq!(state("Running", true), "\x1b[32mRunning\x1b[0m");
        assert_eq!(state("Standby", true), "\x1b[36mStandby\x1b[0m");
        assert_eq!(state("Stopped", true), "\x1b[2mStopped\x1b[0m");
        assert_eq!(state("Unknown", true), "\x1b[31mUnknown\x1b[0m");
        assert_eq!(state("Running", false), "Running");
    }
}
