//! The compliance report in other tools' formats: the Prometheus text exposition format (for
//! node-exporter's textfile collector) and JUnit XML (for CI systems).
//!
//! Owns only the rendering; the report itself is [`crate::report`]. Both renderings are pure
//! functions of the report, so the daemon's textfile and `verify --format` always agree.

use std::fmt::Write as _;

use crate::report::{ComplianceReport, Item, Status};

const STATUSES: [Status; 6] = [
    Status::Compliant,
    Status::Drift,
    Status::PendingReboot,
    Status::Error,
    Status::Skipped,
    Status::Waived,
];

/// Renders the report as Prometheus text exposition format (version 0.0.4).
///
/// Per item, one `guestprep_item_status` series per possible status, 1 for the current one and 0
/// for the others (the kube-state-metrics idiom), so an alert is `guestprep_item_status{status="drift"} == 1`
/// and a status change never leaves a stale series behind.
pub fn prometheus(r: &ComplianceReport) -> String {
    let mut o = String::new();
    let mut metric = |name: &str, help: &str, samples: &[(String, String)]| {
        gauge(&mut o, name, help, samples.iter().cloned())
    };
    metric(
        "guestprep_compliant",
        "1 when no item of the policy is in drift or error.",
        &[(String::new(), u8::from(r.compliant).to_string())],
    );
    metric(
        "guestprep_items",
        "Items of the last report, by status.",
        &r.summary
            .by_status()
            .map(|(st, n)| (labels(&[("status", st.as_str())]), n.to_string())),
    );
    let per_item: Vec<(String, String)> = r
        .items
        .iter()
        .flat_map(|i| {
            STATUSES.iter().map(move |st| {
                (
                    labels(&[("id", &i.id), ("kind", &i.kind), ("status", st.as_str())]),
                    u8::from(i.status == *st).to_string(),
                )
            })
        })
        .collect();
    metric(
        "guestprep_item_status",
        "1 for the current status of each item, 0 for the others.",
        &per_item,
    );
    let generated = crate::clock::parse_rfc3339(&r.generated_at).unwrap_or(0);
    metric(
        "guestprep_last_run_timestamp_seconds",
        "When the last report was made, in seconds since the epoch.",
        &[(String::new(), generated.to_string())],
    );
    metric(
        "guestprep_last_run_duration_seconds",
        "How long the last verification took.",
        &[(String::new(), format!("{}", r.duration_ms as f64 / 1000.0))],
    );
    metric(
        "guestprep_exit_code",
        "The exit code `guestprep verify` returns for the last report.",
        &[(String::new(), r.exit_code.to_string())],
    );
    metric(
        "guestprep_info",
        "The guestprep version and the digest of the effective policy.",
        &[(
            labels(&[
                ("version", &r.guestprep_version),
                ("policy_digest", &r.policy_digest),
            ]),
            "1".to_string(),
        )],
    );
    o
}

/// One gauge in the text exposition format: HELP, TYPE, a line per sample (labels, value).
pub(crate) fn gauge(
    o: &mut String,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (String, String)>,
) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} gauge");
    for (labels, value) in samples {
        let _ = writeln!(o, "{name}{labels} {value}");
    }
}

/// `{k="v",…}` with the values escaped as the exposition format wants.
pub(crate) fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// Renders the report as JUnit XML: one test suite per resource kind, one test case per item.
/// Drift is a `<failure>`, an item that could not be checked an `<error>`, a skipped item
/// `<skipped>`; pending-reboot passes, with its message in `<system-out>`.
pub fn junit(r: &ComplianceReport) -> String {
    let mut kinds: Vec<&str> = Vec::new();
    for i in &r.items {
        if !kinds.contains(&i.kind.as_str()) {
            kinds.push(&i.kind);
        }
    }
    let s = &r.summary;
    let time = r.duration_ms as f64 / 1000.0;
    let mut o = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        o,
        "<testsuites name=\"guestprep verify\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{time}\" timestamp=\"{}\">",
        s.total,
        s.drift,
        s.error,
        s.skipped + s.waived,
        xml(&r.generated_at)
    );
    let hostname = r.host.hostname.clone().unwrap_or_default();
    for kind in kinds {
        let items: Vec<&Item> = r.items.iter().filter(|i| i.kind == kind).collect();
        let count = |st: Status| items.iter().filter(|i| i.status == st).count();
        let _ = writeln!(
            o,
            "  <testsuite name=\"guestprep.{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"0\" timestamp=\"{}\" hostname=\"{}\">",
            xml(kind),
            items.len(),
            count(Status::Drift),
            count(Status::Error),
            count(Status::Skipped) + count(Status::Waived),
            xml(r.generated_at.trim_end_matches('Z')),
            xml(&hostname),
        );
        for i in items {
            let open = format!(
                "    <testcase classname=\"guestprep.{}\" name=\"{}\" time=\"0\"",
                xml(kind),
                xml(&i.id)
            );
            let detail = format!(
                "expected: {}\nactual: {}",
                compact(&i.expected),
                compact(&i.actual)
            );
            match i.status {
                Status::Compliant => {
                    let _ = writeln!(o, "{open}/>");
                }
                Status::Drift | Status::Error => {
                    let tag = if i.status == Status::Drift {
                        "failure"
                    } else {
                        "error"
                    };
                    let _ = writeln!(
                        o,
                        "{open}>\n      <{tag} message=\"{}\" type=\"{}\">{}</{tag}>\n    </testcase>",
                        xml(&i.message),
                        i.status.as_str(),
                        xml(&detail)
                    );
                }
                Status::Skipped => {
                    let _ = writeln!(
                        o,
                        "{open}>\n      <skipped message=\"{}\"/>\n    </testcase>",
                        xml(&i.message)
                    );
                }
                // A CI's UI shows it as skipped, with the waiver's reason.
                Status::Waived => {
                    let why = i.waiver.as_ref().map_or("", |w| w.reason.as_str());
                    let _ = writeln!(
                        o,
                        "{open}>\n      <skipped message=\"waived: {}\"/>\n    </testcase>",
                        xml(why)
                    );
                }
                Status::PendingReboot => {
                    let _ = writeln!(
                        o,
                        "{open}>\n      <system-out>pending-reboot: {}</system-out>\n    </testcase>",
                        xml(&i.message)
                    );
                }
            }
        }
        o.push_str("  </testsuite>\n");
    }
    o.push_str("</testsuites>\n");
    o
}

fn compact(v: &serde_json::Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Escapes text for an XML attribute or element; drops characters XML 1.0 cannot carry.
fn xml(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\n' => o.push_str("&#10;"),
            '\t' | '\r' => o.push(' '),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => o.push('\u{FFFD}'),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            labels(&[("id", "file:/a\"b\\c\nd")]),
            r#"{id="file:/a\"b\\c\nd"}"#
        );
    }

    #[test]
    fn xml_escapes_markup_and_control_characters() {
        assert_eq!(
            xml("a<b>&\"c'\u{1}"),
            "a&lt;b&gt;&amp;&quot;c&apos;\u{FFFD}"
        );
    }
}
