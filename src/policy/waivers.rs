//! `[[waivers]]`: accepted deviations, with a reason and an optional expiry (InSpec's waivers),
//! their keys, validation and typed value. Applying them to a report is `crate::waivers`.
//!
//! ```toml
//! [[waivers]]
//! items = ["sysctl:net.ipv4.ip_forward", "unit:prometheus-*"]   # ids or globs (`*`, `?`)
//! reason = "routing is done by the CNI on these nodes"          # required
//! expires = 2026-12-31                                          # optional TOML date
//! ```

use serde::Serialize;

use super::tree::{Entry, Origin, Value};
use super::validate::V;

#[derive(Clone, Debug, Serialize)]
pub struct Waiver {
    pub items: Vec<String>,
    pub reason: String,
    /// `YYYY-MM-DD`: the waiver holds through that day (UTC) and lapses after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// Where the waiver was written (for `policy check`'s warnings and the items' origin).
    #[serde(skip)]
    pub origin: Option<Origin>,
}

/// A date as `YYYY-MM-DD`, checked to exist in the calendar.
fn check_date(s: &str) -> Result<(), String> {
    let ok = s.len() == 10
        && crate::clock::parse_rfc3339(&format!("{s}T00:00:00Z")).is_some()
        && s.as_bytes()[4] == b'-'
        && s.as_bytes()[7] == b'-';
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not a date: write a TOML date such as 2026-12-31 (no time, no quotes)"
        ))
    }
}

fn check_pattern(s: &str) -> Result<(), String> {
    if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`{s}` is not an item id or glob: ids look like `sysctl:net.ipv4.ip_forward`, globs like `unit:prometheus-*`"
        ));
    }
    Ok(())
}

impl V {
    pub(super) fn waivers(&mut self, e: &Entry) -> Vec<Waiver> {
        let Value::Array(list) = &e.node.value else {
            let msg = format!(
                "expected an array of tables `[[waivers]]`, found {}",
                e.node.value.type_name()
            );
            self.err(&e.node.origin, "waivers", msg);
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, n) in list.iter().enumerate() {
            let p = format!("waivers[{i}]");
            let Value::Table(t) = &n.value else {
                let msg = format!("expected a table, found {}", n.value.type_name());
                self.err(&n.origin, &p, msg);
                continue;
            };
            self.known_keys(t, &p, &["items", "reason", "expires"]);
            let items = self.list(t, &p, "items", check_pattern);
            if t.get("items").is_none() {
                self.err(
                    &n.origin,
                    &format!("{p}.items"),
                    "missing required key `items`",
                );
            } else if items.is_empty()
                && t.get("items")
                    .is_some_and(|e| matches!(&e.node.value, Value::Array(a) if a.is_empty()))
            {
                self.err(
                    &n.origin,
                    &format!("{p}.items"),
                    "`items` is empty: a waiver names what it waives",
                );
            }
            let reason = self.string(t, &p, "reason").unwrap_or_default();
            if t.get("reason").is_none() || reason.trim().is_empty() {
                self.err(
                    &n.origin,
                    &format!("{p}.reason"),
                    "missing required key `reason`: a waiver says why the deviation is accepted",
                );
            }
            let expires = t.get("expires").and_then(|x| match &x.node.value {
                Value::Datetime(d) => match check_date(d) {
                    Ok(()) => Some(d.clone()),
                    Err(m) => {
                        self.err(&x.node.origin, &format!("{p}.expires"), m);
                        None
                    }
                },
                other => {
                    let msg = format!(
                        "expected a TOML date such as 2026-12-31, found {}",
                        other.type_name()
                    );
                    self.err(&x.node.origin, &format!("{p}.expires"), msg);
                    None
                }
            });
            out.push(Waiver {
                items,
                reason,
                expires,
                origin: Some(n.origin.clone()),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert!(check_date("2026-12-31").is_ok());
        assert!(check_date("2026-13-01").is_err());
        assert!(check_date("2026-12-31T10:00:00").is_err());
        assert!(check_date("tomorrow").is_err());
    }
}
