//! Instance ids: CUID2-format, 24 lowercase alphanumerics starting with a letter.

use std::fmt;

/// Length of ids this implementation generates (CUID2's default).
pub const ID_LEN: usize = 24;

/// A validated instance id. Safe to use as a path component.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(String);

/// The string is not an instance id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidId;

impl fmt::Display for InvalidId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid instance id")
    }
}

impl std::error::Error for InvalidId {}

impl InstanceId {
    /// Accepts exactly 24 characters of `[a-z0-9]`, the first a letter.
    pub fn parse(value: &str) -> Result<InstanceId, InvalidId> {
        let bytes = value.as_bytes();
        let valid = bytes.len() == ID_LEN
            && bytes[0].is_ascii_lowercase()
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if valid {
            Ok(InstanceId(value.to_string()))
        } else {
            Err(InvalidId)
        }
    }

    /// Builds an id from random bytes (the caller supplies entropy; this crate does no I/O).
    /// Uses the first byte for a letter and the rest for base-36 digits.
    pub fn from_random(random: [u8; ID_LEN]) -> InstanceId {
        const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut id = String::with_capacity(ID_LEN);
        // 256 % 26 and 256 % 36 bias is below 3%, irrelevant for uniqueness with 120+ bits.
        id.push(char::from(LETTERS[usize::from(random[0]) % LETTERS.len()]));
        for byte in &random[1..] {
            id.push(char::from(ALPHABET[usize::from(*byte) % ALPHABET.len()]));
        }
        InstanceId(id)
    }

    /// The id text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cuid2_shaped_ids_only() {
        assert!(InstanceId::parse("tz4a98xxat96iws9zmbrgj3a").is_ok());
        for bad in [
            "",
            "tz4a98xxat96iws9zmbrgj3",
            "tz4a98xxat96iws9zmbrgj3ab",
            "Tz4a98xxat96iws9zmbrgj3a",
            "4z4a98xxat96iws9zmbrgj3a",
            "tz4a98xxat96iws9zmbrgj/a",
            "../a98xxat96iws9zmbrgj3a",
        ] {
            assert!(InstanceId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn generated_ids_are_valid() {
        for seed in 0..=255u8 {
            let mut random = [0u8; ID_LEN];
            for (i, b) in random.iter_mut().enumerate() {
                *b = seed.wrapping_mul(31).wrapping_add(i as u8 * 7);
            }
            let id = InstanceId::from_random(random);
            assert!(InstanceId::parse(id.as_str()).is_ok(), "{id}");
        }
    }
}
