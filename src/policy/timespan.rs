//! systemd's time spans (`15min`, `1h 30min`, `500ms`), as the policy's durations are written:
//! parsed with a bound, and formatted back the way systemd prints them.

/// Parses a systemd time span: numbers with units (`us`, `ms`, `s`, `min`, `h`, `d`, and their
/// long forms), summed; a bare number is seconds.
pub fn parse_timespan(s: &str) -> Result<std::time::Duration, String> {
    let bad = || {
        format!("`{s}` is not a time span (examples: \"30s\", \"15min\", \"1h 30min\", \"500ms\")")
    };
    let mut total = 0f64;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = rest[num_end..].trim_start();
        let unit_end = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "" | "s" | "sec" | "second" | "seconds" => 1.0,
            "us" | "usec" => 1e-6,
            "ms" | "msec" => 1e-3,
            "m" | "min" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86_400.0,
            _ => return Err(bad()),
        };
        total += n * scale;
        rest = rest[unit_end..].trim_start();
    }
    // Checked: a span is added to clocks later, and a huge one would overflow them.
    if !total.is_finite() || total > MAX_TIMESPAN_SECS {
        return Err(format!(
            "`{s}` is too long: a time span is at most {} days",
            MAX_TIMESPAN_SECS / 86_400.0
        ));
    }
    std::time::Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// The longest time span accepted anywhere (ten years): far beyond any useful interval, far below
/// what would overflow a clock when added to it.
pub const MAX_TIMESPAN_SECS: f64 = 10.0 * 365.0 * 86_400.0;

/// Formats a duration the way systemd writes time spans (`15min`, `1h 30min`, `200ms`).
pub fn format_timespan(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0".to_string();
    }
    let mut parts = Vec::new();
    let mut rest = ms;
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("min", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        if rest >= size {
            parts.push(format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_or_odd_timespans_are_errors_not_panics() {
        for s in [
            "99999999999999999999999999999999d",
            "1e400",
            "3651d",
            "1.2.3s",
            ".",
            "inf",
            "NaN",
        ] {
            assert!(parse_timespan(s).is_err(), "{s}");
        }
        assert!(parse_timespan("3650d").is_ok());
    }

    #[test]
    fn timespans() {
        use std::time::Duration;
        assert_eq!(parse_timespan("15min"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_timespan("1h 30min"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_timespan("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_timespan("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_timespan("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_timespan("").is_err());
        assert!(parse_timespan("soon").is_err());
        assert!(parse_timespan("5 parsecs").is_err());
        assert_eq!(format_timespan(Duration::from_secs(5400)), "1h 30min");
        assert_eq!(format_timespan(Duration::from_millis(200)), "200ms");
    }
}
