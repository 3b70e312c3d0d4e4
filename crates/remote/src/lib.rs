//! Connections to Hypeman servers other than this computer's engine (upstream's Go server or
//! another Hypedeck): the list of remotes, their API keys, and a health check.
//!
//! Invariants: the list file (`remotes.json`) holds names and URLs only; every API key lives in
//! the OS keychain (account `remote/<id>`), and a key never appears in an error, a log line
//! or `Debug`. A health check never follows proxies for loopback, always has a timeout, and
//! names what went wrong in words a user can act on: unreachable, TLS, a refused key, a
//! timeout.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hypedeck_model::error::sentence;
use hypedeck_secrets::{SecretError, SecretStore, Sensitive};
use serde::{Deserialize, Serialize};

/// One remote server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remote {
    /// Stable id (keychain account suffix).
    pub id: String,
    /// What the user calls it.
    pub name: String,
    /// Base URL of its Hypeman API.
    pub url: String,
}

/// Errors managing remotes. Messages never contain a key.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The name or URL is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// No remote has this id.
    #[error("no remote {0}")]
    NotFound(String),
    /// Reading or writing the list failed.
    #[error("remotes list: {0}")]
    Store(String),
    /// The keychain failed.
    #[error(transparent)]
    Secrets(#[from] SecretError),
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ListFile {
    remotes: Vec<Remote>,
}

/// The remotes of one user: the list on disk, the keys in the keychain.
#[derive(Debug, Clone)]
pub struct RemoteStore {
    file: PathBuf,
    secrets: Arc<dyn SecretStore>,
}

fn account(id: &str) -> String {
    format!("remote/{id}")
}

/// Checks a base URL: http or https, a host, nothing after the path. Returns it without a
/// trailing slash.
pub fn normalize_url(url: &str) -> Result<String, RemoteError> {
    let url = url.trim().trim_end_matches('/');
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| RemoteError::Invalid(format!("{url:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(RemoteError::Invalid(format!(
            "{url:?}: only http and https URLs are supported"
        )));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(RemoteError::Invalid(format!("{url:?} has no host")));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() || !parsed.username().is_empty() {
        return Err(RemoteError::Invalid(format!(
            "{url:?}: give the API's base URL only (no credentials, query or fragment)"
        )));
    }
    Ok(url.to_string())
}

impl RemoteStore {
    /// The remotes listed in `file`, with keys in `secrets`.
    pub fn new(file: impl Into<PathBuf>, secrets: Arc<dyn SecretStore>) -> RemoteStore {
        RemoteStore {
            file: file.into(),
            secrets,
        }
    }

    /// The list file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Every remote, in the order added.
    pub fn list(&self) -> Result<Vec<Remote>, RemoteError> {
        match std::fs::read(&self.file) {
            Ok(bytes) => serde_json::from_slice::<ListFile>(&bytes)
                .map(|f| f.remotes)
                .map_err(|e| {
                    RemoteError::Store(format!("{} is damaged: {e}", self.file.display()))
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(RemoteError::Store(e.to_string())),
        }
    }

    fn save(&self, remotes: Vec<Remote>) -> Result<(), RemoteError> {
        if let Some(dir) = self.file.parent() {
            hypedeck_store::create_private_dir(dir)
                .map_err(|e| RemoteError::Store(sentence(&e)))?;
        }
        let bytes = serde_json::to_vec_pretty(&ListFile { remotes })
            .map_err(|e| RemoteError::Store(e.to_string()))?;
        hypedeck_store::write_atomic(&self.file, &bytes)
            .map_err(|e| RemoteError::Store(sentence(&e)))
    }

    /// Adds a remote: the key goes to the keychain first, so a list entry always has one.
    pub fn add(
        &self,
        name: &str,
        url: &str,
        key: &Sensitive<String>,
    ) -> Result<Remote, RemoteError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(RemoteError::Invalid("give the remote a name".into()));
        }
        let url = normalize_url(url)?;
        if key.expose().trim().is_empty() {
            return Err(RemoteError::Invalid("the API key is empty".into()));
        }
        let mut remotes = self.list()?;
        if remotes.iter().any(|r| r.name == name) {
            return Err(RemoteError::Invalid(format!(
                "a remote named {name:?} exists already"
            )));
        }
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| RemoteError::Store(e.to_string()))?;
        let remote = Remote {
            id: hex::encode(random),
            name: name.to_string(),
            url,
        };
        self.secrets.set(
            &account(&remote.id),
            &Sensitive::new(key.expose().trim().to_string()),
        )?;
        remotes.push(remote.clone());
        if let Err(e) = self.save(remotes) {
            let _ = self.secrets.delete(&account(&remote.id));
            return Err(e);
        }
        Ok(remote)
    }

    /// Removes a remote and its key.
    pub fn remove(&self, id: &str) -> Result<(), RemoteError> {
        let mut remotes = self.list()?;
        let before = remotes.len();
        remotes.retain(|r| r.id != id);
        if remotes.len() == before {
            return Err(RemoteError::NotFound(id.to_string()));
        }
        self.save(remotes)?;
        self.secrets.delete(&account(id))?;
        Ok(())
    }

    /// A remote and its key.
    pub fn get(&self, id: &str) -> Result<(Remote, Sensitive<String>), RemoteError> {
        let remote = self
            .list()?
            .into_iter()
            .find(|r| r.id == id)
            .ok_or_else(|| RemoteError::NotFound(id.to_string()))?;
        let key = self.secrets.get(&account(id))?.ok_or_else(|| {
            RemoteError::Invalid(format!(
                "the key of {} is missing from the keychain; remove and add the remote again",
                remote.name
            ))
        })?;
        Ok((remote, key))
    }
}

/// What a health check found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    /// Round trip of the authenticated request, when the server answered it.
    pub latency_ms: Option<f64>,
    /// What is wrong (`unreachable`, `tls`, `timeout`, `unauthorized`, `http_<status>`), or
    /// `None` when the server works with this key.
    pub problem: Option<Problem>,
}

/// An error for the UI: a code and a sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Machine-readable kind.
    pub code: String,
    /// What happened, for people.
    pub message: String,
}

/// How long a health check may take.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

fn problem(code: &str, message: String) -> Option<Problem> {
    Some(Problem {
        code: code.into(),
        message,
    })
}

fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.host_str()
                .map(|h| u.port().map_or(h.to_string(), |p| format!("{h}:{p}")))
        })
        .unwrap_or_else(|| url.to_string())
}

/// Classifies a failed request. TLS failures show up as connect errors whose cause names
/// the handshake or the certificate.
fn transport_problem(url: &str, error: &reqwest::Error) -> Option<Problem> {
    let host = host_of(url);
    let detail = sentence(error);
    if error.is_timeout() {
        return problem(
            "timeout",
            format!("{host} did not answer within {} s", CHECK_TIMEOUT.as_secs()),
        );
    }
    let lower = detail.to_ascii_lowercase();
    if lower.contains("certificate")
        || lower.contains("tls")
        || lower.contains("handshake")
        || lower.contains("invalidcontenttype")
        || lower.contains("corrupt message")
    {
        return problem("tls", format!("TLS with {host} failed: {detail}"));
    }
    problem("unreachable", format!("cannot reach {host}: {detail}"))
}

/// Checks a server with a key: `GET /instances` (authenticated), timed. The key goes in the
/// `Authorization` header only.
pub async fn check(url: &str, key: &Sensitive<String>) -> Health {
    let client = match reqwest::Client::builder()
        .timeout(CHECK_TIMEOUT)
        .connect_timeout(CHECK_TIMEOUT)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            return Health {
                latency_ms: None,
                problem: problem(
                    "internal",
                    format!("cannot make an HTTP client: {}", sentence(&e)),
                ),
            };
        }
    };
    let base = url.trim_end_matches('/');
    let started = Instant::now();
    let response = client
        .get(format!("{base}/instances"))
        .bearer_auth(key.expose())
        .send()
        .await;
    let latency = started.elapsed().as_secs_f64() * 1000.0;
    let response = match response {
        Ok(r) => r,
        Err(e) => {
            return Health {
                latency_ms: None,
                problem: transport_problem(base, &e),
            };
        }
    };
    let status = response.status();
    if status.is_success() {
        return Health {
            latency_ms: Some(latency),
            problem: None,
        };
    }
    #[derive(Deserialize)]
    struct Body {
        message: String,
    }
    let said = response.json::<Body>().await.ok().map(|b| b.message);
    let problem = if status == reqwest::StatusCode::UNAUTHORIZED {
        problem(
            "unauthorized",
            format!(
                "{} refused the API key (401{})",
                host_of(base),
                said.map(|m| format!(": {m}")).unwrap_or_default()
            ),
        )
    } else {
        problem(
            &format!("http_{}", status.as_u16()),
            format!(
                "{} answered {status}{}",
                host_of(base),
                said.map(|m| format!(": {m}")).unwrap_or_default()
            ),
        )
    };
    Health {
        latency_ms: Some(latency),
        problem,
    }
}

#[cfg(test)]
mod tests;
