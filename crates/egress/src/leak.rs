//! The leak guard: finds a credential's real value in what a request is about to send to a host
//! that credential is not for.
//!
//! # What counts as the value
//!
//! The value itself (also all lowercase or all uppercase: header names reach the upstream
//! lowercased), its base64 (standard and URL-safe alphabets, at any alignment inside a longer
//! base64 text) and its hex (lowercase and uppercase digits). Each of those is also found
//! under one layer of percent-encoding (`%xx`, any mix of encoded and plain bytes), and, when a
//! guarded value contains a space, with `+` read as a space (form and query encoding).
//!
//! # Where
//!
//! - The request head ([`LeakCheck::find_in_head`]): the target (path and query), every header
//!   name and value, and the same joined without separators in the order they are sent, so a
//!   value cut into pieces across consecutive headers (or consecutive instances of one header,
//!   or a header's name and its value) is found whole.
//! - The body ([`Scanner`]), as it streams: the few bytes that could begin a match are held back
//!   until the next chunk shows they do not, so a value split over two chunks is caught before
//!   any part of it is sent.
//! - Destination names ([`LeakCheck::find`] on the CONNECT host or the intercepted name).
//!
//! # Cost
//!
//! Nothing at all for a request whose destination may receive every credential, or for an
//! instance without credentials: the rule set gives no [`LeakCheck`] then. Otherwise one
//! Aho-Corasick pass (leftmost-first, SIMD-prefiltered) over the text per reading: as it is,
//! and decoded only when the text holds a `%` (or a `+`, when that matters), whatever the
//! number of credentials and encodings. The automaton for each set of credentials looked for
//! is built once per rule set.

use std::sync::{Arc, Mutex};

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::{Bytes, BytesMut};
use http::HeaderMap;

/// Values shorter than this are not guarded: they would match ordinary text.
pub(crate) const MIN_GUARDED_LEN: usize = 8;

const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// The byte strings that betray `secret`: itself (as is, lowercased, uppercased), the stable
/// middle of its base64 at each of the three alignments it can have in a longer base64 text in
/// both alphabets, and its hex in lowercase and uppercase digits.
pub(crate) fn needles(secret: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut add = |needle: Vec<u8>| {
        if !out.contains(&needle) {
            out.push(needle);
        }
    };
    add(secret.to_vec());
    add(secret.to_ascii_lowercase());
    add(secret.to_ascii_uppercase());
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
            add(encoded.as_bytes()[start..end].to_vec());
        }
    }
    for digits in [HEX_LOWER, HEX_UPPER] {
        add(secret
            .iter()
            .flat_map(|b| [digits[usize::from(b >> 4)], digits[usize::from(b & 0xf)]])
            .collect());
    }
    out
}

/// Automata kept per guard, one per set of credentials looked for (a few per instance: one per
/// group of hosts its credentials share). Past this, a check builds its own.
const SEARCHERS_KEPT: usize = 32;

/// The needles of every guarded credential of a rule set, and the automata that search for
/// the needles of some of them in one pass.
///
/// `Debug` shows only counts (needles and automata hold the values).
pub(crate) struct LeakGuard {
    /// Every needle with its credential (caller's numbering).
    needles: Vec<(usize, Vec<u8>)>,
    /// The longest needle, in bytes.
    longest: usize,
    /// Whether some value contains a space (then `+` is also read as one).
    plus: bool,
    /// Automata built so far, by the credentials they look for (indexed by credential).
    searchers: Mutex<Vec<(Vec<bool>, Arc<Searcher>)>>,
}

/// One automaton over the needles of some credentials.
struct Searcher {
    automaton: AhoCorasick,
    /// The credential of each needle, by pattern id.
    owner: Vec<usize>,
}

impl std::fmt::Debug for LeakGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeakGuard")
            .field("needles", &self.needles.len())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Searcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Searcher")
            .field("needles", &self.owner.len())
            .finish_non_exhaustive()
    }
}

impl Searcher {
    /// An automaton over the needles of the credentials `wanted` says. Leftmost-first: every
    /// needle in it is a leak, so any match will do, and it lets the search skip ahead with
    /// SIMD prefilters.
    fn build(
        needles: &[(usize, Vec<u8>)],
        wanted: &[bool],
    ) -> Result<Searcher, aho_corasick::BuildError> {
        let (owner, patterns): (Vec<usize>, Vec<&[u8]>) = needles
            .iter()
            .filter(|(c, _)| wanted.get(*c).copied().unwrap_or(false))
            .map(|(c, n)| (*c, n.as_slice()))
            .unzip();
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostFirst)
            .build(patterns)?;
        Ok(Searcher { automaton, owner })
    }
}

impl LeakGuard {
    /// A guard for `secrets`, each `(credential index, value)`. `Ok(None)`: nothing to guard.
    /// Builds the automaton for all of them once, so a value too large to search for is an
    /// error here rather than on a request.
    pub(crate) fn new(
        secrets: &[(usize, &[u8])],
    ) -> Result<Option<LeakGuard>, aho_corasick::BuildError> {
        let needles: Vec<(usize, Vec<u8>)> = secrets
            .iter()
            .flat_map(|&(c, secret)| needles(secret).into_iter().map(move |n| (c, n)))
            .collect();
        if needles.is_empty() {
            return Ok(None);
        }
        let mut all = vec![false; secrets.iter().map(|s| s.0 + 1).max().unwrap_or(0)];
        for &(c, _) in secrets {
            all[c] = true;
        }
        let searcher = Searcher::build(&needles, &all)?;
        Ok(Some(LeakGuard {
            longest: needles.iter().map(|n| n.1.len()).max().unwrap_or(0),
            plus: secrets.iter().any(|s| s.1.contains(&b' ')),
            needles,
            searchers: Mutex::new(vec![(all, Arc::new(searcher))]),
        }))
    }

    /// The automaton for the credentials `wanted` says (built on first use, then kept).
    fn searcher(&self, wanted: Vec<bool>) -> Arc<Searcher> {
        let mut kept = self.searchers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, searcher)) = kept.iter().find(|(w, _)| *w == wanted) {
            return searcher.clone();
        }
        match Searcher::build(&self.needles, &wanted) {
            Ok(searcher) => {
                let searcher = Arc::new(searcher);
                if kept.len() < SEARCHERS_KEPT {
                    kept.push((wanted, searcher.clone()));
                }
                searcher
            }
            // Fewer needles than the set built in `new`: cannot fail. Were it to, searching for
            // every credential errs on the side of refusing.
            Err(_) => kept[0].1.clone(),
        }
    }
}

/// The leak guard as one request sees it: the needles of the credentials its destination may
/// not receive.
#[derive(Debug, Clone)]
pub(crate) struct LeakCheck {
    searcher: Arc<Searcher>,
    /// Longest needle, and whether `+` may stand for a space (of the whole guard).
    longest: usize,
    plus: bool,
}

impl LeakCheck {
    /// The check for a destination that may not receive the credentials `forbidden` says (by
    /// credential index); `None` when it may receive every guarded one (nothing to look for).
    pub(crate) fn new(guard: &LeakGuard, forbidden: Vec<bool>) -> Option<LeakCheck> {
        let looked_for = |c: &usize| forbidden.get(*c).copied().unwrap_or(false);
        if !guard.needles.iter().any(|(c, _)| looked_for(c)) {
            return None;
        }
        Some(LeakCheck {
            searcher: guard.searcher(forbidden),
            longest: guard.longest,
            plus: guard.plus,
        })
    }

    /// The credential of the first needle in `text` as it is.
    fn find_plain(&self, text: &[u8]) -> Option<usize> {
        let found = self.searcher.automaton.find(text)?;
        self.searcher.owner.get(found.pattern().as_usize()).copied()
    }

    /// The first forbidden credential found in `text`, as it is or percent-decoded (and with
    /// `+` as a space when that matters). `scratch` holds the decoded text.
    pub(crate) fn find_with(&self, text: &[u8], scratch: &mut Vec<u8>) -> Option<usize> {
        if let Some(found) = self.find_plain(text) {
            return Some(found);
        }
        let percent = memchr::memchr(b'%', text).is_some();
        if percent {
            percent_decode(text, false, scratch);
            if let Some(found) = self.find_plain(scratch) {
                return Some(found);
            }
        }
        if self.plus && (percent || memchr::memchr(b'+', text).is_some()) {
            percent_decode(text, true, scratch);
            return self.find_plain(scratch);
        }
        None
    }

    /// [`find_with`](Self::find_with) for a one-off text.
    pub(crate) fn find(&self, text: &[u8]) -> Option<usize> {
        self.find_with(text, &mut Vec::new())
    }

    /// The first forbidden credential the request head carries: in the target, in a header
    /// name or value, or cut across the target, names and values in the order they are sent.
    pub(crate) fn find_in_head(&self, target: &[u8], headers: &HeaderMap) -> Option<usize> {
        let size: usize = headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum();
        let mut text = Vec::with_capacity(4 * (size + target.len()) + 8);
        // As sent: the target, then one line per header (each name and value on its own).
        text.extend_from_slice(target);
        text.extend_from_slice(b"\r\n");
        for (name, value) in headers {
            text.extend_from_slice(name.as_str().as_bytes());
            text.extend_from_slice(b": ");
            text.extend_from_slice(value.as_bytes());
            text.extend_from_slice(b"\r\n");
        }
        // Joined: the target, each name and its value, back to back.
        text.extend_from_slice(b"\r\n");
        text.extend_from_slice(target);
        for (name, value) in headers {
            text.extend_from_slice(name.as_str().as_bytes());
            text.extend_from_slice(value.as_bytes());
        }
        // The values alone, back to back (a header's instances are consecutive), then the
        // names alone (each once).
        text.extend_from_slice(b"\r\n");
        for value in headers.values() {
            text.extend_from_slice(value.as_bytes());
        }
        text.extend_from_slice(b"\r\n");
        for name in headers.keys() {
            text.extend_from_slice(name.as_str().as_bytes());
        }
        self.find(&text)
    }

    /// How many bytes at the end of a stream could still begin a match: the longest needle
    /// fully percent-encoded (three bytes each), and an escape cut at the front.
    fn reach(&self) -> usize {
        3 * self.longest + 2
    }
}

/// Percent-decodes `text` into `out`: each `%` followed by two hex digits becomes that byte,
/// everything else is kept as is; with `plus`, `+` becomes a space.
pub(crate) fn percent_decode(text: &[u8], plus: bool, out: &mut Vec<u8>) {
    out.clear();
    out.reserve(text.len());
    let hex = |b: Option<&u8>| -> Option<u8> {
        let b = *b?;
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    };
    let mut rest = text;
    loop {
        let next = if plus {
            memchr::memchr2(b'%', b'+', rest)
        } else {
            memchr::memchr(b'%', rest)
        };
        let Some(at) = next else {
            out.extend_from_slice(rest);
            return;
        };
        out.extend_from_slice(&rest[..at]);
        if rest[at] == b'+' {
            out.push(b' ');
            rest = &rest[at + 1..];
        } else if let (Some(high), Some(low)) = (hex(rest.get(at + 1)), hex(rest.get(at + 2))) {
            out.push(high << 4 | low);
            rest = &rest[at + 3..];
        } else {
            out.push(b'%');
            rest = &rest[at + 1..];
        }
    }
}

/// Scans a byte stream chunk by chunk.
pub(crate) struct Scanner {
    check: LeakCheck,
    /// Bytes held back: the end of what was seen that could begin a match.
    held: BytesMut,
    keep: usize,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Scanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Held bytes may be the start of a value: never shown.
        f.debug_struct("Scanner")
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

impl Scanner {
    pub(crate) fn new(check: LeakCheck) -> Scanner {
        let keep = check.reach();
        Scanner {
            check,
            held: BytesMut::new(),
            keep,
            scratch: Vec::new(),
        }
    }

    /// Takes the next chunk; returns what is now safe to send, or the credential found.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Result<Bytes, usize> {
        self.held.extend_from_slice(chunk);
        if let Some(found) = self.check.find_with(&self.held, &mut self.scratch) {
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
    use http::{HeaderName, HeaderValue};

    const SECRET: &str = "sk-fixture-0123456789abcdef";
    const MIXED: &str = "sk-Fixture-0123456789AbCdEf";

    /// Credential 7 guarded, forbidden.
    fn check_for(secret: &str) -> LeakCheck {
        let guard = LeakGuard::new(&[(7, secret.as_bytes())])
            .unwrap()
            .expect("a guard");
        let mut forbidden = vec![false; 8];
        forbidden[7] = true;
        LeakCheck::new(&guard, forbidden).expect("something to look for")
    }

    fn check() -> LeakCheck {
        check_for(SECRET)
    }

    fn find(check: &LeakCheck, text: &str) -> Option<usize> {
        check.find(text.as_bytes())
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn percent_all(s: &str) -> String {
        s.bytes().map(|b| format!("%{b:02X}")).collect()
    }

    #[test]
    fn finds_the_value_and_its_base64_anywhere() {
        let g = check();
        assert_eq!(find(&g, &format!("key={SECRET}&x=1")), Some(7));
        for prefix in ["", "a", "ab", "user:"] {
            let text = format!("{prefix}{SECRET}trailing");
            for encoded in [STANDARD.encode(&text), URL_SAFE_NO_PAD.encode(&text)] {
                assert_eq!(
                    find(&g, &format!("Basic {encoded}")),
                    Some(7),
                    "{prefix:?} {encoded}"
                );
            }
        }
        assert_eq!(find(&g, "mock-OPENAI_KEY and other text"), None);
        assert_eq!(find(&g, &SECRET[..SECRET.len() - 1]), None);
    }

    #[test]
    fn a_credential_the_destination_may_receive_is_not_looked_for() {
        let guard = LeakGuard::new(&[(0, SECRET.as_bytes()), (1, b"other-secret-value")])
            .unwrap()
            .unwrap();
        assert!(LeakCheck::new(&guard, vec![false, false]).is_none());
        let only_second = LeakCheck::new(&guard, vec![false, true]).unwrap();
        assert_eq!(only_second.find(SECRET.as_bytes()), None);
        let text = format!("{SECRET}other-secret-value{SECRET}");
        assert_eq!(only_second.find(text.as_bytes()), Some(1));
        assert!(LeakGuard::new(&[]).unwrap().is_none());
        // An allowed value overlapping a forbidden one does not hide it.
        let guard = LeakGuard::new(&[(0, b"allowed-value-1234"), (1, b"value-1234-forbidden")])
            .unwrap()
            .unwrap();
        let check = LeakCheck::new(&guard, vec![false, true]).unwrap();
        assert_eq!(check.find(b"x allowed-value-1234-forbidden x"), Some(1));
    }

    #[test]
    fn finds_the_value_in_hex_lowercase_or_uppercase() {
        let g = check();
        let lower: String = SECRET.bytes().map(|b| format!("{b:02x}")).collect();
        let upper = lower.to_ascii_uppercase();
        assert_eq!(find(&g, &format!("x={lower}")), Some(7));
        assert_eq!(find(&g, &format!("id-{upper}-end")), Some(7));
        // Part of the hex is not enough.
        assert_eq!(find(&g, &lower[..lower.len() - 2]), None);
    }

    #[test]
    fn finds_the_value_percent_encoded_wholly_or_partly() {
        let g = check();
        assert_eq!(find(&g, &format!("/v1?k={}", percent_all(SECRET))), Some(7));
        // Partly: only the dashes, in lowercase escapes.
        let partly = SECRET.replace('-', "%2d");
        assert_eq!(find(&g, &format!("/v1?k={partly}&x=%zz%")), Some(7));
        // The base64 and the hex, percent-encoded too.
        let b64 = STANDARD.encode(format!("u:{SECRET}")).replace('+', "%2B");
        assert_eq!(find(&g, &percent_all(&b64)), Some(7));
        let hex: String = SECRET.bytes().map(|b| format!("{b:02x}")).collect();
        assert_eq!(find(&g, &percent_all(&hex)), Some(7));
        // A broken escape is kept as is.
        assert_eq!(find(&g, &SECRET.replace('-', "%2")), None);
    }

    #[test]
    fn plus_is_a_space_when_a_value_has_one() {
        let phrase = "correct horse battery staple";
        let g = check_for(phrase);
        assert_eq!(find(&g, "/search?q=correct+horse+battery+staple"), Some(7));
        assert_eq!(find(&g, "q=correct+horse%20battery+staple"), Some(7));
        // A value with a `+` sent as `%2B` or as is.
        let g = check_for("abc+def/ghi=jkl");
        assert_eq!(find(&g, "k=abc%2Bdef%2Fghi%3Djkl"), Some(7));
        assert_eq!(find(&g, "k=abc+def/ghi=jkl"), Some(7));
    }

    #[test]
    fn percent_decoding_keeps_what_is_not_an_escape() {
        let mut out = Vec::new();
        percent_decode(b"a%41%4a%zz%4+b%", false, &mut out);
        assert_eq!(out, b"aAJ%zz%4+b%");
        percent_decode(b"a+b%2Bc", true, &mut out);
        assert_eq!(out, b"a b+c");
    }

    #[test]
    fn the_target_and_its_query_are_searched_decoded() {
        let g = check();
        let empty = HeaderMap::new();
        let path = format!("/files/{}/x", SECRET.replace("-", "%2D"));
        assert_eq!(g.find_in_head(path.as_bytes(), &empty), Some(7));
        let query = format!("/?a=1&token={}", percent_all(SECRET));
        assert_eq!(g.find_in_head(query.as_bytes(), &empty), Some(7));
        assert_eq!(g.find_in_head(b"/?token=mock-KEY", &empty), None);
    }

    #[test]
    fn header_names_are_searched_in_the_case_they_are_sent() {
        // Header names travel lowercased: a mixed-case value in a name arrives lowercased.
        let g = check_for(MIXED);
        let h = headers(&[(&format!("x-{MIXED}"), "1")]);
        assert_eq!(g.find_in_head(b"/", &h), Some(7));
        // A hex-encoded name too.
        let hex: String = MIXED.bytes().map(|b| format!("{b:02x}")).collect();
        let h = headers(&[(&format!("x-{hex}"), "1")]);
        assert_eq!(g.find_in_head(b"/", &h), Some(7));
        let h = headers(&[("x-harmless", "1")]);
        assert_eq!(g.find_in_head(b"/", &h), None);
    }

    #[test]
    fn a_value_cut_across_headers_is_found_whole() {
        let g = check();
        let (a, b) = SECRET.split_at(11);
        // Two headers, in the order they are sent.
        let h = headers(&[("x-a", a), ("x-b", b)]);
        assert_eq!(g.find_in_head(b"/", &h), Some(7));
        // Two instances of one header.
        let h = headers(&[("x-part", a), ("accept", "*/*"), ("x-part", b)]);
        assert_eq!(g.find_in_head(b"/", &h), Some(7));
        // A name and its value; a value and the next name; two names.
        let h = headers(&[(&format!("x-{a}"), b)]);
        assert_eq!(g.find_in_head(b"/", &h), Some(7));
        let h = headers(&[("x-one", &format!("v{a}")), (b, "")]);
        assert_eq!(g.find_in_head(b"/", &h), Some(7));
        let h = headers(&[(a, "1"), (b, "2")]);
        assert_eq!(g.find_in_head(b"/", &h), Some(7));
        // The target and the first header.
        let h = headers(&[(b, "1")]);
        assert_eq!(g.find_in_head(format!("/?k={a}").as_bytes(), &h), Some(7));
        // Three pieces, percent-encoded.
        let (b1, b2) = b.split_at(6);
        let h = headers(&[("x-a", a), ("x-a", &percent_all(b1)), ("x-a", b2)]);
        assert_eq!(g.find_in_head(b"/", &h), Some(7));
        // Pieces that do not make the value.
        let h = headers(&[("x-a", a), ("x-b", "zzz"), ("x-c", b)]);
        assert_eq!(g.find_in_head(b"/", &h), None);
    }

    #[test]
    fn a_value_split_across_chunks_is_caught_before_any_of_it_is_released() {
        let body = format!("{{\"prompt\": \"hi\", \"leak\": \"{SECRET}\"}}");
        for cut in 1..body.len() {
            let mut s = Scanner::new(check());
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
    fn an_encoded_value_split_across_chunks_is_caught() {
        let hex: String = SECRET.bytes().map(|b| format!("{b:02x}")).collect();
        for encoded in [percent_all(SECRET), percent_all(&hex), hex] {
            let body = format!("form=1&leak={encoded}&more=2");
            for cut in 1..body.len() {
                let mut s = Scanner::new(check());
                let outcome = s
                    .push(&body.as_bytes()[..cut])
                    .and_then(|_| s.push(&body.as_bytes()[cut..]));
                assert_eq!(outcome.map(|_| ()), Err(7), "{encoded} cut at {cut}");
            }
            // In tiny chunks too.
            let mut s = Scanner::new(check());
            let found = body.as_bytes().chunks(3).find_map(|c| s.push(c).err());
            assert_eq!(found, Some(7), "{encoded} in 3-byte chunks");
        }
    }

    #[test]
    fn clean_streams_pass_whole_and_in_order() {
        let mut s = Scanner::new(check());
        let mut out = Vec::new();
        for chunk in [
            &b"hello "[..],
            b"wor",
            b"ld, 100% nothing",
            b" secret here!",
        ] {
            out.extend_from_slice(&s.push(chunk).unwrap());
        }
        out.extend_from_slice(&s.finish());
        assert_eq!(out, b"hello world, 100% nothing secret here!");
    }

    #[test]
    fn debug_shows_no_needle() {
        let mut s = Scanner::new(check());
        s.push(&SECRET.as_bytes()[..SECRET.len() - 1]).unwrap();
        let text = format!("{:?} {:?}", check(), s);
        let hex: String = SECRET.bytes().map(|b| format!("{b:02x}")).collect();
        for hidden in [
            SECRET,
            &SECRET[..12],
            &hex[..12],
            &STANDARD.encode(SECRET)[..8],
        ] {
            assert!(!text.contains(hidden), "{text}");
        }
        // Nor as a list of bytes.
        let bytes = format!("{:?}", &SECRET.as_bytes()[..6]);
        assert!(!text.contains(&bytes[1..bytes.len() - 1]), "{text}");
    }

    proptest::proptest! {
        #[test]
        fn any_secret_inside_base64_of_any_text_is_found(
            secret in "[ -~]{8,40}",
            before in proptest::collection::vec(proptest::num::u8::ANY, 0..9),
            after in proptest::collection::vec(proptest::num::u8::ANY, 0..9),
        ) {
            let g = check_for(&secret);
            let mut text = before.clone();
            text.extend_from_slice(secret.as_bytes());
            text.extend_from_slice(&after);
            proptest::prop_assert_eq!(g.find(STANDARD.encode(&text).as_bytes()), Some(7));
            proptest::prop_assert_eq!(g.find(URL_SAFE_NO_PAD.encode(&text).as_bytes()), Some(7));
            proptest::prop_assert_eq!(g.find(&text), Some(7));
        }

        #[test]
        fn any_secret_percent_encoded_at_random_is_found(
            secret in "[ -~]{8,40}",
            mask in proptest::collection::vec(proptest::bool::ANY, 40),
        ) {
            let g = check_for(&secret);
            let encoded: String = secret
                .bytes()
                .zip(&mask)
                .map(|(b, &e)| match e || b == b'%' {
                    true => format!("%{b:02x}"),
                    false => char::from(b).to_string(),
                })
                .collect();
            proptest::prop_assert_eq!(g.find(format!("a={encoded}&b").as_bytes()), Some(7));
        }
    }
}
