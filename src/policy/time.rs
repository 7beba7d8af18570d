//! `[time]`: the time zone, its key, validation and typed value (the item is
//! `resources/time.rs`).
//!
//! ```toml
//! [time]
//! timezone = "Etc/UTC"
//! ```

use serde::Serialize;

use super::tree::Table;
use super::validate::V;

#[derive(Clone, Debug, Serialize)]
pub struct Time {
    pub timezone: String,
}

/// An IANA zone name as tzdata spells it: `Europe/Berlin`, `Etc/UTC`, `UTC`.
fn check_zone(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && !s.starts_with('/')
        && !s.ends_with('/')
        && s.split('/').all(|p| !p.is_empty() && p != "." && p != "..")
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_+-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not a time zone name like \"Europe/Berlin\" or \"Etc/UTC\" (as in /usr/share/zoneinfo)"
        ))
    }
}

impl V {
    pub(super) fn time(&mut self, t: &Table, origin: &super::tree::Origin) -> Time {
        self.known_keys(t, "time", &["timezone"]);
        let timezone = match self.string(t, "time", "timezone") {
            Some(z) => {
                if let Err(m) = check_zone(&z) {
                    self.err(&t.entries["timezone"].node.origin, "time.timezone", m);
                }
                z
            }
            None => {
                if t.get("timezone").is_none() {
                    self.err(origin, "time.timezone", "missing required key `timezone`");
                }
                String::new()
            }
        };
        Time { timezone }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn zones() {
        for ok in [
            "Etc/UTC",
            "UTC",
            "Europe/Berlin",
            "America/Argentina/Buenos_Aires",
            "Etc/GMT+5",
        ] {
            assert!(super::check_zone(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../../etc/shadow",
            "Europe/",
            "Europe Berlin",
            "a//b",
        ] {
            assert!(super::check_zone(bad).is_err(), "{bad}");
        }
    }
}
