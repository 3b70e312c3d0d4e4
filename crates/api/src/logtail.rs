//! Reading a log a guest writes without letting the guest size the engine's memory: the tail
//! is read backwards from the end in chunks, never the whole file; following reads only what
//! was appended since the last read, from an offset; and a run of bytes without a newline is
//! cut into lines of at most [`MAX_LINE`] bytes instead of growing a buffer.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::Path;

/// Longest line returned; a longer run without a newline comes back in pieces of this size.
pub const MAX_LINE: usize = 64 * 1024;

/// Most bytes a tail reads back from the end of the file (`?tail=` beyond what fits here
/// returns what fits).
pub const MAX_TAIL_BYTES: u64 = 8 << 20;

/// Most bytes one follow step reads.
const FOLLOW_STEP: u64 = 1 << 20;

/// Splits `bytes` into lines (without their newline), cutting runs longer than [`MAX_LINE`].
fn split(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == b'\n')
        .flat_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                vec![String::new()]
            } else {
                line.chunks(MAX_LINE)
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect()
            }
        })
        .collect()
}

/// The last `n` lines `keep` accepts, and the offset a follower continues from. An
/// unterminated last line is returned unless `follow` (the follower then reads it whole).
pub fn tail(
    path: &Path,
    n: usize,
    keep: impl Fn(&str) -> bool,
    follow: bool,
) -> std::io::Result<(Vec<String>, u64)> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut window: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(window);
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::with_capacity((len - start) as usize);
        (&mut file).take(len - start).read_to_end(&mut bytes)?;
        // A window that starts mid-file starts mid-line: that piece is not a line.
        let mut from = 0;
        if start > 0 {
            match bytes.iter().position(|b| *b == b'\n') {
                Some(i) => from = i + 1,
                None => from = bytes.len(),
            }
        }
        let mut body = &bytes[from..];
        let mut end = len;
        let terminated = body.last() == Some(&b'\n');
        if terminated {
            body = &body[..body.len() - 1];
        } else if follow {
            let cut = body.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            end = len - (body.len() - cut) as u64;
            body = &body[..cut.saturating_sub(1).min(body.len())];
            if cut == 0 {
                body = &[];
            }
        }
        let lines: Vec<String> = if body.is_empty() {
            // Nothing, or one empty line ("\n").
            if terminated && from < bytes.len() {
                vec![String::new()]
            } else {
                Vec::new()
            }
        } else {
            split(body)
        };
        let kept: Vec<String> = lines.into_iter().filter(|l| keep(l)).collect();
        if kept.len() >= n || start == 0 || window >= MAX_TAIL_BYTES {
            let skip = kept.len().saturating_sub(n);
            return Ok((kept.into_iter().skip(skip).collect(), end));
        }
        window = (window * 4).min(MAX_TAIL_BYTES);
    }
}

/// A follower of a growing log from an offset.
#[derive(Debug)]
pub struct Follower {
    offset: u64,
    pending: Vec<u8>,
}

impl Follower {
    /// Follows from byte `offset`.
    pub fn new(offset: u64) -> Follower {
        Follower {
            offset,
            pending: Vec::new(),
        }
    }

    /// The complete lines appended since the last step (at most [`FOLLOW_STEP`] bytes are
    /// read per step; a line longer than [`MAX_LINE`] comes in pieces). A file that shrank
    /// was cut or rotated: following starts again at its beginning.
    pub fn step(&mut self, path: &Path) -> Vec<String> {
        let Ok(mut file) = std::fs::File::open(path) else {
            return Vec::new();
        };
        let Ok(len) = file.metadata().map(|m| m.len()) else {
            return Vec::new();
        };
        if len < self.offset {
            self.offset = 0;
            self.pending.clear();
        }
        if len == self.offset || file.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let want = (len - self.offset).min(FOLLOW_STEP);
        let before = self.pending.len();
        if (&mut file)
            .take(want)
            .read_to_end(&mut self.pending)
            .is_err()
        {
            self.pending.truncate(before);
            return Vec::new();
        }
        self.offset += (self.pending.len() - before) as u64;
        let mut out = Vec::new();
        while let Some(i) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=i).collect();
            out.extend(split(&line[..line.len() - 1]));
        }
        while self.pending.len() >= MAX_LINE {
            let piece: Vec<u8> = self.pending.drain(..MAX_LINE).collect();
            out.push(String::from_utf8_lossy(&piece).into_owned());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn file(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        std::fs::write(&path, bytes).unwrap();
        (dir, path)
    }

    #[test]
    fn tails_match_reading_the_whole_file() {
        let all = |_: &str| true;
        let (_d, p) = file(b"a\nb\nc\n");
        assert_eq!(
            tail(&p, 2, all, false).unwrap(),
            (vec!["b".into(), "c".into()], 6)
        );
        assert_eq!(tail(&p, 10, all, false).unwrap().0, vec!["a", "b", "c"]);
        assert_eq!(tail(&p, 0, all, false).unwrap().0, Vec::<String>::new());
        // An unterminated last line: shown, unless following (then it comes whole later).
        let (_d, p) = file(b"a\nb\npart");
        assert_eq!(
            tail(&p, 5, all, false).unwrap(),
            (vec!["a".into(), "b".into(), "part".into()], 8)
        );
        assert_eq!(
            tail(&p, 5, all, true).unwrap(),
            (vec!["a".into(), "b".into()], 4)
        );
        let (_d, p) = file(b"");
        assert_eq!(tail(&p, 5, all, true).unwrap(), (Vec::new(), 0));
        assert_eq!(tail(&p, 5, all, false).unwrap(), (Vec::new(), 0));
        let (_d, p) = file(b"\n");
        assert_eq!(tail(&p, 5, all, false).unwrap().0, vec![""]);
        let (_d, p) = file(b"a\n\nb\n");
        assert_eq!(tail(&p, 5, all, false).unwrap().0, vec!["a", "", "b"]);
        // Hidden lines do not count toward n.
        let (_d, p) = file(b"x\nHIDE\ny\nHIDE\n");
        assert_eq!(
            tail(&p, 2, |l: &str| l != "HIDE", false).unwrap().0,
            vec!["x", "y"]
        );
    }

    /// A 64 MiB log: the last lines come from its end (a line that starts before the last
    /// [`MAX_TAIL_BYTES`] is not returned), and a long line comes in [`MAX_LINE`] pieces.
    #[test]
    fn a_tail_of_a_huge_log_reads_its_end_only() {
        let mut big = vec![b'z'; 64 << 20];
        big.extend_from_slice(b"\nlast\n");
        let (_d, p) = file(&big);
        let (lines, end) = tail(&p, 2, |_: &str| true, false).unwrap();
        assert_eq!(lines, vec!["last"]);
        assert_eq!(end, big.len() as u64);

        let mut long = b"first\n".to_vec();
        long.extend(vec![b'y'; (1 << 20) + 5]);
        long.extend_from_slice(b"\nlast\n");
        let (_d, p) = file(&long);
        let (lines, _) = tail(&p, 3, |_: &str| true, false).unwrap();
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(lines[1], "yyyyy");
        assert_eq!(lines[2], "last");
    }

    #[test]
    fn following_reads_what_was_appended_in_bounded_pieces() {
        let (_d, p) = file(b"");
        let mut f = Follower::new(0);
        assert!(f.step(&p).is_empty());
        let mut w = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        w.write_all(b"one\ntw").unwrap();
        assert_eq!(f.step(&p), vec!["one"]);
        w.write_all(b"o\n").unwrap();
        assert_eq!(f.step(&p), vec!["two"]);
        // 3 MiB without a newline: pieces of MAX_LINE, nothing held beyond one piece.
        w.write_all(&vec![b'q'; 3 << 20]).unwrap();
        let mut got = 0;
        for _ in 0..4 {
            for line in f.step(&p) {
                assert_eq!(line.len(), MAX_LINE);
                got += line.len();
            }
            assert!(f.pending.len() < MAX_LINE);
        }
        assert_eq!(got, 3 << 20);
        // Cut: start again from the beginning.
        std::fs::write(&p, b"new\n").unwrap();
        assert_eq!(f.step(&p), vec!["new"]);
    }
}
