//! Human output: one line per item, a summary, diffs; colour only on a terminal (and never with
//! `NO_COLOR`). Machine output is the report's JSON, printed by the commands themselves.

use std::io::{IsTerminal, Write};

use crate::report::{ComplianceReport, Status};

pub struct Style {
    colour: bool,
}

impl Style {
    pub fn stdout() -> Self {
        Style {
            colour: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    pub fn plain() -> Self {
        Style { colour: false }
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    pub fn status(&self, s: Status) -> String {
        let text = format!("{:<14}", s.as_str());
        match s {
            Status::Compliant => self.paint("32", &text),
            Status::Drift => self.paint("31", &text),
            Status::PendingReboot => self.paint("33", &text),
            Status::Error => self.paint("1;31", &text),
            Status::Skipped => self.paint("2", &text),
            Status::Waived => self.paint("35", &text),
        }
    }

    pub fn diff(&self, d: &str) -> String {
        if !self.colour {
            return d.to_string();
        }
        d.lines()
            .map(|l| {
                if l.starts_with("+++") || l.starts_with("---") {
                    self.paint("1", l)
                } else if l.starts_with('+') {
                    self.paint("32", l)
                } else if l.starts_with('-') {
                    self.paint("31", l)
                } else if l.starts_with("@@") {
                    self.paint("36", l)
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    }
}

/// A reader that went away (`verify | head -1`) is not a failure of the command: the verdict
/// stands, the rest of the output is dropped.
pub fn ignore_closed(r: std::io::Result<()>) -> std::io::Result<()> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Makes text from elsewhere (a guest's report, a file in an image) safe to print on a terminal:
/// C0 controls, DEL and C1 controls become visible escapes (`\x1b`), so an item id cannot retitle
/// or clear the operator's terminal. With `keep_lines`, newlines and tabs stay (multi-line text).
pub fn escape_controls(s: &str, keep_lines: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let code = c as u32;
        let control = code < 0x20 || code == 0x7f || (0x80..0xa0).contains(&code);
        if !control || (keep_lines && (c == '\n' || c == '\t')) {
            out.push(c);
        } else {
            out.push_str(&format!("\\x{code:02x}"));
        }
    }
    out
}

/// Escaped bytes for a terminal: lossy UTF-8, controls made visible, lines kept.
pub fn escape_bytes(b: &[u8]) -> String {
    escape_controls(&String::from_utf8_lossy(b), true)
}

/// Writes the item lines and the summary.
pub fn human(out: &mut impl Write, r: &ComplianceReport, style: &Style) -> std::io::Result<()> {
    // Ids and messages may come from a guest or an image: never raw controls on a terminal.
    let width = r
        .items
        .iter()
        .map(|i| escape_controls(&i.id, false).chars().count())
        .max()
        .unwrap_or(0)
        .min(60);
    for i in &r.items {
        let id = escape_controls(&i.id, false);
        let line = if i.message.is_empty() {
            format!("{} {id}", style.status(i.status))
        } else {
            format!(
                "{} {id:<width$}  {}",
                style.status(i.status),
                escape_controls(&i.message, false)
            )
        };
        writeln!(out, "{}", line.trim_end())?;
    }
    verdict(out, r)
}

/// The summary line alone (`verify -q`).
pub fn verdict(out: &mut impl Write, r: &ComplianceReport) -> std::io::Result<()> {
    let s = &r.summary;
    let waived = if s.waived > 0 {
        format!(", {} waived", s.waived)
    } else {
        String::new()
    };
    let mut notes = vec![if r.mode == "live" {
        "live system".to_string()
    } else {
        format!("offline root {}", escape_controls(&r.root, false))
    }];
    if let Some(f) = &r.filter {
        let mut parts = Vec::new();
        parts.extend(f.only.iter().map(|p| format!("--only {p}")));
        parts.extend(f.skip.iter().map(|p| format!("--skip {p}")));
        notes.push(escape_controls(&parts.join(" "), false));
    }
    if let Some(w) = &r.waited {
        notes.push(format!("waited {:.1} s", w.seconds));
    }
    notes.push(format!("{} ms", r.duration_ms));
    writeln!(
        out,
        "{}: {} items: {} compliant, {} drift, {} pending-reboot, {} error, {} skipped{waived} ({})",
        if r.compliant {
            "compliant"
        } else {
            "NOT compliant"
        },
        s.total,
        s.compliant,
        s.drift,
        s.pending_reboot,
        s.error,
        s.skipped,
        notes.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_made_visible() {
        let hostile = "id\x1b]0;owned\x07\x1b[2J\u{9b}31m\x7f";
        let e = escape_controls(hostile, false);
        assert_eq!(e, "id\\x1b]0;owned\\x07\\x1b[2J\\x9b31m\\x7f");
        assert!(!e.chars().any(|c| c.is_control()));
        assert_eq!(escape_controls("a\nb\tc", true), "a\nb\tc");
        assert_eq!(escape_controls("a\nb", false), "a\\x0ab");
        assert_eq!(escape_controls("zażółć", false), "zażółć");
    }
}
