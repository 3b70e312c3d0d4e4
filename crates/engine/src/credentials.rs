//! Credentials you can check (Hypedeck extensions): each credential's current fingerprint and
//! when it was rotated, its usage trail (see `trail.rs`), a "test credential" request made from
//! the host, and secret references — a value given as `op://vault/item/field` (1Password CLI),
//! `keychain:<service>/<account>` (an OS keychain item) or `cmd:<program> <args…>` (its
//! standard output, e.g. `cmd:gh auth token`), resolved on the host at create, at every start,
//! on PATCH and on "re-resolve now", and stored in the keychain like a literal value.
//!
//! Invariants: no value (resolved or literal) appears in an error, a log line or an event, and
//! neither does what a reference's program printed or its arguments; references are not
//! secrets and may be shown; references are set only by the user at this machine
//! ([`Caller::Local`]; HTTP clients only after [`Engine::allow_http_secret_references`]),
//! because resolving one runs what the user's 1Password, keychain or shell can; `keychain:`
//! never reads Hypedeck's own service.

use std::time::Duration;

use hypedeck_egress::{Outcome, UsageEvent};
use hypedeck_model::{InstanceId, Rejection};
use hypedeck_secrets::{SecretStore as _, Sensitive};
use serde::Serialize;
use time::OffsetDateTime;

use crate::{Engine, EngineError};

/// Bound on resolving one reference.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(15);

/// Most events one call returns.
pub const MAX_EVENTS: usize = 1000;

/// Who asks for a verb that may resolve secret references. Resolving one runs a program or
/// reads a keychain item as the user at this machine, so only that user may ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The user at this machine: the engine itself, the desktop shell (Tauri IPC), or a client
    /// of the engine's Unix socket running as the engine's OS user.
    Local,
    /// An HTTP client holding the token. It may be anywhere: an SSH tunnel or a TLS proxy
    /// ends on loopback too, so where a request arrives from proves nothing.
    Http,
}

/// Why a reference from an HTTP client is refused.
pub const REFERENCES_LOCAL_ONLY: &str = "secret references (op://, keychain:, cmd:) can be set only by the user at this machine: from the Hypedeck window or with `hypedeck rotate` (or any client of the engine's Unix socket); this request came over HTTP. An engine started with --allow-http-secret-references accepts them over HTTP too (see the README)";

/// The kinds of secret reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReferenceKind {
    /// `op://vault/item/field`, read with `op read`.
    Op,
    /// `keychain:<service>/<account>`.
    Keychain,
    /// `cmd:<program> <args…>`: the trimmed standard output.
    Cmd,
}

/// The kind of reference `value` is, if it is one.
pub fn reference_kind(value: &str) -> Option<ReferenceKind> {
    if value.starts_with("op://") {
        Some(ReferenceKind::Op)
    } else if value.starts_with("keychain:") {
        Some(ReferenceKind::Keychain)
    } else if value.starts_with("cmd:") {
        Some(ReferenceKind::Cmd)
    } else {
        None
    }
}

pub(crate) fn refuse(message: String) -> EngineError {
    EngineError::Rejected(Rejection::new(
        hypedeck_model::ErrorCode::InvalidRequest,
        message,
    ))
}

/// How a reference names itself in errors and logs: its kind and program, never its arguments
/// (a `cmd:` line may carry a token) and never its account.
fn describe(reference: &str) -> String {
    match reference_kind(reference) {
        Some(ReferenceKind::Op) => "secret reference op://…".into(),
        Some(ReferenceKind::Keychain) => {
            let service = reference["keychain:".len()..]
                .split_once('/')
                .map_or("…", |(service, _)| service);
            format!("secret reference keychain:{service}/…")
        }
        Some(ReferenceKind::Cmd) => {
            let program = reference["cmd:".len()..]
                .split_whitespace()
                .next()
                .unwrap_or("");
            format!("secret reference cmd:{program} …")
        }
        None => "value".into(),
    }
}

/// Runs `argv` directly (no shell unless the user wrote one), with no stdin, a timeout, and
/// stderr discarded, and returns its trimmed stdout. Errors say what went wrong in the
/// program's terms (not installed, no answer, its exit status), never what it printed: its
/// output and its stderr may hold the value, and an error goes back to the API client.
async fn run_for_value(what: &str, argv: &[String]) -> Result<Sensitive<String>, EngineError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(refuse(format!("{what}: no program given")));
    };
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(RESOLVE_TIMEOUT, child).await {
        Err(_) => {
            return Err(refuse(format!(
                "{what}: no answer within {} s",
                RESOLVE_TIMEOUT.as_secs()
            )));
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(refuse(format!("{what}: not installed (not on PATH)")));
        }
        Ok(Err(e)) => return Err(refuse(format!("{what}: cannot run it: {}", e.kind()))),
        Ok(Ok(out)) => out,
    };
    if !out.status.success() {
        return Err(refuse(format!("{what}: failed ({})", out.status)));
    }
    let value = String::from_utf8(out.stdout)
        .map_err(|_| refuse(format!("{what}: printed something that is not text")))?;
    let value = value.trim().to_string();
    if value.is_empty() {
        return Err(refuse(format!("{what}: printed nothing")));
    }
    Ok(Sensitive::new(value))
}

/// Whether a `keychain:` reference names one of Hypedeck's own services (its API token, the
/// egress CA key, remote connections' tokens, other instances' credentials): never readable
/// through a reference.
fn own_service(service: &str) -> bool {
    service.eq_ignore_ascii_case(crate::KEYCHAIN_SERVICE)
}

/// Resolves a reference to its value (see the module docs for the forms).
pub async fn resolve_reference(reference: &str) -> Result<Sensitive<String>, EngineError> {
    let what = describe(reference);
    match reference_kind(reference) {
        Some(ReferenceKind::Op) => {
            run_for_value(
                &what,
                &[
                    "op".into(),
                    "read".into(),
                    "--no-newline".into(),
                    reference.into(),
                ],
            )
            .await
        }
        Some(ReferenceKind::Cmd) => {
            let argv: Vec<String> = reference["cmd:".len()..]
                .split_whitespace()
                .map(str::to_string)
                .collect();
            run_for_value(&what, &argv).await
        }
        Some(ReferenceKind::Keychain) => {
            let Some((service, account)) = reference["keychain:".len()..].split_once('/') else {
                return Err(refuse(format!(
                    "{what}: expected keychain:<service>/<account>"
                )));
            };
            if own_service(service) {
                return Err(refuse(format!(
                    "{what}: Hypedeck's own keychain items (its API token, keys and other \
                     instances' credentials) cannot be referenced"
                )));
            }
            let (service, account) = (service.to_string(), account.to_string());
            let found = tokio::task::spawn_blocking(move || {
                hypedeck_secrets::KeychainStore::open(&service)?.get(&account)
            })
            .await
            .map_err(|_| EngineError::Task)?
            .map_err(|e| refuse(format!("{what}: {e}")))?;
            match found {
                Some(v) if !v.expose().trim().is_empty() => Ok(v),
                _ => Err(refuse(format!(
                    "{what}: no such keychain item, or it is empty"
                ))),
            }
        }
        None => Err(refuse(format!("{what} is not a reference"))),
    }
}

/// One credential as the details page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CredentialStatus {
    /// The credential's key in `credentials`.
    pub name: String,
    /// The env var its value comes from (`source.env`).
    pub env: String,
    /// Hosts it is injected for (`None`: every host).
    pub hosts: Option<Vec<String>>,
    /// Headers it sets.
    pub headers: Vec<String>,
    /// Fingerprint of the value in force (`None`: no value).
    pub fingerprint: Option<String>,
    /// When the value was last set.
    #[serde(with = "time::serde::rfc3339::option")]
    pub rotated_at: Option<OffsetDateTime>,
    /// Where the value comes from, when it is a reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Its kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_kind: Option<ReferenceKind>,
    /// The newest request that carried it (injected or test).
    pub last_used: Option<UsageEvent>,
    /// The first request that carried the current value (since the last rotation).
    pub first_use_of_current: Option<UsageEvent>,
    /// Refused attempts (blocked or leak-blocked) in the trail.
    pub blocked: usize,
}

impl Engine {
    /// Lets (or stops) HTTP clients set secret references. Off by default: only the user at
    /// this machine ([`Caller::Local`]) may.
    pub fn allow_http_secret_references(&self, allowed: bool) {
        self.vault.allow_http_references(allowed);
    }

    /// Keychain items a credential may refer to (`keychain:<service>/<account>`), for a picker:
    /// names only, Hypedeck's own items left out. Like resolving, only for the user at this
    /// machine (it tells what the user's keychain holds).
    pub async fn keychain_items(
        &self,
        caller: Caller,
    ) -> Result<Vec<(String, String)>, EngineError> {
        self.vault.check_caller(caller)?;
        let items = tokio::task::spawn_blocking(|| {
            hypedeck_secrets::keychain_items(crate::KEYCHAIN_SERVICE)
        })
        .await
        .map_err(|_| EngineError::Task)??;
        Ok(items.into_iter().map(|i| (i.service, i.account)).collect())
    }

    /// The instance's usage trail, newest first: at most `limit` events (capped at
    /// [`MAX_EVENTS`]), of one credential when `credential` is given.
    pub async fn credential_events(
        &self,
        id_or_name: &str,
        credential: Option<&str>,
        limit: usize,
    ) -> Result<Vec<UsageEvent>, EngineError> {
        let record = self.resolve(id_or_name)?;
        let id = InstanceId::parse(&record.id).map_err(|_| EngineError::NotFound)?;
        let mut events = self.trail(id).await?;
        events.retain(|e| credential.is_none_or(|c| e.credential == c));
        events.reverse();
        events.truncate(limit.min(MAX_EVENTS));
        Ok(events)
    }

    /// The instance's trail, oldest first, with every event the proxy recorded before the call
    /// (a read right after a request or a credential test sees it).
    async fn trail(&self, id: InstanceId) -> Result<Vec<UsageEvent>, EngineError> {
        let proxy = self.egress_proxy();
        let paths = self.paths.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(proxy) = proxy {
                proxy.settle_usage();
            }
            crate::trail::read(&paths, &id)
        })
        .await
        .map_err(|_| EngineError::Task)
    }

    /// Every credential of the instance with its fingerprint, rotation time and use.
    pub async fn credentials(
        &self,
        id_or_name: &str,
    ) -> Result<Vec<CredentialStatus>, EngineError> {
        let record = self.resolve(id_or_name)?;
        let id = InstanceId::parse(&record.id).map_err(|_| EngineError::NotFound)?;
        let values = self.vault.read(&record).await?;
        let events = self.trail(id).await?;
        let mut out = Vec::new();
        for (name, policy) in &record.credentials {
            let source = &policy.source.env;
            let secret_ref = record.secret_env.get(source);
            let fingerprint = values
                .get(source)
                .map(|v| self.fingerprints.fingerprint(v.expose()));
            let mine = || events.iter().filter(|e| &e.credential == name);
            let used = |e: &&UsageEvent| matches!(e.outcome, Outcome::Injected | Outcome::Test);
            let hosts = if policy.inject.iter().any(|i| i.hosts.is_none()) {
                None
            } else {
                Some(
                    policy
                        .inject
                        .iter()
                        .flat_map(|i| i.hosts.clone().unwrap_or_default())
                        .collect(),
                )
            };
            out.push(CredentialStatus {
                name: name.clone(),
                env: source.clone(),
                hosts,
                headers: policy.inject.iter().map(|i| i.as_.header.clone()).collect(),
                rotated_at: secret_ref
                    .and_then(|r| r.rotated_at)
                    .or(Some(record.created_at)),
                reference: secret_ref.and_then(|r| r.reference.clone()),
                reference_kind: secret_ref
                    .and_then(|r| r.reference.as_deref())
                    .and_then(reference_kind),
                last_used: mine().rfind(used).cloned(),
                first_use_of_current: fingerprint
                    .as_ref()
                    .and_then(|fp| mine().filter(used).find(|e| &e.fingerprint == fp).cloned()),
                blocked: mine().filter(|e| !used(e)).count(),
                fingerprint,
            });
        }
        Ok(out)
    }

    /// "Test credential": one GET to `url` from the host through the instance's rules.
    pub async fn test_credential(
        &self,
        id_or_name: &str,
        url: &str,
    ) -> Result<hypedeck_egress::TestOutcome, EngineError> {
        let record = self.resolve(id_or_name)?;
        let Some(proxy) = self
            .egress_proxy()
            .filter(|_| record.network.egress.enabled)
        else {
            return Err(refuse(
                "this instance's credentials are not injected (egress is off)".into(),
            ));
        };
        proxy
            .test_request(&record.id, url)
            .await
            .map_err(|e| match e {
                hypedeck_egress::EgressError::NotAttached(_) => EngineError::InvalidState(
                    "the instance must be running to test its credentials".into(),
                ),
                other => refuse(other.to_string()),
            })
    }

    /// "Re-resolve now": reads the credential's reference again and rotates to its value
    /// (keychain, then the proxy's rules), like a PATCH with the same reference.
    pub async fn resolve_credential(
        &self,
        id_or_name: &str,
        credential: &str,
        caller: Caller,
    ) -> Result<Vec<CredentialStatus>, EngineError> {
        // Re-running a reference is running the user's program: the user's call.
        self.vault.check_caller(caller)?;
        let record = self.resolve(id_or_name)?;
        let Some(policy) = record.credentials.get(credential) else {
            return Err(EngineError::NotFound);
        };
        let Some(reference) = record
            .secret_env
            .get(&policy.source.env)
            .and_then(|r| r.reference.clone())
        else {
            return Err(refuse(format!(
                "credential {credential:?} is not a reference; rotate it with PATCH"
            )));
        };
        let env = std::collections::BTreeMap::from([(policy.source.env.clone(), reference)]);
        self.update_as(
            &record.id,
            hypedeck_model::validate::InstanceUpdate {
                env: Some(env),
                ..Default::default()
            },
            caller,
        )
        .await?;
        self.credentials(&record.id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_recognized_by_prefix_only() {
        assert_eq!(
            reference_kind("op://vault/item/field"),
            Some(ReferenceKind::Op)
        );
        assert_eq!(
            reference_kind("keychain:svc/acct"),
            Some(ReferenceKind::Keychain)
        );
        assert_eq!(
            reference_kind("cmd:gh auth token"),
            Some(ReferenceKind::Cmd)
        );
        assert_eq!(reference_kind("sk-fixture-123"), None);
        assert_eq!(reference_kind("https://op://x"), None);
    }

    #[tokio::test]
    async fn commands_resolve_to_their_trimmed_output_and_failures_never_show_stdout() {
        let v = resolve_reference("cmd:printf  sk-from-command\\n")
            .await
            .unwrap();
        assert_eq!(v.expose(), "sk-from-command");
        let v = resolve_reference("cmd:echo sk-from-echo").await.unwrap();
        assert_eq!(v.expose(), "sk-from-echo");
        let e = resolve_reference("cmd:sh -c exit")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("printed nothing"), "{e}");
        // Prints `sk-leaky` (the reference itself only says `tk-leaky`) and `oops` on stderr,
        // then fails: the error has the exit status, and neither output nor arguments.
        let e = resolve_reference(
            "cmd:sh -c echo${IFS}tk-leaky|tr${IFS}t${IFS}s;echo${IFS}oops>&2;exit${IFS}3",
        )
        .await
        .unwrap_err()
        .to_string();
        assert_eq!(e, "secret reference cmd:sh …: failed (exit status: 3)");
        let e = resolve_reference("cmd:no-such-program-hd --token tk-arg")
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "secret reference cmd:no-such-program-hd …: not installed (not on PATH)"
        );
        let e = resolve_reference("keychain:no-slash")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected keychain:<service>/<account>"), "{e}");
    }

    /// `keychain:` never reads Hypedeck's own service (the API token, the CA key, other
    /// instances' credentials), whatever the case or the account.
    #[tokio::test]
    async fn keychain_references_refuse_hypedecks_own_items() {
        for reference in [
            "keychain:hypedeck/api-token",
            "keychain:Hypedeck/instance/abc/env/KEY",
        ] {
            let e = resolve_reference(reference).await.unwrap_err().to_string();
            assert!(e.contains("cannot be referenced"), "{reference}: {e}");
            assert!(
                !e.contains("api-token") && !e.contains("instance/abc"),
                "{e}"
            );
        }
    }
}
