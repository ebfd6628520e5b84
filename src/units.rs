//! Parsing and printing quantities the way a user types and reads them:
//! seconds, positive numbers, thousands separators. Every float option is
//! parsed here, against a documented range, so that 0, NaN, infinities and
//! absurd magnitudes are refused before anything is created.

use std::time::Duration;

/// The longest duration any option takes: about 31.7 years. Far past any
/// real run, and far below where `Instant + Duration` could overflow.
pub(crate) const MAX_SECONDS: f64 = 1e9;
/// The shortest duration any option takes: 1 µs.
pub(crate) const MIN_SECONDS: f64 = 1e-6;

/// Parses a number of seconds in [`MIN_SECONDS`, `MAX_SECONDS`].
pub(crate) fn parse_seconds(s: &str) -> Result<Duration, String> {
    let v = parse_f64(s, "a number of seconds")?;
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&v) {
        return Err(format!(
            "{s} seconds is out of range; give from {MIN_SECONDS} to {MAX_SECONDS:e} seconds"
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Bounds of `--connect-timeout`, seconds.
pub(crate) const CONNECT_TIMEOUT: (f64, f64) = (0.001, 3600.0);

/// Checks a `--connect-timeout` against [`CONNECT_TIMEOUT`].
pub(crate) fn check_connect_timeout(v: f64) -> Result<(), String> {
    let (lo, hi) = CONNECT_TIMEOUT;
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(format!(
            "--connect-timeout {v} is out of range; give {lo} to {hi} seconds"
        ))
    }
}

/// Parses a `--connect-timeout`.
pub(crate) fn parse_connect_timeout(s: &str) -> Result<f64, String> {
    let v = parse_f64(s, "a number of seconds")?;
    check_connect_timeout(v).map(|()| v)
}

/// Parses a number of seconds in [`MIN_SECONDS`, `MAX_SECONDS`] as `f64`.
pub(crate) fn parse_seconds_f64(s: &str) -> Result<f64, String> {
    parse_seconds(s).map(|d| d.as_secs_f64())
}

fn parse_f64(s: &str, what: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not {what}"))?;
    if !v.is_finite() {
        return Err(format!("{s} is not {what}: give a finite number"));
    }
    Ok(v)
}

/// `n` with thousands separators: `16,777,216`.
pub(crate) fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate or count in short form: `4.60M`, `1.2k`, `950`.
pub(crate) fn short(n: f64) -> String {
    if n >= 1e9 {
        format!("{:.2}G", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1}k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

/// `1 restart`, `2 restarts`.
pub(crate) fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", thousands(n), if n == 1 { one } else { many })
}

/// Milliseconds since the Unix epoch now (0 if the clock is before it).
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `ms` milliseconds since the Unix epoch as RFC 3339 UTC:
/// `2026-12-02T07:04:41.123Z`.
pub(crate) fn rfc3339_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Parses a whole number from `lo` to `hi` for an option; the message
/// gives the range as people read it (`1 to 1,000,000`).
fn whole_in(s: &str, lo: u64, hi: u64) -> Result<u64, String> {
    let range = || match (lo, hi) {
        (0, _) => format!("give at most {}", thousands(hi)),
        (_, u64::MAX) => format!("give at least {}", thousands(lo)),
        _ => format!("give {} to {}", thousands(lo), thousands(hi)),
    };
    let t = s.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a whole number; {}", range()));
    }
    match t.parse::<u64>() {
        Ok(v) if (lo..=hi).contains(&v) => Ok(v),
        _ => Err(format!("{s} is out of range; {}", range())),
    }
}

/// `value_parser` for a `u64` option taking `LO` to `HI`.
pub(crate) fn whole_u64<const LO: u64, const HI: u64>(s: &str) -> Result<u64, String> {
    whole_in(s, LO, HI)
}

/// `value_parser` for a `u32` option taking `LO` to `HI`.
pub(crate) fn whole_u32<const LO: u32, const HI: u32>(s: &str) -> Result<u32, String> {
    // In range of u32 by the bounds.
    whole_in(s, LO.into(), HI.into()).map(|v| v as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_name_their_range() {
        assert_eq!(whole_u32::<1, 1_000_000>("1000000"), Ok(1_000_000));
        assert_eq!(
            whole_u32::<1, 1_000_000>("0").unwrap_err(),
            "0 is out of range; give 1 to 1,000,000"
        );
        assert_eq!(
            whole_u64::<0, { u64::MAX }>("99999999999999999999").unwrap_err(),
            "99999999999999999999 is out of range; give at most 18,446,744,073,709,551,615"
        );
        assert_eq!(
            whole_u64::<1000, { u64::MAX }>("5").unwrap_err(),
            "5 is out of range; give at least 1,000"
        );
        assert!(
            whole_u32::<0, 5>("1e3")
                .unwrap_err()
                .contains("not a whole number")
        );
        assert!(whole_u32::<0, 5>("").is_err());
    }

    #[test]
    fn seconds_are_bounded() {
        assert_eq!(parse_seconds("1.5"), Ok(Duration::from_millis(1500)));
        for bad in ["0", "-1", "nan", "inf", "1e20", "1e-300", "abc", ""] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
        assert!(parse_seconds("1e9").is_ok());
    }

    #[test]
    fn utc_times() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_utc(1_796_195_081_123), "2026-12-02T07:04:41.123Z");
    }

    #[test]
    fn separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(16_777_216), "16,777,216");
        assert_eq!(plural(1, "restart", "restarts"), "1 restart");
        assert_eq!(plural(3, "restart", "restarts"), "3 restarts");
    }
}
