//! Go's `time.Duration` as upstream's API speaks it: `ParseDuration` (signed, units `ns`, `us`,
//! `µs`, `ms`, `s`, `m`, `h`, fractions allowed) and `Duration.String()` (`"24h0m0s"`,
//! `"1h30m0s"`, `"1.5s"`, `"500ms"`, `"0s"`).

use std::time::Duration;

/// A parsed Go duration: its sign and magnitude.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoDuration {
    /// `-` before it.
    pub negative: bool,
    /// How long.
    pub magnitude: Duration,
}

/// Parses a Go duration, signed (`"-1h"` parses, as in Go).
pub fn parse_signed(text: &str) -> Option<GoDuration> {
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Some(GoDuration {
            negative,
            magnitude: Duration::ZERO,
        });
    }
    if rest.is_empty() {
        return None;
    }
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return None;
        }
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        let mut part = whole.checked_mul(scale)?;
        let mut unit = scale;
        for digit in fraction.chars() {
            unit /= 10;
            part += u128::from(digit.to_digit(10)?) * unit;
        }
        nanos = nanos.checked_add(part)?;
    }
    // Go's limit: about 290 years.
    let nanos = u64::try_from(nanos)
        .ok()
        .filter(|n| *n <= i64::MAX as u64)?;
    Some(GoDuration {
        negative,
        magnitude: Duration::from_nanos(nanos),
    })
}

/// Parses a non-negative Go duration (`None` for a negative one).
pub fn parse(text: &str) -> Option<Duration> {
    parse_signed(text)
        .filter(|d| !d.negative || d.magnitude.is_zero())
        .map(|d| d.magnitude)
}

/// Go's `Duration.String()`.
pub fn format(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        let (scale, unit) = if nanos < 1_000 {
            (1, "ns")
        } else if nanos < 1_000_000 {
            (1_000, "µs")
        } else {
            (1_000_000, "ms")
        };
        return format!("{}{unit}", fraction(nanos, scale));
    }
    let seconds = nanos / 1_000_000_000;
    let (h, m) = (seconds / 3600, (seconds / 60) % 60);
    let s = fraction(nanos % 60_000_000_000, 1_000_000_000);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// `value / scale` in decimal, without trailing zeros.
fn fraction(value: u128, scale: u128) -> String {
    let (whole, rest) = (value / scale, value % scale);
    if rest == 0 {
        return whole.to_string();
    }
    let width = scale.to_string().len() - 1;
    let digits = format!("{rest:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_and_print_like_go() {
        for (text, printed) in [
            ("24h", "24h0m0s"),
            ("90m", "1h30m0s"),
            ("1m", "1m0s"),
            ("1.5s", "1.5s"),
            ("500ms", "500ms"),
            ("1h2m3.25s", "1h2m3.25s"),
            ("0", "0s"),
            ("2us", "2µs"),
            ("7ns", "7ns"),
            ("1.5h", "1h30m0s"),
        ] {
            assert_eq!(format(parse(text).unwrap()), printed, "{text}");
        }
        assert_eq!(
            parse_signed("-1h"),
            Some(GoDuration {
                negative: true,
                magnitude: Duration::from_secs(3600)
            })
        );
        assert_eq!(parse("-1h"), None);
        for bad in ["", "10", "abc", "1x", "h", ".s", "1..2s", "-"] {
            assert_eq!(parse_signed(bad), None, "{bad}");
        }
    }
}
