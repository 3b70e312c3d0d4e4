//! The leak guard: finds a credential's real value — or its base64, in either alphabet and at
//! any alignment inside a longer base64 text — in what a request is about to send to a host
//! that credential is not for. Streams are scanned across chunk boundaries by holding back the
//! few bytes that could start a match until the next chunk shows they do not, so a value split
//! over two chunks is caught before any part of it is sent.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::{Bytes, BytesMut};

/// Values shorter than this are not guarded: they would match ordinary text.
pub(crate) const MIN_GUARDED_LEN: usize = 8;

/// The byte strings that betray `secret`: itself, and the stable middle of its base64 at each
/// of the three alignments it can have in a longer base64 text, in both alphabets.
pub(crate) fn needles(secret: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![secret.to_vec()];
    for pad in 0..3usize {
        let mut input = vec![0u8; pad];
        input.extend_from_slice(secret);
        // Characters that depend only on the secret: skip the group mixed with the filler and
        // the last, partial group (whose characters depend on what follows).
        let start = if pad > 0 { 4 } else { 0 };
        let end = input.len() / 3 * 4;
        if end <= start + 4 {
            continue;
        }
        for encoded in [STANDARD.encode(&input), URL_SAFE_NO_PAD.encode(&input)] {
            let part = encoded.as_bytes()[start..end].to_vec();
            if !out.contains(&part) {
                out.push(part);
            }
        }
    }
    out
}

/// One guarded value: the index of its credential (caller's numbering) and its needles.
#[derive(Debug, Clone)]
pub(crate) struct Guard {
    pub(crate) credential: usize,
    pub(crate) needles: Vec<memchr::memmem::Finder<'static>>,
}

impl Guard {
    pub(crate) fn new(credential: usize, secret: &[u8]) -> Guard {
        Guard {
            credential,
            needles: needles(secret)
                .into_iter()
                .map(|n| memchr::memmem::Finder::new(&n).into_owned())
                .collect(),
        }
    }

    fn longest(&self) -> usize {
        self.needles
            .iter()
            .map(|n| n.needle().len())
            .max()
            .unwrap_or(0)
    }

    fn found_in(&self, haystack: &[u8]) -> bool {
        self.needles.iter().any(|n| n.find(haystack).is_some())
    }
}

/// The first guard (credential index) whose value appears in `haystack`.
pub(crate) fn find(guards: &[Guard], haystack: &[u8]) -> Option<usize> {
    guards
        .iter()
        .find(|g| g.found_in(haystack))
        .map(|g| g.credential)
}

/// Scans a byte stream chunk by chunk.
#[derive(Debug)]
pub(crate) struct Scanner {
    guards: Vec<Guard>,
    /// Bytes held back: the end of what was seen that could begin a match.
    held: BytesMut,
    keep: usize,
}

impl Scanner {
    pub(crate) fn new(guards: Vec<Guard>) -> Scanner {
        let keep = guards
            .iter()
            .map(Guard::longest)
            .max()
            .unwrap_or(1)
            .saturating_sub(1);
        Scanner {
            guards,
            held: BytesMut::new(),
            keep,
        }
    }

    /// Takes the next chunk; returns what is now safe to send, or the credential found.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Result<Bytes, usize> {
        self.held.extend_from_slice(chunk);
        if let Some(found) = find(&self.guards, &self.held) {
            return Err(found);
        }
        let release = self.held.len().saturating_sub(self.keep);
        Ok(self.held.split_to(release).freeze())
    }

    /// The end of the stream: whatever is still held (already scanned).
    pub(crate) fn finish(&mut self) -> Bytes {
        self.held.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "sk-fixture-0123456789abcdef";

    fn guards() -> Vec<Guard> {
        vec![Guard::new(7, SECRET.as_bytes())]
    }

    #[test]
    fn finds_the_value_and_its_base64_anywhere() {
        let g = guards();
        assert_eq!(find(&g, format!("key={SECRET}&x=1").as_bytes()), Some(7));
        for prefix in ["", "a", "ab", "user:"] {
            let text = format!("{prefix}{SECRET}trailing");
            for encoded in [STANDARD.encode(&text), URL_SAFE_NO_PAD.encode(&text)] {
                assert_eq!(
                    find(&g, format!("Basic {encoded}").as_bytes()),
                    Some(7),
                    "{prefix:?} {encoded}"
                );
            }
        }
        assert_eq!(find(&g, b"mock-OPENAI_KEY and other text"), None);
        assert_eq!(find(&g, &SECRET.as_bytes()[..SECRET.len() - 1]), None);
    }

    #[test]
    fn a_value_split_across_chunks_is_caught_before_any_of_it_is_released() {
        let body = format!("{{\"prompt\": \"hi\", \"leak\": \"{SECRET}\"}}");
        for cut in 1..body.len() {
            let mut s = Scanner::new(guards());
            let mut sent = Vec::new();
            let first = s.push(&body.as_bytes()[..cut]);
            let outcome = first.and_then(|b| {
                sent.extend_from_slice(&b);
                s.push(&body.as_bytes()[cut..])
            });
            assert_eq!(outcome.map(|_| ()), Err(7), "cut at {cut}");
            // Whatever went out holds no whole needle, and not the whole secret.
            assert!(
                !String::from_utf8_lossy(&sent).contains(SECRET),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn clean_streams_pass_whole_and_in_order() {
        let mut s = Scanner::new(guards());
        let mut out = Vec::new();
        for chunk in [&b"hello "[..], b"wor", b"ld, nothing secret here", b"!"] {
            out.extend_from_slice(&s.push(chunk).unwrap());
        }
        out.extend_from_slice(&s.finish());
        assert_eq!(out, b"hello world, nothing secret here!");
    }

    proptest::proptest! {
        #[test]
        fn any_secret_inside_base64_of_any_text_is_found(
            secret in "[ -~]{8,40}",
            before in proptest::collection::vec(proptest::num::u8::ANY, 0..9),
            after in proptest::collection::vec(proptest::num::u8::ANY, 0..9),
        ) {
            let g = vec![Guard::new(0, secret.as_bytes())];
            let mut text = before.clone();
            text.extend_from_slice(secret.as_bytes());
            text.extend_from_slice(&after);
            proptest::prop_assert_eq!(find(&g, STANDARD.encode(&text).as_bytes()), Some(0));
            proptest::prop_assert_eq!(find(&g, URL_SAFE_NO_PAD.encode(&text).as_bytes()), Some(0));
            proptest::prop_assert_eq!(find(&g, &text), Some(0));
        }
    }
}
