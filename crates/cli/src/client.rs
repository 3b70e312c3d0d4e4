//! The CLI's side of the Hypeman API: which server it talks to, and requests whose failures
//! are one clear line with a documented exit code.
//!
//! The server, like upstream's `hypeman` CLI: `--base-url`, else `HYPEMAN_BASE_URL`, else
//! `base_url` in `~/.config/hypeman/cli.yaml`; the key `HYPEMAN_API_KEY`, else `api_key` in that
//! file. Without a configured server, the engine running for the data dir (its advertised
//! loopback URL) with the token from the OS keychain. Nothing configured and nothing running is
//! a message saying how to get either.
//!
//! Over `https://` (and exec's `wss://`) the server's certificate is checked against the OS's
//! roots, or only the PEM bundle in `SSL_CERT_FILE` when that is set (so a private CA can be
//! trusted): one rustls configuration, [`tls_config`], serves both.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::output::Doc;

/// Exit codes (documented in `hypedeck help` and the README).
pub mod exit {
    /// The API refused the request for another reason, or it failed.
    pub const FAILED: u8 = 1;
    /// Bad usage (clap's own code for usage errors too).
    pub const USAGE: u8 = 2;
    /// The instance, image, volume or snapshot does not exist (404).
    pub const NOT_FOUND: u8 = 3;
    /// The resource is not in a state that allows it, or a name is taken (409).
    pub const CONFLICT: u8 = 4;
    /// No server to talk to, or it could not be reached.
    pub const UNREACHABLE: u8 = 5;
}

/// A CLI failure, printed as one line.
#[derive(Debug)]
pub enum CliError {
    /// Bad usage, with what to type instead.
    Usage(String),
    /// The API answered with an error.
    Api {
        /// HTTP status.
        status: u16,
        /// Its `code`.
        code: String,
        /// Its `message`.
        message: String,
    },
    /// No server, or it did not answer.
    Unreachable(String),
    /// Anything else (a malformed answer, local I/O).
    Other(String),
    /// `exec`'s command ended with this code (passed through, nothing printed).
    Exit(i32),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => exit::USAGE,
            CliError::Api { status: 404, .. } => exit::NOT_FOUND,
            CliError::Api { status: 409, .. } => exit::CONFLICT,
            CliError::Api { .. } | CliError::Other(_) => exit::FAILED,
            CliError::Unreachable(_) => exit::UNREACHABLE,
            CliError::Exit(code) => u8::try_from(*code).unwrap_or(exit::FAILED),
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Unreachable(m) | CliError::Other(m) => f.write_str(m),
            CliError::Api { code, message, .. } => write!(f, "{code}: {message}"),
            CliError::Exit(code) => write!(f, "exit code {code}"),
        }
    }
}

/// Where requests go.
#[derive(Clone)]
pub struct Target {
    /// Base URL without a trailing slash.
    pub base_url: String,
    /// Bearer token.
    api_key: String,
    /// The engine of this machine's data dir (not a configured server).
    pub local: bool,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .field("local", &self.local)
            .finish()
    }
}

/// `base_url` and `api_key` of upstream's `~/.config/hypeman/cli.yaml` (flat `key: value`
/// lines; quotes around a value are dropped).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConfigFile {
    /// `base_url`.
    pub base_url: Option<String>,
    /// `api_key`.
    pub api_key: Option<String>,
}

impl ConfigFile {
    /// Parses the file's text.
    pub fn parse(text: &str) -> ConfigFile {
        let mut out = ConfigFile::default();
        for line in text.lines() {
            let line = line.split(" #").next().unwrap_or("").trim();
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value
                .trim()
                .trim_matches(|c| c == '"' || c == '\'')
                .to_string();
            if value.is_empty() {
                continue;
            }
            match key.trim() {
                "base_url" => out.base_url = Some(value),
                "api_key" => out.api_key = Some(value),
                _ => {}
            }
        }
        out
    }

    /// The file upstream's CLI reads, if the home dir is known.
    pub fn path() -> Option<PathBuf> {
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/hypeman/cli.yaml"))
    }

    fn load() -> ConfigFile {
        Self::path()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|t| ConfigFile::parse(&t))
            .unwrap_or_default()
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Resolves the server (see the module docs). `base_url_flag` is `--base-url`.
pub fn resolve(base_url_flag: Option<&str>, data_dir: &Path) -> Result<Target, CliError> {
    let file = ConfigFile::load();
    let configured = base_url_flag
        .map(str::to_string)
        .or_else(|| env("HYPEMAN_BASE_URL"))
        .or(file.base_url);
    let key = env("HYPEMAN_API_KEY").or(file.api_key);
    if let Some(base) = configured {
        return Ok(Target {
            base_url: base.trim_end_matches('/').to_string(),
            api_key: key.unwrap_or_default(),
            local: false,
        });
    }
    let Some(endpoint) = crate::daemon::Endpoint::find(data_dir) else {
        return Err(CliError::Unreachable(format!(
            "no Hypeman server: set HYPEMAN_BASE_URL and HYPEMAN_API_KEY, or start the engine for {} (`hypedeck serve` or the desktop app)",
            data_dir.display()
        )));
    };
    let api_key = match key {
        Some(k) => k,
        None => {
            let keychain = crate::daemon::open_keychain()
                .map_err(|e| CliError::Other(format!("open the keychain: {e:#}")))?;
            crate::daemon::load_or_create_token(keychain.as_ref(), data_dir)
                .map_err(|e| CliError::Other(format!("read the API token: {e:#}")))?
                .expose()
                .clone()
        }
    };
    Ok(Target {
        base_url: endpoint.url.trim_end_matches('/').to_string(),
        api_key,
        local: true,
    })
}

/// Percent-encodes one path segment (ids, names, image references).
pub fn segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `/<collection>/<id>` with the id percent-encoded.
pub fn path(collection: &str, id: &str) -> String {
    format!("/{collection}/{}", segment(id))
}

/// `/instances/<instance>` (an id, name or id prefix), percent-encoded.
pub fn instance_path(instance: &str) -> String {
    path("instances", instance)
}

/// The TLS client configuration for `https://` and `wss://`: the OS's root certificates, or
/// those in `SSL_CERT_FILE` when set (rustls-native-certs reads it), with the aws-lc-rs
/// provider.
pub fn tls_config() -> Result<std::sync::Arc<rustls::ClientConfig>, CliError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (_added, _ignored) = roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_string(), ToString::to_string);
        return Err(CliError::Other(format!(
            "no trusted root certificates for https ({why}); set SSL_CERT_FILE to a PEM bundle"
        )));
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CliError::Other(format!("TLS configuration: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

/// An error and its causes on one line (`a: b: c`), each said once: a certificate that is not
/// trusted reads as such, not as "error sending request".
pub fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// A client for one [`Target`].
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    target: Target,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Api {
    /// A client for `target` (with [`tls_config`] when its URL is `https://`).
    pub fn new(target: Target) -> Result<Api, CliError> {
        let mut builder = reqwest::Client::builder();
        let tls = if target.base_url.starts_with("https://") {
            let config = tls_config()?;
            builder = builder.tls_backend_preconfigured(rustls::ClientConfig::clone(&config));
            Some(config)
        } else {
            None
        };
        let http = builder
            .build()
            .map_err(|e| CliError::Other(format!("HTTP client: {e}")))?;
        Ok(Api { http, target, tls })
    }

    /// The TLS configuration the HTTP client uses (`https://` targets), for exec's `wss://`.
    pub fn tls(&self) -> Option<std::sync::Arc<rustls::ClientConfig>> {
        self.tls.clone()
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The bearer token, if any (for the exec WebSocket's handshake).
    pub fn api_key(&self) -> Option<&str> {
        Some(self.target.api_key.as_str()).filter(|k| !k.is_empty())
    }

    /// A request builder for `method` `path` (which starts with `/`), authorized.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut builder = self
            .http
            .request(method, format!("{}{path}", self.target.base_url));
        if !self.target.api_key.is_empty() {
            builder = builder.bearer_auth(&self.target.api_key);
        }
        builder
    }

    /// Sends `builder` and checks the status: the response on success, else the API's
    /// `{code, message}` as a [`CliError`].
    pub async fn send(
        &self,
        builder: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, CliError> {
        let response = builder.send().await.map_err(|e| self.transport(e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
        Err(CliError::Api {
            status,
            code: text("code").unwrap_or_else(|| status.to_string()),
            message: text("message").unwrap_or_else(|| "no message".into()),
        })
    }

    /// `method` `path` with an optional JSON body; the answer's JSON (`Null` for none).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CliError> {
        Ok(self.call_doc(method, path, body).await?.value)
    }

    /// [`Api::call`], keeping the answer's bytes too (for `--format raw`).
    pub async fn call_doc(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Doc, CliError> {
        let mut builder = self.request(method, path);
        if let Some(body) = body {
            builder = builder.json(body);
        }
        let response = self.send(builder).await?;
        self.doc(response).await
    }

    /// A checked response's body as a [`Doc`].
    pub async fn doc(&self, response: reqwest::Response) -> Result<Doc, CliError> {
        let bytes = response.bytes().await.map_err(|e| self.transport(e))?;
        Doc::parse(bytes.to_vec())
    }

    /// `GET path`, keeping the bytes.
    pub async fn get_doc(&self, path: &str) -> Result<Doc, CliError> {
        self.call_doc(reqwest::Method::GET, path, None).await
    }

    /// `GET path?query`, checked ([`Api::send`]): the response, for its body or stream.
    pub async fn get_query<Q: serde::Serialize + ?Sized>(
        &self,
        path: &str,
        query: &Q,
    ) -> Result<reqwest::Response, CliError> {
        self.send(self.request(reqwest::Method::GET, path).query(query))
            .await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.call(reqwest::Method::GET, path, None).await
    }

    fn transport(&self, e: reqwest::Error) -> CliError {
        let why = with_causes(&e);
        if e.is_connect() || e.is_timeout() {
            CliError::Unreachable(format!("cannot reach {}: {why}", self.target.base_url))
        } else {
            CliError::Other(format!("request to {} failed: {why}", self.target.base_url))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_file_is_read_like_upstreams() {
        let c = ConfigFile::parse(
            "# hypeman\nbase_url: \"https://hypeman.example.com\"\napi_key: 'k1' # mine\nother: x\n",
        );
        assert_eq!(c.base_url.as_deref(), Some("https://hypeman.example.com"));
        assert_eq!(c.api_key.as_deref(), Some("k1"));
        assert_eq!(ConfigFile::parse("base_url:\n"), ConfigFile::default());
    }

    #[test]
    fn errors_map_to_documented_exit_codes() {
        let api = |status| CliError::Api {
            status,
            code: "x".into(),
            message: "y".into(),
        };
        assert_eq!(api(404).exit_code(), exit::NOT_FOUND);
        assert_eq!(api(409).exit_code(), exit::CONFLICT);
        assert_eq!(api(400).exit_code(), exit::FAILED);
        assert_eq!(CliError::Usage("u".into()).exit_code(), exit::USAGE);
        assert_eq!(
            CliError::Unreachable("u".into()).exit_code(),
            exit::UNREACHABLE
        );
        assert_eq!(api(404).to_string(), "x: y");
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(
            segment("docker.io/library/alpine:latest"),
            "docker.io%2Flibrary%2Falpine%3Alatest"
        );
        assert_eq!(segment("web-1"), "web-1");
    }

    #[test]
    fn a_target_never_prints_its_key() {
        let t = Target {
            base_url: "http://x".into(),
            api_key: "hdk_secret".into(),
            local: false,
        };
        assert!(!format!("{t:?}").contains("hdk_secret"));
    }
}
