//! Keyed fingerprints of credential values: what the usage trail, the API and the UI show to
//! tell two values apart without showing either.
//!
//! A fingerprint is the first 16 hex digits (64 bits) of HMAC-SHA256 of the value under a key
//! of 32 random bytes per data dir. The trail file on disk holds fingerprints; without the
//! key, which lives only in the OS keychain (like the API token and the CA key), nobody who can
//! read that file can test guesses of a short value (a PIN, a short password) against it. With
//! 64 bits, two values of one instance share a fingerprint by accident with negligible
//! probability.
//!
//! One [`Fingerprinter`] per data dir: the daemon loads it once and gives it to the proxy
//! ([`ProxyOptions::fingerprints`](crate::ProxyOptions)) and the engine, so a fingerprint the
//! API reports for a value equals the one in the trail events of requests that carried it.

use hmac::{Hmac, KeyInit, Mac};
use hypedeck_secrets::{SecretStore, Sensitive};
use sha2::Sha256;

use crate::EgressError;

/// Key length in bytes.
const KEY_LEN: usize = 32;
/// Bytes of the MAC kept in a fingerprint (16 hex digits).
const FINGERPRINT_LEN: usize = 8;

/// Computes fingerprints under one key. Cheap to clone. `Debug` never shows the key.
#[derive(Clone)]
pub struct Fingerprinter {
    /// The MAC keyed once; cloned for each value.
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for Fingerprinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fingerprinter { key: <redacted> }")
    }
}

impl Fingerprinter {
    /// Fingerprints under `key` (tests, and callers that keep the key themselves).
    pub fn from_key(key: &[u8; KEY_LEN]) -> Fingerprinter {
        // HMAC pads a key shorter than the hash's block with zeros: keying with the padded
        // block is keying with the 32 bytes.
        let mut block = hmac::digest::Key::<Hmac<Sha256>>::default();
        block[..KEY_LEN].copy_from_slice(key);
        Fingerprinter {
            keyed: <Hmac<Sha256> as KeyInit>::new(&block),
        }
    }

    /// Fingerprints under a fresh random key that nothing else knows (throwaway proxies and
    /// engines: their fingerprints match no one else's).
    pub fn random() -> Result<Fingerprinter, EgressError> {
        Ok(Fingerprinter::from_key(&random_key()?))
    }

    /// Loads the key kept as the secret `account` in `store` (64 hex digits), or creates and
    /// stores one if there is none (or it is unreadable: fingerprints shown before then no
    /// longer match, nothing else is lost). Blocking (keychain IPC): async callers use
    /// `spawn_blocking`. A store that fails, as opposed to answering "no such key", is an
    /// error, never a reason to make a new key.
    pub fn load_or_create(
        store: &dyn SecretStore,
        account: &str,
    ) -> Result<Fingerprinter, EgressError> {
        match store
            .get(account)
            .map_err(EgressError::FingerprintKeyStore)?
        {
            Some(stored) => match parse_key(stored.expose()) {
                Some(key) => return Ok(Fingerprinter::from_key(&key)),
                None => tracing::warn!("fingerprint key unreadable; making a new one"),
            },
            None => tracing::info!("no fingerprint key yet; making one"),
        }
        let key = random_key()?;
        store
            .set(account, &Sensitive::new(hex(&key)))
            .map_err(EgressError::FingerprintKeyStore)?;
        Ok(Fingerprinter::from_key(&key))
    }

    /// The fingerprint of `value`: 16 lowercase hex digits.
    pub fn fingerprint(&self, value: &str) -> String {
        let mut mac = self.keyed.clone();
        mac.update(value.as_bytes());
        hex(&mac.finalize().into_bytes()[..FINGERPRINT_LEN])
    }
}

fn random_key() -> Result<[u8; KEY_LEN], EgressError> {
    let mut key = [0u8; KEY_LEN];
    getrandom::fill(&mut key).map_err(|_| EgressError::Random)?;
    Ok(key)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_key(text: &str) -> Option<[u8; KEY_LEN]> {
    let text = text.trim().as_bytes();
    if text.len() != 2 * KEY_LEN {
        return None;
    }
    let mut key = [0u8; KEY_LEN];
    for (byte, pair) in key.iter_mut().zip(text.chunks(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypedeck_secrets::{MemoryStore, SecretError};
    use sha2::Digest;

    const ACCOUNT: &str = "fingerprint-key/test";

    #[test]
    fn fingerprints_are_16_hex_of_hmac_sha256_under_the_key() {
        // RFC 4231-style known answer, computed independently (Python's hmac module):
        // HMAC-SHA256(key = 32 × 0x0b, "Hi There").
        let f = Fingerprinter::from_key(&[0x0b; 32]);
        assert_eq!(f.fingerprint("Hi There"), "198a607eb44bfbc6");
        let other = Fingerprinter::from_key(&[0x0c; 32]);
        assert_ne!(other.fingerprint("Hi There"), f.fingerprint("Hi There"));
        assert_ne!(f.fingerprint("sk-1"), f.fingerprint("sk-2"));
        assert_eq!(f.fingerprint("sk-1"), f.clone().fingerprint("sk-1"));
        // Not the unkeyed digest anyone could recompute from a guess.
        let plain: String = Sha256::digest(b"123456")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let fp = f.fingerprint("123456");
        assert_eq!(fp.len(), 16);
        assert!(
            fp.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert!(!plain.starts_with(&fp[..8]), "{fp}");
    }

    #[test]
    fn the_key_is_made_once_kept_in_the_store_and_never_shown() {
        let store = MemoryStore::new();
        let first = Fingerprinter::load_or_create(&store, ACCOUNT).unwrap();
        let stored = store.get(ACCOUNT).unwrap().expect("key stored");
        assert_eq!(parse_key(stored.expose()).map(|k| k.len()), Some(32));
        let second = Fingerprinter::load_or_create(&store, ACCOUNT).unwrap();
        assert_eq!(second.fingerprint("sk-x"), first.fingerprint("sk-x"));
        assert_eq!(store.get(ACCOUNT).unwrap().unwrap(), stored, "not remade");
        let key = parse_key(stored.expose()).unwrap();
        assert_eq!(
            Fingerprinter::from_key(&key).fingerprint("sk-x"),
            first.fingerprint("sk-x")
        );
        // Another data dir (account) gets another key.
        let elsewhere = Fingerprinter::load_or_create(&store, "fingerprint-key/other").unwrap();
        assert_ne!(elsewhere.fingerprint("sk-x"), first.fingerprint("sk-x"));
        let text = format!("{first:?}");
        assert_eq!(text, "Fingerprinter { key: <redacted> }");
        assert!(!text.contains(&stored.expose()[..8]));
    }

    #[test]
    fn an_unreadable_key_is_replaced() {
        let store = MemoryStore::new();
        store
            .set(ACCOUNT, &Sensitive::new("not a key".into()))
            .unwrap();
        let f = Fingerprinter::load_or_create(&store, ACCOUNT).unwrap();
        let key = parse_key(store.get(ACCOUNT).unwrap().unwrap().expose()).expect("replaced");
        assert_eq!(
            Fingerprinter::from_key(&key).fingerprint("v"),
            f.fingerprint("v")
        );
    }

    #[derive(Debug)]
    struct Broken;

    impl SecretStore for Broken {
        fn set(&self, _: &str, _: &Sensitive<String>) -> Result<(), SecretError> {
            Err(SecretError::Unavailable("locked".into()))
        }
        fn get(&self, _: &str) -> Result<Option<Sensitive<String>>, SecretError> {
            Err(SecretError::Unavailable("locked".into()))
        }
        fn delete(&self, _: &str) -> Result<(), SecretError> {
            Err(SecretError::Unavailable("locked".into()))
        }
    }

    #[test]
    fn a_failing_store_is_an_error_not_a_new_key() {
        let err = Fingerprinter::load_or_create(&Broken, ACCOUNT).unwrap_err();
        assert!(matches!(err, EgressError::FingerprintKeyStore(_)), "{err}");
    }
}
