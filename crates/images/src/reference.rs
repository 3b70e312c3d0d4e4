//! Image references, parsed and normalized like docker's `distribution/reference`
//! (`ParseNormalizedNamed`): `alpine` -> `docker.io/library/alpine:latest`.
//!
//! Grammar (as in distribution/reference/regexp.go):
//! - domain: `host[:port]` where host is dot-separated `[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?`
//!   labels or a bracketed IPv6 literal; the first path component is a domain only when it
//!   contains `.` or `:`, is `localhost`, or has an uppercase letter (docker's rule);
//! - path components: `[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*`, `/`-separated, lowercase only;
//! - tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`;
//! - digest: `algorithm:hex`; only `sha256` with 64 lowercase hex digits is accepted, since it
//!   is the only algorithm we can verify.

use std::fmt;
use std::str::FromStr;

/// The registry bare names resolve to.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag used when a reference names neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";
const LEGACY_DEFAULT_REGISTRY: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
/// distribution/reference's `NameTotalLengthMax`.
const NAME_MAX_LEN: usize = 255;

/// Why an image reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// Empty input, or surrounding whitespace.
    #[error("image reference is empty or has surrounding whitespace")]
    Empty,
    /// The registry part is not `host[:port]`.
    #[error("invalid registry in image reference")]
    Registry,
    /// The repository path does not follow the grammar.
    #[error("invalid repository name in image reference")]
    Repository,
    /// The repository path has uppercase letters (docker refuses these too).
    #[error("repository name must be lowercase")]
    Uppercase,
    /// `registry/repository` is longer than 255 characters.
    #[error("repository name must not be longer than 255 characters")]
    TooLong,
    /// The tag does not follow the grammar.
    #[error("invalid tag in image reference")]
    Tag,
    /// The digest is not `sha256:` followed by 64 lowercase hex digits.
    #[error("invalid digest in image reference")]
    Digest,
}

/// A content digest: `sha256:<64 lowercase hex>`, the only algorithm this crate verifies.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`.
    pub fn parse(s: &str) -> Result<Digest, ReferenceError> {
        let hex = s.strip_prefix("sha256:").ok_or(ReferenceError::Digest)?;
        Digest::from_hex(hex)
    }

    /// A digest from its 64 lowercase hex digits (the cache directory name).
    pub fn from_hex(hex: &str) -> Result<Digest, ReferenceError> {
        let ok = hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok {
            Ok(Digest(format!("sha256:{hex}")))
        } else {
            Err(ReferenceError::Digest)
        }
    }

    /// The sha256 digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest::from_sha256(sha2::Sha256::digest(bytes).as_slice())
    }

    /// The digest whose raw sha256 output is `raw` (32 bytes).
    pub(crate) fn from_sha256(raw: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(raw)))
    }

    /// The full `sha256:<hex>` form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex digits, without the algorithm.
    pub fn hex(&self) -> &str {
        // The constructor guarantees the `sha256:` prefix.
        &self.0["sha256:".len()..]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Digest {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A normalized image reference: `registry/repository[:tag][@digest]`.
///
/// Invariants: the registry is never empty (`docker.io` by default, `index.docker.io` is
/// folded into it), official Docker Hub images carry the `library/` prefix, and a reference
/// without a digest always has a tag (`latest` by default).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// Whether a registry host (`host[:port]`, `[v6]:port`) is on the loopback interface.
pub fn is_loopback_host(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => registry.split(':').next().unwrap_or(""),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl ImageRef {
    /// Parses and normalizes a reference. See the module docs for the grammar.
    pub fn parse(input: &str) -> Result<ImageRef, ReferenceError> {
        if input.is_empty() || input.trim() != input {
            return Err(ReferenceError::Empty);
        }
        let (name_tag, digest) = match input.split_once('@') {
            Some((n, d)) => (n, Some(Digest::parse(d)?)),
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
        Ok(ImageRef {
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

    /// The digest, when the reference pins one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `registry/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same repository pinned at `digest` (`registry/repository@digest`, no tag).
    pub fn pinned(&self, digest: Digest) -> ImageRef {
        ImageRef {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest),
        }
    }

    /// Whether the registry is on the loopback interface (`localhost`, `127.0.0.0/8`, `[::1]`),
    /// the only registries this crate talks plain HTTP to.
    pub fn is_loopback_registry(&self) -> bool {
        is_loopback_host(&self.registry)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageRef {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
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

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1024))]

        /// Any text: a reference or an error, never a panic; what parses prints back to
        /// itself, and the model's edge check accepts it too (the two grammars agree).
        #[test]
        fn references_parse_anything_and_round_trip(input in "\\PC{0,60}", name in "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,2}", tag in "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}") {
            if let Ok(r) = ImageRef::parse(&input) {
                let printed = r.to_string();
                proptest::prop_assert_eq!(ImageRef::parse(&printed).map(|r| r.to_string()), Ok(printed));
            }
            let candidate = format!("{name}:{tag}");
            let parsed = ImageRef::parse(&candidate);
            proptest::prop_assert!(parsed.is_ok(), "{}: {:?}", candidate, parsed);
            proptest::prop_assert!(hypedeck_model::validate::check_image_reference(&candidate).is_ok(), "{}", candidate);
        }
    }

    const HEX: &str = "3f1f5f7e0d1b2c3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f901234";

    fn norm(s: &str) -> String {
        ImageRef::parse(s).unwrap().to_string()
    }

    #[test]
    fn bare_names_normalize_to_docker_hub_library() {
        assert_eq!(norm("alpine"), "docker.io/library/alpine:latest");
        assert_eq!(norm("alpine:3.20"), "docker.io/library/alpine:3.20");
        assert_eq!(norm("library/alpine"), "docker.io/library/alpine:latest");
        assert_eq!(
            norm("index.docker.io/alpine"),
            "docker.io/library/alpine:latest"
        );
        assert_eq!(norm("docker.io/alpine"), "docker.io/library/alpine:latest");
        assert_eq!(norm("user/app"), "docker.io/user/app:latest");
        assert_eq!(norm("user/team/app:v2"), "docker.io/user/team/app:v2");
    }

    #[test]
    fn explicit_registries_stay() {
        assert_eq!(
            norm("127.0.0.1:5000/ci/hello:v1"),
            "127.0.0.1:5000/ci/hello:v1"
        );
        assert_eq!(norm("ghcr.io/org/img"), "ghcr.io/org/img:latest");
        assert_eq!(norm("localhost/img"), "localhost/img:latest");
        assert_eq!(norm("localhost:5000/img"), "localhost:5000/img:latest");
        assert_eq!(norm("[::1]:5000/a/b:c"), "[::1]:5000/a/b:c");
        // Single-component names on other registries get no `library/`.
        assert_eq!(norm("quay.io/app"), "quay.io/app:latest");
    }

    #[test]
    fn digest_references() {
        let r = ImageRef::parse(&format!("alpine@sha256:{HEX}")).unwrap();
        assert_eq!(
            r.to_string(),
            format!("docker.io/library/alpine@sha256:{HEX}")
        );
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().hex(), HEX);
        let both = ImageRef::parse(&format!("127.0.0.1:5000/x:v1@sha256:{HEX}")).unwrap();
        assert_eq!(both.tag(), Some("v1"));
        assert_eq!(
            both.pinned(both.digest().unwrap().clone()).to_string(),
            format!("127.0.0.1:5000/x@sha256:{HEX}")
        );
    }

    #[test]
    fn bad_references_are_refused_with_a_reason() {
        use ReferenceError as E;
        let cases = [
            ("", E::Empty),
            (" alpine", E::Empty),
            ("Alpine", E::Uppercase),
            ("docker.io/Library/alpine", E::Uppercase),
            ("alpine:", E::Tag),
            ("alpine:-x", E::Tag),
            ("alpine:a/b", E::Registry),
            ("alpine@sha256:abc", E::Digest),
            ("alpine@md5:0123456789abcdef0123456789abcdef", E::Digest),
            ("-alpine", E::Repository),
            ("a//b", E::Repository),
            ("a/b/", E::Repository),
            ("a..b", E::Repository),
            ("a___b", E::Repository),
            ("reg-.io/x", E::Registry),
            ("reg.io:abc/x", E::Registry),
            ("[::1/x", E::Registry),
            ("../x", E::Registry),
        ];
        for (input, want) in cases {
            assert_eq!(ImageRef::parse(input), Err(want.clone()), "{input:?}");
        }
        let long = format!("r.io/{}", "a".repeat(260));
        assert_eq!(ImageRef::parse(&long), Err(E::TooLong));
        // Separators that the grammar allows.
        for ok in ["a.b", "a_b", "a__b", "a---b", "a-b/c.d_e"] {
            ImageRef::parse(ok).unwrap();
        }
    }

    /// Where the model's edge check (`check_image_reference`, which `POST /instances` runs) and
    /// [`ImageRef::parse`] (which the puller and `POST /images` run) disagree today, with what
    /// docker's `distribution/reference` (`ParseNormalizedNamed`) does: (input, edge check
    /// accepts, `ImageRef` accepts, docker accepts).
    #[test]
    fn the_two_grammars_differ_today() {
        let upper = HEX.to_uppercase();
        let sha512 = format!("{HEX}{HEX}");
        let long = format!("r.io/{}", "a".repeat(260));
        let library_long = "a".repeat(250);
        let cases: Vec<(String, bool, bool, bool)> = vec![
            // Path component separators: docker allows `.`, `_`, `__` or runs of `-` only.
            ("a..b".into(), true, false, false),
            ("a___b".into(), true, false, false),
            ("a._b".into(), true, false, false),
            ("a-.b".into(), true, false, false),
            // Registry host labels: alphanumerics with inner hyphens, none empty.
            ("reg-.io/x".into(), true, false, false),
            ("-reg.io/x".into(), true, false, false),
            ("a..io/x".into(), true, false, false),
            (".io/x".into(), true, false, false),
            // docker's splitDockerDomain: a first component with an uppercase letter is a host.
            ("Foo/bar".into(), false, true, true),
            // A bracketed IPv6 registry.
            ("[::1]:5000/a".into(), false, true, true),
            ("[::1]/a".into(), false, true, true),
            // Digests: go-digest refuses unknown algorithms, uppercase and short hex.
            (format!("alpine@sha256:{upper}"), true, false, false),
            (format!("alpine@sha256:{}", &HEX[..32]), true, false, false),
            (format!("alpine@md5:{}", &HEX[..32]), true, false, false),
            (format!("alpine@sha512:{sha512}"), true, false, true),
            // NameTotalLengthMax (255) on the normalized name.
            (long, true, false, false),
            (library_long, true, false, false),
        ];
        for (input, edge, image_ref, _docker) in &cases {
            assert_eq!(
                hypedeck_model::validate::check_image_reference(input).is_ok(),
                *edge,
                "edge check on {input:?}"
            );
            assert_eq!(
                ImageRef::parse(input).is_ok(),
                *image_ref,
                "ImageRef on {input:?}"
            );
        }
    }

    #[test]
    fn loopback_registries() {
        let lo = |s: &str| ImageRef::parse(s).unwrap().is_loopback_registry();
        assert!(lo("127.0.0.1:5000/x"));
        assert!(lo("127.1.2.3/x"));
        assert!(lo("localhost:5000/x"));
        assert!(lo("[::1]:5000/x"));
        assert!(!lo("alpine"));
        assert!(!lo("10.0.0.1:5000/x"));
        assert!(!lo("localhost.evil.com/x"));
        assert!(!lo("[::2]:5000/x"));
    }

    #[test]
    fn digests() {
        let d = Digest::parse(&format!("sha256:{HEX}")).unwrap();
        assert_eq!(d.hex(), HEX);
        assert_eq!(Digest::from_hex(HEX).unwrap(), d);
        assert!(Digest::parse(&format!("sha256:{}", HEX.to_uppercase())).is_err());
        assert_eq!(
            Digest::of(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
