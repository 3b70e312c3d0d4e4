//! Image references: the OCI distribution reference grammar.

use std::fmt;

/// An image reference that does not follow the distribution grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidReference;

impl fmt::Display for InvalidReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid image reference")
    }
}

impl std::error::Error for InvalidReference {}

/// A conservative check of the OCI distribution reference grammar:
/// `[host[:port]/]path[:tag][@algo:hex]`, lower-case path components.
pub fn check_image_reference(reference: &str) -> Result<(), InvalidReference> {
    if reference.is_empty() || reference.len() > 4096 || reference.trim() != reference {
        return Err(InvalidReference);
    }
    let (name_tag, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    if let Some(d) = digest {
        let (algo, hex) = d.split_once(':').ok_or(InvalidReference)?;
        let algo_ok = !algo.is_empty()
            && algo
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
        let hex_ok = hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit());
        if !algo_ok || !hex_ok {
            return Err(InvalidReference);
        }
    }
    // A tag is after the last ':' that follows the last '/'.
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_tag[..last_slash + i],
            Some(&name_tag[last_slash + i + 1..]),
        ),
        None => (name_tag, None),
    };
    if let Some(tag) = tag {
        let b = tag.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c));
        if !ok {
            return Err(InvalidReference);
        }
    }
    let mut components: Vec<&str> = name.split('/').collect();
    if components.len() > 1 {
        let first = components[0];
        let is_host = first.contains('.') || first.contains(':') || first == "localhost";
        if is_host {
            let (host, port) = match first.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (first, None),
            };
            let host_ok = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
            let port_ok =
                port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
            if !host_ok || !port_ok {
                return Err(InvalidReference);
            }
            components.remove(0);
        }
    }
    if components.is_empty() {
        return Err(InvalidReference);
    }
    for component in components {
        let b = component.as_bytes();
        let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        if b.is_empty() || !alnum(&b[0]) || !alnum(&b[b.len() - 1]) {
            return Err(InvalidReference);
        }
        if !b.iter().all(|c| alnum(c) || b"._-".contains(c)) {
            return Err(InvalidReference);
        }
    }
    Ok(())
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
}
