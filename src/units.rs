//! Parsing and printing quantities the way a user types and reads them:
//! seconds, positive numbers, thousands separators. Every float option is
//! parsed here, against a documented range, so that 0, NaN, infinities and
//! absurd magnitudes are refused before anything is created.

use std::time::Duration;

/// The longest duration any option takes: about 31.7 years. Far past any
/// real run, and far below where `Instant + Duration` could overflow.
pub const MAX_SECONDS: f64 = 1e9;
/// The shortest duration any option takes: 1 µs.
pub const MIN_SECONDS: f64 = 1e-6;

/// Parses a number of seconds in [`MIN_SECONDS`, `MAX_SECONDS`].
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let v = parse_f64(s, "a number of seconds")?;
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&v) {
        return Err(format!(
            "{s} seconds is out of range; give from {MIN_SECONDS} to {MAX_SECONDS:e} seconds"
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Parses a number of seconds in [`MIN_SECONDS`, `MAX_SECONDS`] as `f64`.
pub fn parse_seconds_f64(s: &str) -> Result<f64, String> {
    parse_seconds(s).map(|d| d.as_secs_f64())
}

/// Parses a finite float in `lo..=hi`; `what` names it in the error.
pub fn parse_in_range(s: &str, lo: f64, hi: f64, what: &str) -> Result<f64, String> {
    let v = parse_f64(s, what)?;
    if !(lo..=hi).contains(&v) {
        return Err(format!(
            "{s} is out of range for {what}; give {lo} to {hi:e}"
        ));
    }
    Ok(v)
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
pub fn thousands(n: u64) -> String {
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
pub fn short(n: f64) -> String {
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
pub fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", thousands(n), if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_bounded() {
        assert_eq!(parse_seconds("1.5"), Ok(Duration::from_millis(1500)));
        for bad in ["0", "-1", "nan", "inf", "1e20", "1e-300", "abc", ""] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
        assert!(parse_seconds("1e9").is_ok());
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
