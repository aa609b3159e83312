//! Parsing of the human-written values in a config file: durations such as `"250ms"`, `"2s"`,
//! `"1m"`, and sizes such as `"64KiB"`.
//!
//! These functions return a plain description of what was expected; the caller adds the file,
//! line and key.

use std::time::Duration;

/// What a duration must look like, for error messages.
pub const DURATION_HINT: &str = "expected a duration such as \"250ms\", \"2s\", \"1m\" or \"1h\"";

/// Parses `<integer><unit>` where unit is one of `ms`, `s`, `m`, `h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit: {DURATION_HINT}"))?;
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: {DURATION_HINT}"))?;
    let millis_per_unit = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("{text:?} has an unknown unit: {DURATION_HINT}")),
    };
    value
        .checked_mul(millis_per_unit)
        .filter(|millis| *millis <= MAX_DURATION_MS)
        .map(Duration::from_millis)
        .ok_or_else(|| {
            format!("{text:?} is too large: at most {MAX_DURATION_MS}ms (about 24 days)")
        })
}

/// The longest duration a config may give: 2^31 - 1 ms, the most nginx and HAProxy accept for a
/// timeout. Far beyond any useful timeout, and far from where a deadline computed from it could
/// overflow.
pub const MAX_DURATION_MS: u64 = i32::MAX as u64;

/// What a size must look like, for error messages.
pub const SIZE_HINT: &str = "expected a size such as \"512B\", \"64KiB\", \"100MiB\" or \"1GiB\" (or KB, MB, GB: powers of 1000)";

/// Parses `<integer><unit>` where unit is `B`, `KiB`, `MiB`, `GiB` (powers of 1024) or `KB`,
/// `MB`, `GB` (powers of 1000); a bare integer is bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size: {SIZE_HINT}"))?;
    let unit_bytes: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(format!("{text:?} has an unknown unit: {SIZE_HINT}")),
    };
    value
        .checked_mul(unit_bytes)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("100MiB"), Ok(100 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("8KB"), Ok(8_000));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in [
            "",
            "KiB",
            "1.5MiB",
            "-1KiB",
            "10 parsecs",
            "99999999999999999999GiB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        for bad in [
            "",
            "2",
            "s",
            "2 s",
            "2sec",
            "-1s",
            "1.5s",
            "99999999999999999999h",
            "18446744073709551615ms",
            "2147483648ms",
            "597h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn the_longest_duration_is_nginx_and_haproxys() {
        assert_eq!(
            parse_duration("2147483647ms"),
            Ok(Duration::from_millis(2_147_483_647))
        );
        assert_eq!(parse_duration("596h"), Ok(Duration::from_secs(596 * 3600)));
    }
}
