//! Image references for pulling: [`ImageRef`] (a normalized reference whose digest is a typed
//! [`Digest`]) and [`Digest`] itself.
//!
//! The grammar is the model's ([`hypedeck_model::reference`], docker's `distribution/reference`,
//! normalized like `ParseNormalizedNamed`: `alpine` -> `docker.io/library/alpine:latest`), the
//! same one `POST /instances` validates `image` with; this module only adds the typed digest,
//! printing, pinning and the loopback-registry rule.

use std::fmt;
use std::str::FromStr;

pub use hypedeck_model::reference::{DEFAULT_REGISTRY, DEFAULT_TAG, ReferenceError};
use hypedeck_model::reference::{ImageReference, check_sha256_digest, check_sha256_hex};

/// A content digest: `sha256:<64 lowercase hex>`, the only algorithm this crate verifies.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`.
    pub fn parse(s: &str) -> Result<Digest, ReferenceError> {
        check_sha256_digest(s)?;
        Ok(Digest(s.to_owned()))
    }

    /// A digest from its 64 lowercase hex digits (the cache directory name).
    pub fn from_hex(hex: &str) -> Result<Digest, ReferenceError> {
        check_sha256_hex(hex)?;
        Ok(Digest(format!("sha256:{hex}")))
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
    /// Parses and normalizes a reference with the model's grammar
    /// ([`ImageReference::parse`]).
    pub fn parse(input: &str) -> Result<ImageRef, ReferenceError> {
        let (registry, repository, tag, digest) = ImageReference::parse(input)?.into_parts();
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest: digest.as_deref().map(Digest::parse).transpose()?,
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

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1024))]

        /// Any text: a reference or an error, never a panic; what parses prints back to
        /// itself, and the model's edge check accepts exactly what parses (one grammar).
        #[test]
        fn references_parse_anything_and_round_trip(input in "\\PC{0,60}", name in "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,2}", tag in "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}") {
            if let Ok(r) = ImageRef::parse(&input) {
                let printed = r.to_string();
                proptest::prop_assert_eq!(ImageRef::parse(&printed).map(|r| r.to_string()), Ok(printed));
            }
            proptest::prop_assert_eq!(
                hypedeck_model::validate::check_image_reference(&input).is_ok(),
                ImageRef::parse(&input).is_ok(),
                "{:?}",
                input
            );
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

    /// The inputs where the model's edge check (`POST /instances`) and `ImageRef` (the puller,
    /// `POST /images`) used to disagree: both now give docker's `distribution/reference`
    /// answer (`ParseNormalizedNamed`), save `sha512`, which docker takes and we refuse since
    /// only sha256 can be verified. (input, accepted).
    #[test]
    fn one_grammar_decides_what_the_two_call_sites_used_to_disagree_on() {
        let upper = HEX.to_uppercase();
        let sha512 = format!("{HEX}{HEX}");
        let long = format!("r.io/{}", "a".repeat(260));
        let library_long = "a".repeat(250);
        let cases: Vec<(String, bool)> = vec![
            // Path component separators: docker allows `.`, `_`, `__` or runs of `-` only.
            // (The edge check used to accept these.)
            ("a..b".into(), false),
            ("a___b".into(), false),
            ("a._b".into(), false),
            ("a-.b".into(), false),
            // Registry host labels: alphanumerics with inner hyphens, none empty. (Edge: accepted.)
            ("reg-.io/x".into(), false),
            ("-reg.io/x".into(), false),
            ("a..io/x".into(), false),
            (".io/x".into(), false),
            // docker's splitDockerDomain: a first component with an uppercase letter is a host.
            // (Edge: refused.)
            ("Foo/bar".into(), true),
            // A bracketed IPv6 registry. (Edge: refused.)
            ("[::1]:5000/a".into(), true),
            ("[::1]/a".into(), true),
            // Digests: go-digest refuses unknown algorithms, uppercase and short hex. (Edge:
            // accepted.)
            (format!("alpine@sha256:{upper}"), false),
            (format!("alpine@sha256:{}", &HEX[..32]), false),
            (format!("alpine@md5:{}", &HEX[..32]), false),
            // Docker takes it; we cannot verify it. (Edge: accepted.)
            (format!("alpine@sha512:{sha512}"), false),
            // NameTotalLengthMax (255) on the normalized name. (Edge: accepted.)
            (long, false),
            (library_long, false),
        ];
        for (input, accepted) in &cases {
            assert_eq!(
                hypedeck_model::validate::check_image_reference(input).is_ok(),
                *accepted,
                "edge check on {input:?}"
            );
            assert_eq!(
                ImageRef::parse(input).is_ok(),
                *accepted,
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
