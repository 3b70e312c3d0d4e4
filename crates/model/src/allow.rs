//! Domain allow-lists (`network.egress.allow`, a Hypedeck extension): which names a sandbox may
//! reach. Pure: parsing, validation and matching.

use crate::Rejection;

/// Entries one list may hold.
pub const MAX_ENTRIES: usize = 256;

/// A validated allow-list: exact names (`pypi.org`) and wildcards (`*.githubusercontent.com`,
/// any name that ends with `.githubusercontent.com`, at any depth, but not the bare domain).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct AllowList(Vec<String>);

impl AllowList {
    /// Validates `entries` (lowercased, a trailing dot dropped, duplicates removed). The error
    /// names the first bad entry.
    pub fn parse(entries: &[String]) -> Result<AllowList, Rejection> {
        if entries.len() > MAX_ENTRIES {
            return Err(Rejection::invalid_request(format!(
                "network.egress.allow has {} entries; at most {MAX_ENTRIES} are allowed",
                entries.len()
            )));
        }
        let mut out: Vec<String> = Vec::new();
        for entry in entries {
            let e = entry.trim().trim_end_matches('.').to_ascii_lowercase();
            let name = e.strip_prefix("*.").unwrap_or(&e);
            if !is_hostname(name) {
                return Err(Rejection::invalid_request(format!(
                    "network.egress.allow entry {entry:?} is not a host name or a \"*.domain\" wildcard"
                )));
            }
            if !out.contains(&e) {
                out.push(e);
            }
        }
        Ok(AllowList(out))
    }

    /// Whether `name` (lowercase, no trailing dot) is on the list.
    pub fn allows(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.0.iter().any(|p| match p.strip_prefix("*.") {
            Some(domain) => name
                .strip_suffix(domain)
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            None => *p == name,
        })
    }

    /// The entries, in order.
    pub fn entries(&self) -> &[String] {
        &self.0
    }
}

/// An allow-list shared by everything that enforces it for one instance (its network stack and
/// its proxy), replaced whole by a PATCH; `None`: no list.
pub type SharedAllowList = std::sync::Arc<std::sync::RwLock<Option<AllowList>>>;

/// Whether `shared` lets `name` through (no list: yes).
pub fn shared_allows(shared: &SharedAllowList, name: &str) -> bool {
    match shared.read() {
        Ok(guard) => guard.as_ref().is_none_or(|l| l.allows(name)),
        // A writer panicked mid-replace: the old list is still whole; read it.
        Err(poisoned) => poisoned.get_ref().as_ref().is_none_or(|l| l.allows(name)),
    }
}

/// Whether `shared` holds a list.
pub fn shared_is_set(shared: &SharedAllowList) -> bool {
    match shared.read() {
        Ok(guard) => guard.is_some(),
        Err(poisoned) => poisoned.get_ref().is_some(),
    }
}

fn is_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        AllowList::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn exact_names_and_wildcards_match_as_documented() {
        let l = list(&["PyPI.org.", "*.githubusercontent.com", "pypi.org"]);
        assert_eq!(l.entries(), ["pypi.org", "*.githubusercontent.com"]);
        assert!(l.allows("pypi.org"));
        assert!(l.allows("PYPI.ORG."));
        assert!(!l.allows("files.pypi.org"));
        assert!(l.allows("raw.githubusercontent.com"));
        assert!(l.allows("a.b.githubusercontent.com"));
        assert!(!l.allows("githubusercontent.com"));
        assert!(!l.allows("evilgithubusercontent.com"));
        assert!(!l.allows("githubusercontent.com.evil.test"));
    }

    #[test]
    fn bad_entries_are_refused_by_name() {
        for bad in [
            "",
            "*",
            "*.",
            "a..b",
            "-a.test",
            "a b.test",
            "http://x.test",
            "**.x.test",
            "x.test/path",
        ] {
            let err = AllowList::parse(&[bad.to_string()]).unwrap_err();
            assert!(
                err.message.contains("network.egress.allow entry"),
                "{bad}: {}",
                err.message
            );
        }
        let many: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("h{i}.test")).collect();
        assert!(AllowList::parse(&many).is_err());
    }
}
