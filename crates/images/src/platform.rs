//! Target platforms (`os/architecture[/variant]`) and how an image index entry is chosen.

use std::fmt;
use std::str::FromStr;

/// Why a platform string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform, expected os/arch[/variant]")]
pub struct InvalidPlatform;

/// An OCI platform, normalized the way containerd's `platforms.Normalize` does
/// (`x86_64` -> `amd64`, `aarch64` -> `arm64`, `arm64/v8` -> `arm64`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

impl Platform {
    /// A platform from its parts (normalized).
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        let os = os.to_ascii_lowercase();
        let architecture = architecture.to_ascii_lowercase();
        let (architecture, variant) = match (architecture.as_str(), variant) {
            ("x86_64" | "x86-64", _) => ("amd64".to_owned(), None),
            ("aarch64" | "arm64", Some("v8" | "8") | None) => ("arm64".to_owned(), None),
            ("aarch64", Some(v)) => ("arm64".to_owned(), Some(v.to_owned())),
            ("armhf", _) => ("arm".to_owned(), Some("v7".to_owned())),
            ("armel", _) => ("arm".to_owned(), Some("v6".to_owned())),
            (a, v) => (a.to_owned(), v.filter(|v| !v.is_empty()).map(str::to_owned)),
        };
        Platform {
            os,
            architecture,
            variant,
        }
    }

    /// Parses `os/arch[/variant]`, e.g. `linux/amd64` or `linux/arm/v7`.
    pub fn parse(s: &str) -> Result<Platform, InvalidPlatform> {
        let parts: Vec<&str> = s.split('/').collect();
        let part_ok = |p: &&str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(part_ok) {
            return Err(InvalidPlatform);
        }
        Ok(Platform::new(parts[0], parts[1], parts.get(2).copied()))
    }

    /// The platform of guests this host can run natively: `linux/<host architecture>`.
    pub fn host() -> Platform {
        Platform::new("linux", std::env::consts::ARCH, None)
    }

    /// Operating system, e.g. `linux`.
    pub fn os(&self) -> &str {
        &self.os
    }

    /// Architecture, e.g. `amd64`.
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// Variant, e.g. `v7`.
    pub fn variant(&self) -> Option<&str> {
        self.variant.as_deref()
    }

    /// Whether an image built for `other` runs on `self`. A wanted platform without a
    /// variant accepts any variant; with one, the variant must be equal.
    pub fn accepts(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && (self.variant.is_none() || self.variant == other.variant)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = InvalidPlatform;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Platform::parse(s)
    }
}

impl serde::Serialize for Platform {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Platform {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Platform::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_normalize() {
        assert_eq!(
            Platform::parse("linux/amd64").unwrap().to_string(),
            "linux/amd64"
        );
        assert_eq!(
            Platform::parse("linux/x86_64").unwrap().to_string(),
            "linux/amd64"
        );
        assert_eq!(
            Platform::parse("linux/aarch64").unwrap().to_string(),
            "linux/arm64"
        );
        assert_eq!(
            Platform::parse("linux/arm64/v8").unwrap().to_string(),
            "linux/arm64"
        );
        assert_eq!(
            Platform::parse("linux/arm/v7").unwrap().to_string(),
            "linux/arm/v7"
        );
        for bad in ["", "linux", "linux/", "/amd64", "a/b/c/d", "linux/am d64"] {
            assert_eq!(Platform::parse(bad), Err(InvalidPlatform), "{bad:?}");
        }
    }

    #[test]
    fn host_is_linux() {
        let host = Platform::host();
        assert_eq!(host.os(), "linux");
        assert!(!host.architecture().is_empty());
    }

    #[test]
    fn matching() {
        let amd = Platform::parse("linux/amd64").unwrap();
        let arm64 = Platform::parse("linux/arm64").unwrap();
        let arm7 = Platform::parse("linux/arm/v7").unwrap();
        let arm = Platform::parse("linux/arm").unwrap();
        assert!(amd.accepts(&Platform::new("linux", "amd64", None)));
        assert!(!amd.accepts(&arm64));
        assert!(arm64.accepts(&Platform::new("linux", "arm64", Some("v8"))));
        assert!(arm.accepts(&arm7));
        assert!(!arm7.accepts(&Platform::new("linux", "arm", Some("v6"))));
        assert!(!amd.accepts(&Platform::new("windows", "amd64", None)));
    }
}
