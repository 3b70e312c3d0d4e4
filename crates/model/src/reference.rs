//! Image references: the one grammar, docker's `distribution/reference`, parsed and normalized
//! like its `ParseNormalizedNamed` (`alpine` -> `docker.io/library/alpine:latest`).
//!
//! Both call sites use it: the edge check of `POST /instances` ([`check_image_reference`]) and
//! `hypedeck_images::ImageRef` (the puller, `POST /images`), so a reference the edge accepts
//! is one the puller can parse, and the reverse.
//!
//! Grammar (as in distribution/reference/regexp.go):
//! - domain: `host[:port]` where host is dot-separated `[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?`
//!   labels or a bracketed IPv6 literal; the first path component is a domain only when it
//!   contains `.` or `:`, is `localhost`, or has an uppercase letter (docker's rule);
//! - path components: `[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*`, `/`-separated, lowercase only;
//! - tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`;
//! - digest: `algorithm:hex`; only `sha256` with 64 lowercase hex digits is accepted, since it
//!   is the only algorithm we can verify (docker also takes `sha384` and `sha512`);
//! - `registry/repository`, normalized, is at most 255 characters (`NameTotalLengthMax`).

use std::fmt;

/// The registry bare names resolve to.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag used when a reference names neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";
const LEGACY_DEFAULT_REGISTRY: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
/// distribution/reference's `NameTotalLengthMax`.
const NAME_MAX_LEN: usize = 255;
/// The only digest algorithm accepted.
const SHA256_PREFIX: &str = "sha256:";

/// Why an image reference was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferenceError {
    /// Empty input, or surrounding whitespace.
    Empty,
    /// The registry part is not `host[:port]`.
    Registry,
    /// The repository path does not follow the grammar.
    Repository,
    /// The repository path has uppercase letters (docker refuses these too).
    Uppercase,
    /// `registry/repository` is longer than 255 characters.
    TooLong,
    /// The tag does not follow the grammar.
    Tag,
    /// The digest is not `sha256:` followed by 64 lowercase hex digits.
    Digest,
}

impl fmt::Display for ReferenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReferenceError::Empty => "image reference is empty or has surrounding whitespace",
            ReferenceError::Registry => "invalid registry in image reference",
            ReferenceError::Repository => "invalid repository name in image reference",
            ReferenceError::Uppercase => "repository name must be lowercase",
            ReferenceError::TooLong => "repository name must not be longer than 255 characters",
            ReferenceError::Tag => "invalid tag in image reference",
            ReferenceError::Digest => "invalid digest in image reference",
        })
    }
}

impl std::error::Error for ReferenceError {}

/// A parsed, normalized image reference: `registry/repository[:tag][@digest]`.
///
/// Invariants: the registry is never empty (`docker.io` by default, `index.docker.io` is
/// folded into it), official Docker Hub images carry the `library/` prefix, a reference
/// without a digest always has a tag (`latest` by default), and a digest is always
/// `sha256:<64 lowercase hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageReference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageReference {
    /// Parses and normalizes a reference. See the module docs for the grammar.
    pub fn parse(input: &str) -> Result<ImageReference, ReferenceError> {
        if input.is_empty() || input.trim() != input {
            return Err(ReferenceError::Empty);
        }
        let (name_tag, digest) = match input.split_once('@') {
            Some((n, d)) => {
                check_sha256_digest(d)?;
                (n, Some(d.to_owned()))
            }
            None => (input, None),
        };
        // The tag follows the last ':' after the last '/' (a ':' before it is a port).
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => (
                &name_tag[..last_slash + i],
                Some(&name_tag[last_slash + i + 1..]),
            ),
            None => (name_tag, None),
        };
        if let Some(tag) = tag {
            check_tag(tag)?;
        }
        let (registry, mut repository) = split_domain(name);
        check_registry(&registry)?;
        if repository.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase);
        }
        check_repository(&repository)?;
        if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            repository = format!("{OFFICIAL_REPO_PREFIX}{repository}");
        }
        if registry.len() + 1 + repository.len() > NAME_MAX_LEN {
            return Err(ReferenceError::TooLong);
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            (None, Some(_)) => None,
        };
        Ok(ImageReference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The registry host (with port, if any), e.g. `docker.io` or `127.0.0.1:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path, e.g. `library/alpine`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, when the reference has one.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest (`sha256:<hex>`), when the reference pins one.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `(registry, repository, tag, digest)`, for types that build on this one.
    pub fn into_parts(self) -> (String, String, Option<String>, Option<String>) {
        (self.registry, self.repository, self.tag, self.digest)
    }
}

/// Checks a digest is `sha256:<64 lowercase hex>`, the only form accepted.
pub fn check_sha256_digest(digest: &str) -> Result<(), ReferenceError> {
    let hex = digest
        .strip_prefix(SHA256_PREFIX)
        .ok_or(ReferenceError::Digest)?;
    check_sha256_hex(hex)
}

/// Checks `hex` is the 64 lowercase hex digits of a sha256 digest.
pub fn check_sha256_hex(hex: &str) -> Result<(), ReferenceError> {
    let ok = hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ReferenceError::Digest)
    }
}

/// docker's `splitDockerDomain`.
fn split_domain(name: &str) -> (String, String) {
    let (domain, remainder) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => (DEFAULT_REGISTRY, name),
    };
    let domain = if domain == LEGACY_DEFAULT_REGISTRY {
        DEFAULT_REGISTRY
    } else {
        domain
    };
    (domain.to_owned(), remainder.to_owned())
}

fn check_registry(registry: &str) -> Result<(), ReferenceError> {
    let err = ReferenceError::Registry;
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let (ip, after) = rest.split_once(']').ok_or(err.clone())?;
        ip.parse::<std::net::Ipv6Addr>().map_err(|_| err.clone())?;
        match after {
            "" => (None, None),
            p => (None, Some(p.strip_prefix(':').ok_or(err.clone())?)),
        }
    } else {
        match registry.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(registry), None),
        }
    };
    if let Some(host) = host {
        let label_ok = |l: &str| {
            let b = l.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        };
        if !host.split('.').all(label_ok) {
            return Err(err);
        }
    }
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(err);
    }
    Ok(())
}

fn check_repository(repository: &str) -> Result<(), ReferenceError> {
    let component_ok = |c: &str| {
        // [a-z0-9]+ (separator [a-z0-9]+)*, separator = '.' | '_' | '__' | '-'+
        let b = c.as_bytes();
        if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
            return false;
        }
        let mut i = 0;
        while i < b.len() {
            if is_alnum(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && !is_alnum(b[i]) {
                i += 1;
            }
            let sep = &c[start..i];
            let sep_ok = matches!(sep, "." | "_" | "__") || (sep.bytes().all(|s| s == b'-'));
            if !sep_ok {
                return false;
            }
        }
        true
    };
    if repository.split('/').all(component_ok) {
        Ok(())
    } else {
        Err(ReferenceError::Repository)
    }
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn check_tag(tag: &str) -> Result<(), ReferenceError> {
    let b = tag.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c));
    if ok { Ok(()) } else { Err(ReferenceError::Tag) }
}

/// An image reference that does not follow the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidReference;

impl fmt::Display for InvalidReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid image reference")
    }
}

impl std::error::Error for InvalidReference {}

/// Whether `reference` parses ([`ImageReference::parse`]): the edge check of `image` fields.
pub fn check_image_reference(reference: &str) -> Result<(), InvalidReference> {
    ImageReference::parse(reference)
        .map(|_| ())
        .map_err(|_| InvalidReference)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references() {
        for good in [
            "alpine",
            "alpine:3.20",
            "docker.io/library/alpine:latest",
            "127.0.0.1:5000/busybox:1",
            "localhost/a/b",
            "ghcr.io/org/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "registry.example.com:443/team/app:v1.2-rc_3",
        ] {
            assert!(check_image_reference(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "UPPER",
            "a::b",
            "a:",
            "/a",
            "a/",
            "a@sha256:xyz",
            " alpine",
            "a//b",
            "a:b:c/d",
        ] {
            assert!(check_image_reference(bad).is_err(), "{bad}");
        }
    }

    const HEX: &str = "3f1f5f7e0d1b2c3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f901234";

    fn parts(s: &str) -> (String, String, Option<String>, Option<String>) {
        ImageReference::parse(s).unwrap().into_parts()
    }

    #[test]
    fn names_normalize_like_docker() {
        let some = |s: &str| Some(s.to_string());
        let cases = [
            ("alpine", "docker.io", "library/alpine", some("latest")),
            ("alpine:3.20", "docker.io", "library/alpine", some("3.20")),
            (
                "index.docker.io/alpine",
                "docker.io",
                "library/alpine",
                some("latest"),
            ),
            ("user/team/app:v2", "docker.io", "user/team/app", some("v2")),
            ("quay.io/app", "quay.io", "app", some("latest")),
            (
                "localhost:5000/img",
                "localhost:5000",
                "img",
                some("latest"),
            ),
            ("[::1]:5000/a/b:c", "[::1]:5000", "a/b", some("c")),
            ("Foo/bar", "Foo", "bar", some("latest")),
        ];
        for (input, registry, repository, tag) in cases {
            assert_eq!(
                parts(input),
                (registry.to_string(), repository.to_string(), tag, None),
                "{input}"
            );
        }
        let digest = format!("sha256:{HEX}");
        assert_eq!(
            parts(&format!("alpine@{digest}")),
            (
                "docker.io".to_string(),
                "library/alpine".to_string(),
                None,
                Some(digest.clone())
            )
        );
        assert_eq!(
            parts(&format!("r.io/x:v1@{digest}")).2.as_deref(),
            Some("v1")
        );
    }

    #[test]
    fn refusals_name_the_part() {
        use ReferenceError as E;
        let cases = [
            ("", E::Empty),
            ("Alpine", E::Uppercase),
            ("alpine:-x", E::Tag),
            ("alpine:a/b", E::Registry),
            ("alpine@sha256:abc", E::Digest),
            ("a..b", E::Repository),
            ("reg-.io/x", E::Registry),
        ];
        for (input, want) in cases {
            assert_eq!(ImageReference::parse(input), Err(want), "{input:?}");
        }
        let long = format!("r.io/{}", "a".repeat(260));
        assert_eq!(ImageReference::parse(&long), Err(E::TooLong));
        assert_eq!(check_sha256_digest(&format!("sha256:{HEX}")), Ok(()));
        assert_eq!(check_sha256_hex(&HEX.to_uppercase()), Err(E::Digest));
    }
}
