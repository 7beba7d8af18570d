//! The clock and its formats: RFC 3339 times as the report writes them (`humantime`), HTTP dates
//! (`httpdate`, for `Retry-After`), and `/proc/uptime`. Pure: nothing here reads a clock file.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Formats a time as RFC 3339 UTC with seconds (`2026-11-22T10:00:00Z`).
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Parses the RFC 3339 UTC form [`rfc3339`] writes (`2026-11-22T10:00:00Z`, fractional seconds
/// and a `+00:00` offset accepted) into seconds since the epoch; a date that does not exist in
/// the calendar is `None`.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let s = s.trim();
    let utc = match s.strip_suffix("+00:00") {
        Some(rest) => format!("{rest}Z"),
        None => s.to_string(),
    };
    let t = humantime::parse_rfc3339(&utc).ok()?;
    let secs = t.duration_since(UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
}

/// An HTTP date (IMF-fixdate, RFC 9110 §5.6.7, and the obsolete forms) as a time.
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(s.trim()).ok()
}

/// How long from `now` until `at` (zero when `at` is past).
pub fn until(at: SystemTime, now: SystemTime) -> Duration {
    at.duration_since(now).unwrap_or(Duration::ZERO)
}

/// `/proc/uptime` (procfs-core's parser): its first number, when finite and plausible (a guest's
/// answer is data).
pub fn parse_uptime(b: &[u8]) -> Option<f64> {
    use procfs_core::FromRead;
    procfs_core::Uptime::from_read(b)
        .ok()
        .map(|u| u.uptime)
        .filter(|u| u.is_finite() && *u >= 0.0 && *u < 1e10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_000_000)),
            "2026-11-18T11:06:40Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn rfc3339_round_trips() {
        for secs in [0u64, 951_782_400, 1_795_000_000, 4_102_444_800] {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(secs as i64));
        }
        assert_eq!(
            parse_rfc3339("2026-11-18T11:06:40.25+00:00"),
            Some(1_795_000_000)
        );
        assert_eq!(parse_rfc3339("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn http_dates() {
        let t = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(rfc3339(t), "1994-11-06T08:49:37Z");
        assert_eq!(parse_http_date("yesterday"), None);
        assert_eq!(until(t, t + Duration::from_secs(5)), Duration::ZERO);
    }
}
