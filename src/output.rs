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

/// Writes the item lines and the summary.
pub fn human(out: &mut impl Write, r: &ComplianceReport, style: &Style) -> std::io::Result<()> {
    let width = r
        .items
        .iter()
        .map(|i| i.id.len())
        .max()
        .unwrap_or(0)
        .min(60);
    for i in &r.items {
        let msg = if i.message.is_empty() {
            String::new()
        } else {
            format!("  {}", i.message)
        };
        writeln!(out, "{} {:<width$}{}", style.status(i.status), i.id, msg)?;
    }
    let s = &r.summary;
    writeln!(
        out,
        "{}: {} items: {} compliant, {} drift, {} pending-reboot, {} error, {} skipped ({}, {} ms)",
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
        if r.mode == "live" {
            "live system".to_string()
        } else {
            format!("offline root {}", r.root)
        },
        r.duration_ms
    )
}
