//! The spec's string patterns (names, platforms, tags) and their predicates, shared by the
//! schema checker and handler validation.

/// The instance name pattern, as the spec spells it.
pub const NAME_PATTERN: &str = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$";
/// Maximum name length.
pub const NAME_MAX_LEN: usize = 63;
/// The platform pattern, as the spec spells it.
pub const PLATFORM_PATTERN: &str = "^[a-z0-9]+/[a-z0-9]+(/[a-z0-9.]+)?$";
/// Tag key pattern.
pub const TAG_KEY_PATTERN: &str = "^[A-Za-z0-9 _.:/=+@-]+$";
/// Tag value pattern.
pub const TAG_VALUE_PATTERN: &str = "^[A-Za-z0-9 _.:/=+@-]*$";

/// Whether `name` matches the name pattern (length is checked separately by `maxLength`).
pub fn is_valid_name_pattern(name: &str) -> bool {
    let b = name.as_bytes();
    let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.first().is_some_and(edge)
        && b.last().is_some_and(edge)
        && b.iter().all(|c| edge(c) || *c == b'-')
}

/// Whether `name` matches `^[a-z0-9]([a-z0-9-]*[a-z0-9])?$` and is at most 63 characters.
pub fn is_valid_name(name: &str) -> bool {
    name.len() <= NAME_MAX_LEN && is_valid_name_pattern(name)
}

/// Whether `platform` matches `^[a-z0-9]+/[a-z0-9]+(/[a-z0-9.]+)?$`.
pub fn is_valid_platform_syntax(platform: &str) -> bool {
    let parts: Vec<&str> = platform.split('/').collect();
    let word = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    match parts.as_slice() {
        [os, arch] => word(os) && word(arch),
        [os, arch, variant] => {
            word(os)
                && word(arch)
                && !variant.is_empty()
                && variant
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.')
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["a", "0", "web-1", "a-b-c", &"a".repeat(63)] {
            assert!(is_valid_name(good), "{good}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64), "é"] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }
}
