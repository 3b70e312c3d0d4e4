//! Credential policies: `credentials` normalized (trimmed keys, normalized host patterns) and
//! checked against the request's env and egress.

use std::collections::BTreeMap;

use super::Rejection;
use crate::request::{CredentialInject, CredentialPolicy};

/// Normalizes a credential host pattern like upstream `NormalizeAllowedDomainPattern`:
/// lower-case, no scheme/path/port, `*.` only as a prefix of a ≥2-label name.
pub fn normalize_host_pattern(pattern: &str) -> Result<String, String> {
    let p = pattern.trim().to_ascii_lowercase();
    let invalid = || {
        format!(
            "invalid host pattern {pattern:?}: allowed domain pattern {pattern:?} must be a host pattern without scheme/path"
        )
    };
    if p.is_empty() || p.contains("://") || p.contains('/') || p.contains(':') || p.contains('@') {
        return Err(invalid());
    }
    let (wildcard, host) = match p.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, p.as_str()),
    };
    if host.contains('*') {
        return Err(invalid());
    }
    let labels: Vec<&str> = host.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !labels.iter().all(label_ok) {
        return Err(invalid());
    }
    if wildcard && labels.len() < 2 {
        return Err(invalid());
    }
    Ok(p)
}

/// Normalizes `credentials` (keys and header names trimmed, host patterns normalized and
/// deduplicated) and checks them against egress and `env`, in upstream's order.
pub(super) fn normalize_credentials(
    credentials: Option<&BTreeMap<String, CredentialPolicy>>,
    egress_enabled: bool,
    env: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, CredentialPolicy>, Rejection> {
    let Some(credentials) = credentials.filter(|c| !c.is_empty()) else {
        return Ok(BTreeMap::new());
    };
    if !egress_enabled {
        return Err(Rejection::invalid_request(
            "credentials require network.egress.enabled=true",
        ));
    }
    let mut out = BTreeMap::new();
    for (raw_key, policy) in credentials {
        let key = raw_key.trim();
        if key.is_empty() {
            return Err(Rejection::invalid_request(
                "credentials key must be non-empty",
            ));
        }
        if out.contains_key(key) {
            return Err(Rejection::invalid_request(format!(
                "duplicate credentials key {key:?} after normalization"
            )));
        }
        let source = policy.source.env.trim();
        if source.is_empty() {
            return Err(Rejection::invalid_request(format!(
                "credentials[{key:?}].source.env is required"
            )));
        }
        let mut inject = Vec::new();
        for (i, rule) in policy.inject.iter().enumerate() {
            let header = rule.as_.header.trim();
            if header.is_empty() {
                return Err(Rejection::invalid_request(format!(
                    "credentials[{key:?}].inject[{i}].as.header is required"
                )));
            }
            if rule.as_.format.trim().is_empty() {
                return Err(Rejection::invalid_request(format!(
                    "credentials[{key:?}].inject[{i}].as.format is required"
                )));
            }
            if !rule.as_.format.contains("${value}") {
                return Err(Rejection::invalid_request(format!(
                    "credentials[{key:?}].inject[{i}].as.format must include ${{value}}"
                )));
            }
            let hosts = match &rule.hosts {
                None => None,
                Some(hosts) => {
                    let mut seen = Vec::new();
                    for h in hosts {
                        let normalized = normalize_host_pattern(h).map_err(|e| {
                            Rejection::invalid_request(format!(
                                "credentials[{key:?}].inject[{i}].hosts: {e}"
                            ))
                        })?;
                        if !seen.contains(&normalized) {
                            seen.push(normalized);
                        }
                    }
                    Some(seen)
                }
            };
            inject.push(CredentialInject {
                hosts,
                as_: crate::request::CredentialInjectAs {
                    header: header.to_string(),
                    format: rule.as_.format.clone(),
                },
            });
        }
        match env.get(source) {
            None => {
                return Err(Rejection::invalid_request(format!(
                    "credentials[{key:?}].source.env {source:?} must be present in env"
                )));
            }
            Some(v) if v.trim().is_empty() => {
                return Err(Rejection::invalid_request(format!(
                    "env var {source:?} must be non-empty when referenced by credentials[{key:?}]"
                )));
            }
            Some(_) => {}
        }
        out.insert(
            key.to_string(),
            CredentialPolicy {
                source: crate::request::CredentialSource {
                    env: source.to_string(),
                },
                inject,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::spec::EgressMode;
    use crate::validate::test_support::create;

    #[test]
    fn credentials_are_normalized() {
        let spec = create(json!({
            "name": "agent-1", "image": "docker.io/library/alpine:latest",
            "env": {"OUTBOUND_OPENAI_KEY": "sk-real-123", "PORT": "3000"},
            "network": {"enabled": true, "egress": {"enabled": true}},
            "credentials": {" OUTBOUND_OPENAI_KEY ": {"source": {"env": "OUTBOUND_OPENAI_KEY"},
                "inject": [{"hosts": ["API.openai.com", "*.openai.com", "api.openai.com"],
                            "as": {"header": "Authorization", "format": "Bearer ${value}"}}]}}
        }))
        .unwrap();
        assert_eq!(spec.network.egress, Some(EgressMode::All));
        let policy = &spec.credentials["OUTBOUND_OPENAI_KEY"];
        assert_eq!(
            policy.inject[0].hosts.as_deref(),
            Some(&["api.openai.com".to_string(), "*.openai.com".to_string()][..])
        );
        assert_eq!(
            spec.credential_source_keys()
                .into_iter()
                .collect::<Vec<_>>(),
            vec!["OUTBOUND_OPENAI_KEY"]
        );
    }

    #[test]
    fn host_patterns() {
        assert_eq!(
            normalize_host_pattern("API.OpenAI.com").unwrap(),
            "api.openai.com"
        );
        assert_eq!(
            normalize_host_pattern("*.openai.com").unwrap(),
            "*.openai.com"
        );
        assert_eq!(normalize_host_pattern("10.0.0.1").unwrap(), "10.0.0.1");
        for bad in [
            "https://x",
            "x/y",
            "x:443",
            "*.com",
            "a.*.com",
            "",
            "*",
            "-a.com",
        ] {
            assert!(normalize_host_pattern(bad).is_err(), "{bad}");
        }
    }
}
