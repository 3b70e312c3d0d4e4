//! Byte sizes and rates, parsed and formatted exactly like upstream Hypeman.
//!
//! Upstream uses `github.com/c2h5oh/datasize`: parsing accepts integer digits only followed by
//! an optional, case-insensitive, *binary* unit (`1KB` = 1024 bytes); `Kb`/`Mb`/`Gb`… (capital
//! prefix and lower-case `b`) are rejected as bits. Formatting (`HR()`) prints one decimal with
//! *strict* thresholds, so exactly 1 GiB is `"1024.0 MB"` and zero is `"0 B"`.

use std::fmt;

/// One binary kibibyte.
pub const KIB: u64 = 1 << 10;
/// One binary mebibyte.
pub const MIB: u64 = 1 << 20;
/// One binary gibibyte.
pub const GIB: u64 = 1 << 30;
/// One binary tebibyte.
pub const TIB: u64 = 1 << 40;
/// One binary pebibyte.
pub const PIB: u64 = 1 << 50;
/// One binary exbibyte.
pub const EIB: u64 = 1 << 60;

/// Why a size string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeError {
    /// Not `<digits><unit>`.
    Syntax,
    /// Does not fit in 64 bits.
    Range,
    /// A bit unit (`Kb`, `Mb`, …) where bytes were expected.
    Bits,
}

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SizeError::Syntax => "invalid syntax",
            SizeError::Range => "value out of range",
            SizeError::Bits => {
                "unit with capital unit prefix and lower case unit (b) - bits, not bytes"
            }
        })
    }
}

impl std::error::Error for SizeError {}

/// Parses a size like `"1GB"`, `"512mb"`, `"2G"`, `"1024"` into bytes (binary units).
pub fn parse_size(input: &str) -> Result<u64, SizeError> {
    let bytes = input.as_bytes();
    let mut value: u64 = 0;
    let mut i = 0;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(bytes[i] - b'0')))
            .ok_or(SizeError::Range)?;
        i += 1;
    }
    if i == 0 && !bytes.is_empty() {
        return Err(SizeError::Syntax);
    }
    let unit = input[i..].trim();
    if matches!(unit, "Kb" | "Mb" | "Gb" | "Tb" | "Pb" | "Eb") {
        return Err(SizeError::Bits);
    }
    let multiplier = match unit.to_ascii_lowercase().as_str() {
        "" | "b" | "byte" => 1,
        "k" | "kb" | "kib" | "kilo" | "kilobyte" | "kilobytes" => KIB,
        "m" | "mb" | "mib" | "mega" | "megabyte" | "megabytes" => MIB,
        "g" | "gb" | "gib" | "giga" | "gigabyte" | "gigabytes" => GIB,
        "t" | "tb" | "tib" | "tera" | "terabyte" | "terabytes" => TIB,
        "p" | "pb" | "pib" | "peta" | "petabyte" | "petabytes" => PIB,
        "e" | "eb" | "eib" | "exa" | "exabyte" | "exabytes" => EIB,
        _ => return Err(SizeError::Syntax),
    };
    value.checked_mul(multiplier).ok_or(SizeError::Range)
}

/// Formats bytes like upstream's `datasize.ByteSize.HR()`: `"1024.0 MB"`, `"2.0 GB"`, `"0 B"`.
pub fn format_size(bytes: u64) -> String {
    for (unit, name) in [
        (EIB, "EB"),
        (PIB, "PB"),
        (TIB, "TB"),
        (GIB, "GB"),
        (MIB, "MB"),
        (KIB, "KB"),
    ] {
        if bytes > unit {
            if bytes.is_multiple_of(unit) {
                // Whole units (most sizes): the same text, without float formatting.
                return format!("{}.0 {name}", bytes / unit);
            }
            // Same arithmetic as upstream: whole units plus the remainder as a fraction.
            let value = (bytes / unit) as f64 + (bytes % unit) as f64 / unit as f64;
            return format!("{value:.1} {name}");
        }
    }
    format!("{bytes} B")
}

/// Formats a byte rate like upstream: `HR() + "/s"`, e.g. `"125.0 MB/s"`.
pub fn format_rate(bytes_per_second: u64) -> String {
    format!("{}/s", format_size(bytes_per_second))
}

/// Why a bandwidth string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BandwidthError {
    /// `<n>[k|m|g]bps` whose number is not an integer.
    InvalidNumber(String),
    /// A byte rate that is not a valid size.
    Bytes(SizeError),
}

impl fmt::Display for BandwidthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BandwidthError::InvalidNumber(n) => write!(f, "invalid number: {n}"),
            BandwidthError::Bytes(e) => write!(f, "parse as bytes: {e}"),
        }
    }
}

impl std::error::Error for BandwidthError {}

/// Parses a network bandwidth into bytes per second, like upstream `resources.ParseBandwidth`.
///
/// `"1Gbps"` is decimal bits (125,000,000 B/s); anything else is a byte rate with binary units
/// after stripping `/s` and `ps` (`"125MB/s"` = 131,072,000 B/s).
pub fn parse_bandwidth(input: &str) -> Result<u64, BandwidthError> {
    let lower = input.trim().to_ascii_lowercase();
    if let Some(number) = lower.strip_suffix("bps") {
        let number = number.trim();
        let (digits, multiplier) = if let Some(n) = number.strip_suffix('g') {
            (n, 1_000_000_000)
        } else if let Some(n) = number.strip_suffix('m') {
            (n, 1_000_000)
        } else if let Some(n) = number.strip_suffix('k') {
            (n, 1_000)
        } else {
            (number, 1)
        };
        let digits = digits.trim();
        let bits: i64 = digits
            .parse()
            .map_err(|_| BandwidthError::InvalidNumber(digits.to_string()))?;
        let bits =
            u64::try_from(bits).map_err(|_| BandwidthError::InvalidNumber(digits.to_string()))?;
        let total = bits
            .checked_mul(multiplier)
            .ok_or(BandwidthError::Bytes(SizeError::Range))?;
        return Ok(total / 8);
    }
    let stripped = lower.strip_suffix("/s").unwrap_or(&lower);
    let stripped = stripped.strip_suffix("ps").unwrap_or(stripped);
    parse_size(stripped).map_err(BandwidthError::Bytes)
}

/// Parses a disk I/O rate like upstream's create handler: strip a literal `/s`, then `ps`
/// (case-sensitive), then parse as a size. `"100MB/s"` = 104,857,600 B/s.
pub fn parse_disk_io(input: &str) -> Result<u64, SizeError> {
    let stripped = input.strip_suffix("/s").unwrap_or(input);
    let stripped = stripped.strip_suffix("ps").unwrap_or(stripped);
    parse_size(stripped)
}

#[cfg(test)]
mod tests {

    /// Whole units take a shortcut; its text is exactly upstream's float arithmetic's.
    #[test]
    fn whole_units_format_like_the_float_arithmetic() {
        for unit in [KIB, MIB, GIB, TIB, PIB, EIB] {
            for q in [2u64, 3, 10, 1023, 1024, 4096, 1 << 20] {
                let Some(bytes) = q.checked_mul(unit) else {
                    continue;
                };
                let float = {
                    let (unit, name) = [
                        (EIB, "EB"),
                        (PIB, "PB"),
                        (TIB, "TB"),
                        (GIB, "GB"),
                        (MIB, "MB"),
                        (KIB, "KB"),
                    ]
                    .into_iter()
                    .find(|(u, _)| bytes > *u)
                    .unwrap();
                    let value = (bytes / unit) as f64 + (bytes % unit) as f64 / unit as f64;
                    format!("{value:.1} {name}")
                };
                assert_eq!(format_size(bytes), float, "{bytes}");
            }
        }
    }

    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Any text: an answer, never a panic; plain numbers are bytes.
        #[test]
        fn sizes_and_rates_parse_anything_without_panicking(input in "\\PC{0,24}", n in 0u64..(1u64 << 50)) {
            let _ = parse_size(&input);
            let _ = parse_bandwidth(&input);
            let _ = parse_disk_io(&input);
            proptest::prop_assert_eq!(parse_size(&n.to_string()), Ok(n));
            let formatted = format_size(n);
            proptest::prop_assert!(formatted.ends_with('B'), "{}", formatted);
        }

        /// Units in any case and digits of any length: overflow is an error, not a wrap.
        #[test]
        fn sized_numbers_never_wrap(digits in "[0-9]{1,30}", unit in "(|b|k|kb|m|mb|g|gb|t|tb|p|pb|e|eb|K|KB|MB|GB|TB)") {
            let input = format!("{digits}{unit}");
            if let Ok(bytes) = parse_size(&input) {
                let n: u128 = digits.parse().unwrap_or(u128::MAX);
                proptest::prop_assert!(u128::from(bytes) >= n, "{} -> {}", input, bytes);
            }
        }
    }

    #[test]
    fn parses_like_datasize() {
        let cases: &[(&str, Result<u64, SizeError>)] = &[
            ("1GB", Ok(GIB)),
            ("1gb", Ok(GIB)),
            ("1G", Ok(GIB)),
            ("1g", Ok(GIB)),
            ("1GiB", Ok(GIB)),
            ("2GB", Ok(2 * GIB)),
            ("512MB", Ok(512 * MIB)),
            ("512 MB", Ok(512 * MIB)),
            ("10GB", Ok(10 * GIB)),
            ("50G", Ok(50 * GIB)),
            ("3GB", Ok(3 * GIB)),
            ("1KB", Ok(1024)),
            ("1k", Ok(1024)),
            ("1024", Ok(1024)),
            ("0", Ok(0)),
            ("7b", Ok(7)),
            ("7byte", Ok(7)),
            ("1 kilobytes", Ok(1024)),
            ("1TB", Ok(TIB)),
            ("1PB", Ok(PIB)),
            ("1EB", Ok(EIB)),
            ("lots", Err(SizeError::Syntax)),
            ("1.5GB", Err(SizeError::Syntax)),
            ("-1GB", Err(SizeError::Syntax)),
            (" 1GB", Err(SizeError::Syntax)),
            ("GB", Err(SizeError::Syntax)),
            ("1XB", Err(SizeError::Syntax)),
            ("1Gb", Err(SizeError::Bits)),
            ("1Mb", Err(SizeError::Bits)),
            ("1Kb", Err(SizeError::Bits)),
            ("16EB", Err(SizeError::Range)),
            ("99999999999999999999", Err(SizeError::Range)),
        ];
        for (input, want) in cases {
            assert_eq!(parse_size(input), *want, "parse_size({input:?})");
        }
    }

    #[test]
    fn formats_like_datasize_hr() {
        let cases: &[(u64, &str)] = &[
            (0, "0 B"),
            (1, "1 B"),
            (1024, "1024 B"),
            (1025, "1.0 KB"),
            (1536, "1.5 KB"),
            (MIB, "1024.0 KB"),
            (512 * MIB, "512.0 MB"),
            (GIB, "1024.0 MB"),
            (GIB + 1, "1.0 GB"),
            (2 * GIB, "2.0 GB"),
            (10 * GIB, "10.0 GB"),
            (3 * GIB / 2, "1.5 GB"),
            (125_000_000, "119.2 MB"),
            (131_072_000, "125.0 MB"),
            (TIB, "1024.0 GB"),
            (2 * TIB, "2.0 TB"),
            (u64::MAX, "16.0 EB"),
        ];
        for (bytes, want) in cases {
            assert_eq!(format_size(*bytes), *want, "format_size({bytes})");
        }
        assert_eq!(format_rate(131_072_000), "125.0 MB/s");
        assert_eq!(format_rate(0), "0 B/s");
    }

    #[test]
    fn parses_bandwidth_like_upstream() {
        let cases: &[(&str, Option<u64>)] = &[
            ("1Gbps", Some(125_000_000)),
            ("10Gbps", Some(1_250_000_000)),
            ("100Mbps", Some(12_500_000)),
            ("1000kbps", Some(125_000)),
            ("800bps", Some(100)),
            ("125MB", Some(125 * MIB)),
            ("125MB/s", Some(125 * MIB)),
            ("125mbps", Some(15_625_000)),
            ("1GB", Some(GIB)),
            (" 1Gbps ", Some(125_000_000)),
            ("invalid", None),
            ("1.5Gbps", None),
            ("-1Gbps", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_bandwidth(input).ok(),
                *want,
                "parse_bandwidth({input:?})"
            );
        }
    }

    #[test]
    fn parses_disk_io_like_upstream() {
        assert_eq!(parse_disk_io("100MB/s"), Ok(100 * MIB));
        assert_eq!(parse_disk_io("500MBps"), Ok(500 * MIB));
        assert_eq!(parse_disk_io("1GB"), Ok(GIB));
        assert_eq!(parse_disk_io("100MB/S"), Err(SizeError::Syntax));
        assert_eq!(parse_disk_io("fast"), Err(SizeError::Syntax));
    }
}
