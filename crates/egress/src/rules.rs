//! Header-injection rules: what the engine hands in ([`InjectRule`]), the checked form the
//! proxy applies ([`RuleSet`]), and destination host matching.
//!
//! Matching follows upstream (`egressproxy.NormalizeAllowedDomainPattern` and friends): the
//! destination is the CONNECT authority's host, lowercased, port stripped; a pattern is an
//! exact DNS name, `*.<name>` matching exactly one extra label, or an IP literal; `None` means
//! every host. Patterns arrive already validated by `hypedeck-model`; here they are only
//! canonicalised (case, trailing dot, IP spelling), and anything malformed simply never matches.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};
use hypedeck_secrets::Sensitive;

use crate::leak::{LeakCheck, LeakGuard, MIN_GUARDED_LEN};
use crate::{EgressError, Fingerprinter};

/// One header to set on HTTPS requests to matching hosts.
///
/// `Debug` never shows the value (it is a [`Sensitive`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectRule {
    /// Header name, e.g. `Authorization` (case-insensitive).
    pub header: String,
    /// The final header value, e.g. `Bearer sk-…` (`format` with `${value}` already replaced).
    pub value: Sensitive<String>,
    /// Normalized host patterns (`api.openai.com`, `*.openai.com`, `10.0.0.1`); `None` = all.
    pub hosts: Option<Vec<String>>,
    /// The credential this rule injects (its key in the instance's `credentials`): names it in
    /// the usage trail, and the guest's `mock-<credential>` stands for it.
    pub credential: String,
    /// The credential's raw value: fingerprinted for the trail, and looked for by the leak
    /// guard in what goes to hosts the credential is not for.
    pub secret: Sensitive<String>,
}

/// A credential as the trail and the leak guard see it (one per distinct `credential`).
#[derive(Debug)]
pub(crate) struct CredentialInfo {
    pub(crate) name: String,
    /// The fingerprint of its value.
    pub(crate) fingerprint: String,
    /// What the guest holds instead of the value.
    mock: String,
    /// Where it is injected (union of its rules); `None`: everywhere.
    hosts: Option<Vec<HostPattern>>,
}

impl CredentialInfo {
    pub(crate) fn allowed(&self, host: &str) -> bool {
        match &self.hosts {
            None => true,
            Some(patterns) => patterns.iter().any(|p| p.matches(host)),
        }
    }
}

/// A destination host pattern, canonicalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostPattern {
    /// A DNS name that must match exactly.
    Exact(String),
    /// `*.<suffix>`: exactly one label in front of `suffix`.
    Wildcard(String),
    /// An IP literal, compared as an address (so `::1` and `0::1` are equal).
    Ip(IpAddr),
}

impl HostPattern {
    /// Canonicalises a pattern the edge already validated.
    pub(crate) fn parse(pattern: &str) -> HostPattern {
        let p = canonical_name(pattern);
        if let Some(suffix) = p.strip_prefix("*.") {
            return HostPattern::Wildcard(suffix.to_string());
        }
        match p.parse::<IpAddr>() {
            Ok(ip) => HostPattern::Ip(ip),
            Err(_) => HostPattern::Exact(p),
        }
    }

    /// Whether `host` (already canonical, see [`canonical_host`]) matches.
    pub(crate) fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => host == name,
            HostPattern::Wildcard(suffix) => host
                .strip_suffix(suffix.as_str())
                .and_then(|rest| rest.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty() && !label.contains('.')),
            HostPattern::Ip(ip) => host.parse::<IpAddr>().is_ok_and(|h| h == *ip),
        }
    }
}

/// Lowercases, trims and drops one trailing dot.
fn canonical_name(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    match lower.strip_suffix('.') {
        Some(stripped) => stripped.to_string(),
        None => lower,
    }
}

/// The canonical form of a destination host taken from a request authority: brackets of an
/// IPv6 literal removed, lowercased, trailing dot dropped, IPs in their standard spelling.
/// `None` when empty or longer than a DNS name may be (253 characters).
pub(crate) fn canonical_host(host: &str) -> Option<String> {
    let unbracketed = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let name = canonical_name(unbracketed);
    if name.is_empty() || name.len() > 253 {
        return None;
    }
    Some(match name.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => name,
    })
}

/// A checked rule, ready to apply.
#[derive(Debug)]
struct CompiledRule {
    name: HeaderName,
    /// Index into [`RuleSet::credentials`].
    credential: usize,
    /// Marked sensitive; `HeaderValue`'s `Debug` shows `Sensitive` for such values.
    value: HeaderValue,
    hosts: Option<Vec<HostPattern>>,
}

impl CompiledRule {
    fn matches(&self, host: &str) -> bool {
        match &self.hosts {
            None => true,
            Some(patterns) => patterns.iter().any(|p| p.matches(host)),
        }
    }
}

/// An instance's whole rule set. Swapped as one value, so a request sees all of one set.
#[derive(Debug, Default)]
pub(crate) struct RuleSet {
    rules: Vec<CompiledRule>,
    pub(crate) credentials: Vec<CredentialInfo>,
    /// The leak guard: the values of credentials with a host list and a value long enough to
    /// look for (`None`: no such credential).
    guard: Option<LeakGuard>,
    /// Increments on every `set_rules` of the instance; 0 = never set.
    pub(crate) generation: u64,
}

impl RuleSet {
    /// Checks every rule; one bad rule rejects the set (the error names its index only).
    /// Values are fingerprinted with `fingerprints`.
    pub(crate) fn compile(
        rules: &[InjectRule],
        generation: u64,
        fingerprints: &Fingerprinter,
    ) -> Result<RuleSet, EgressError> {
        let mut compiled = Vec::with_capacity(rules.len());
        let mut credentials: Vec<CredentialInfo> = Vec::new();
        let mut secrets: Vec<&str> = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            let invalid = |reason| EgressError::InvalidRule { index, reason };
            let name = HeaderName::from_bytes(rule.header.trim().as_bytes())
                .map_err(|_| invalid("header name is not a valid http header name"))?;
            let mut value = HeaderValue::from_bytes(rule.value.expose().as_bytes())
                .map_err(|_| invalid("header value is not a valid http header value"))?;
            value.set_sensitive(true);
            let hosts: Option<Vec<HostPattern>> = rule
                .hosts
                .as_ref()
                .map(|hosts| hosts.iter().map(|h| HostPattern::parse(h)).collect());
            let credential = match credentials.iter().position(|c| c.name == rule.credential) {
                Some(i) => i,
                None => {
                    credentials.push(CredentialInfo {
                        name: rule.credential.clone(),
                        fingerprint: fingerprints.fingerprint(rule.secret.expose()),
                        mock: format!("mock-{}", rule.credential),
                        hosts: Some(Vec::new()),
                    });
                    secrets.push(rule.secret.expose());
                    credentials.len() - 1
                }
            };
            let info = &mut credentials[credential];
            match (&mut info.hosts, &hosts) {
                (Some(all), Some(these)) => all.extend(these.iter().cloned()),
                (_, None) => info.hosts = None,
                (None, Some(_)) => {}
            }
            compiled.push(CompiledRule {
                name,
                credential,
                value,
                hosts,
            });
        }
        let guarded: Vec<(usize, &[u8])> = credentials
            .iter()
            .zip(&secrets)
            .enumerate()
            .filter(|(_, (c, secret))| c.hosts.is_some() && secret.len() >= MIN_GUARDED_LEN)
            .map(|(i, (_, secret))| (i, secret.as_bytes()))
            .collect();
        let guard = LeakGuard::new(&guarded).map_err(|_| EgressError::LeakGuard)?;
        Ok(RuleSet {
            rules: compiled,
            credentials,
            guard,
            generation,
        })
    }

    /// The leak guard for requests to `host`: it looks for the credentials `host` may not
    /// receive. `None` (and no cost) when there are none.
    pub(crate) fn guards_against(&self, host: &str) -> Option<LeakCheck> {
        let guard = self.guard.as_ref()?;
        let forbidden = self.credentials.iter().map(|c| !c.allowed(host)).collect();
        LeakCheck::new(guard, forbidden)
    }

    /// Credentials injected for `host` (a plain-HTTP request there would carry none).
    pub(crate) fn credentials_for(&self, host: &str) -> Vec<usize> {
        (0..self.credentials.len())
            .filter(|&i| self.credentials[i].hosts.is_some() && self.credentials[i].allowed(host))
            .collect()
    }

    /// Credentials whose mock value the guest put in `headers` for a host they are not for.
    pub(crate) fn mocks_sent_elsewhere(&self, host: &str, headers: &HeaderMap) -> Vec<usize> {
        (0..self.credentials.len())
            .filter(|&i| !self.credentials[i].allowed(host))
            .filter(|&i| {
                let mock = self.credentials[i].mock.as_bytes();
                headers
                    .values()
                    .any(|v| memchr::memmem::find(v.as_bytes(), mock).is_some())
            })
            .collect()
    }

    /// Sets (overwrites, like upstream's `headers.Set`) every matching rule's header on
    /// `headers`. `host` must be canonical. Returns the credentials injected (each once).
    pub(crate) fn apply(&self, host: &str, headers: &mut HeaderMap) -> Vec<usize> {
        let mut applied = Vec::new();
        for rule in self.rules.iter().filter(|r| r.matches(host)) {
            headers.insert(rule.name.clone(), rule.value.clone());
            if !applied.contains(&rule.credential) {
                applied.push(rule.credential);
            }
        }
        applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Any pattern against any host: an answer, never a panic; a pattern matches its own
        /// host, and a wildcard never matches the bare domain or two extra labels.
        #[test]
        fn host_patterns_never_panic_and_keep_their_shape(
            pattern in "\\PC{0,40}",
            host in "\\PC{0,40}",
            labels in proptest::collection::vec("[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", 1..4),
        ) {
            if let Some(h) = canonical_host(&host) {
                let _ = HostPattern::parse(&pattern).matches(&h);
            }
            let domain = labels.join(".");
            let exact = canonical_host(&domain).expect("a valid host");
            proptest::prop_assert!(HostPattern::parse(&domain).matches(&exact));
            let wildcard = HostPattern::parse(&format!("*.{domain}"));
            proptest::prop_assert!(!wildcard.matches(&exact));
            let one = canonical_host(&format!("x.{domain}")).expect("valid");
            let two = canonical_host(&format!("y.x.{domain}")).expect("valid");
            proptest::prop_assert!(wildcard.matches(&one));
            proptest::prop_assert!(!wildcard.matches(&two));
        }
    }

    fn matches(pattern: &str, host: &str) -> bool {
        let host = canonical_host(host).expect("valid host");
        HostPattern::parse(pattern).matches(&host)
    }

    #[test]
    fn wildcard_matches_exactly_one_extra_label() {
        assert!(matches("*.openai.com", "api.openai.com"));
        assert!(!matches("*.openai.com", "openai.com"));
        assert!(!matches("*.openai.com", "a.b.openai.com"));
        assert!(!matches("*.openai.com", "evilopenai.com"));
        assert!(!matches("*.openai.com", "api.openai.com.evil.net"));
        assert!(!matches("*.openai.com", ".openai.com"));
    }

    #[test]
    fn exact_names_match_case_insensitively() {
        assert!(matches("api.openai.com", "API.OpenAI.com"));
        assert!(matches("API.OPENAI.COM", "api.openai.com"));
        assert!(matches("*.OpenAI.com", "Api.OPENAI.com"));
        assert!(matches("api.openai.com", "api.openai.com."));
        assert!(!matches("api.openai.com", "api.openai.co"));
        assert!(!matches("api.openai.com", "xapi.openai.com"));
    }

    #[test]
    fn ip_literals_compare_as_addresses() {
        assert!(matches("10.0.0.1", "10.0.0.1"));
        assert!(!matches("10.0.0.1", "10.0.0.2"));
        assert!(matches("::1", "[0:0::1]"));
        assert!(matches("2001:db8::1", "[2001:DB8::1]"));
        assert!(!matches("10.0.0.1", "10.0.0.1.nip.io"));
    }

    #[test]
    fn canonical_host_rejects_empty_and_overlong() {
        assert_eq!(canonical_host(""), None);
        assert_eq!(canonical_host("[]"), None);
        assert_eq!(canonical_host(&"a".repeat(254)), None);
        let longest = format!("{}.{}", "a".repeat(63), "b".repeat(189));
        assert_eq!(longest.len(), 253);
        assert_eq!(canonical_host(&longest).as_deref(), Some(longest.as_str()));
    }

    fn fp() -> Fingerprinter {
        Fingerprinter::from_key(&[1; 32])
    }

    fn rule(header: &str, value: &str, hosts: Option<&[&str]>) -> InjectRule {
        InjectRule {
            header: header.into(),
            value: Sensitive::new(value.into()),
            hosts: hosts.map(|h| h.iter().map(|s| s.to_string()).collect()),
            credential: header.to_ascii_uppercase().replace('-', "_"),
            secret: Sensitive::new(value.into()),
        }
    }

    #[test]
    fn matching_rules_overwrite_and_others_are_left_alone() {
        let set = RuleSet::compile(
            &[
                rule("Authorization", "Bearer real", Some(&["api.openai.com"])),
                rule("X-Org", "org-1", Some(&["*.openai.com"])),
                rule("X-All", "everywhere", None),
                rule("X-None", "nowhere", Some(&[])),
            ],
            1,
            &fp(),
        )
        .expect("valid rules");

        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer mock-K"));
        headers.append("authorization", HeaderValue::from_static("Bearer second"));
        assert_eq!(set.apply("api.openai.com", &mut headers).len(), 3);
        let auth: Vec<_> = headers.get_all("authorization").iter().collect();
        assert_eq!(auth, ["Bearer real"], "overwritten, not appended");
        assert_eq!(headers["x-org"], "org-1");
        assert_eq!(headers["x-all"], "everywhere");
        assert!(!headers.contains_key("x-none"));

        let mut other = HeaderMap::new();
        other.insert("authorization", HeaderValue::from_static("Bearer mock-K"));
        assert_eq!(set.apply("example.com", &mut other).len(), 1);
        assert_eq!(other["authorization"], "Bearer mock-K");
        assert_eq!(other["x-all"], "everywhere");
    }

    #[test]
    fn invalid_rules_are_rejected_without_echoing_the_value() {
        let err = RuleSet::compile(
            &[
                rule("Authorization", "ok", None),
                rule("X-Key", "sk-secret\r\nInjected: 1", None),
            ],
            1,
            &fp(),
        )
        .expect_err("newline in value");
        let text = format!("{err} {err:?}");
        assert!(text.contains("rule 1"), "{text}");
        assert!(!text.contains("sk-secret"), "{text}");

        assert!(RuleSet::compile(&[rule("Bad Header", "v", None)], 1, &fp()).is_err());
        assert!(RuleSet::compile(&[rule("", "v", None)], 1, &fp()).is_err());
    }

    #[test]
    fn debug_never_shows_values() {
        let r = rule(
            "Authorization",
            "Bearer sk-test-123",
            Some(&["api.openai.com"]),
        );
        let text = format!("{r:?}");
        assert!(!text.contains("sk-test-123"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");

        let set = RuleSet::compile(&[r], 1, &fp()).expect("valid");
        let text = format!("{set:?}");
        assert!(!text.contains("sk-test-123"), "{text}");
        // Nor as the list of its bytes (the leak guard's needles).
        let bytes = format!("{:?}", &b"sk-test-123"[..6]);
        assert!(!text.contains(&bytes[1..bytes.len() - 1]), "{text}");
        assert!(text.contains("LeakGuard"), "{text}");
    }
}
