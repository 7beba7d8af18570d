//! The report as Node Feature Discovery labels: a feature file for nfd-worker's local source
//! (`[agent] nfd = true`; `/etc/kubernetes/node-feature-discovery/features.d/guestprep`),
//! rewritten atomically (through `fsutil`) with every report the daemon publishes.
//!
//! NFD's format: one `name[=value]` per line; `#` lines are comments, except directives: `#
//! +expiry-time=RFC3339` makes nfd-worker ignore the lines after it once that time has passed.
//! It is set three report intervals ahead: the file is rewritten every round, so a live agent
//! keeps it fresh and a dead one's labels expire. Files whose names start with `.` are ignored,
//! so `fsutil`'s temporary file is never read half-written. Values are Kubernetes label values
//! (at most 63 of `[A-Za-z0-9._-]`, alphanumeric at both ends): anything else is replaced.

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

use crate::fsutil;
use crate::policy::Agent;
use crate::report::{ComplianceReport, Status};
use crate::root::Root;

/// The labels' namespace (nfd-master: `-extra-label-ns=guestprep.io`).
pub const PREFIX: &str = "guestprep.io";

/// How many report intervals ahead the labels expire.
pub const EXPIRY_INTERVALS: u32 = 3;

/// A Kubernetes label value: at most 63 characters of `[A-Za-z0-9._-]`, alphanumeric at both
/// ends (empty is allowed). Other characters become `_` (`6.12.57+deb13-amd64` →
/// `6.12.57_deb13-amd64`).
pub fn label_value(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    mapped
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// Each DKMS module's state for the running kernel: `built`, `failed`, or `next-kernel-fails`
/// (built for the running kernel, but another installed kernel's build fails: the next boot of
/// it would lose the driver). From the report's `dkms:MODULE/VERSION/KVER` items.
pub fn dkms_states(report: &ComplianceReport) -> Vec<(String, &'static str)> {
    let running = report.host.kernel.as_deref().unwrap_or("");
    let mut modules: Vec<(String, Option<bool>, bool)> = Vec::new(); // (module, running ok, other fails)
    for it in &report.items {
        let Some(rest) = it.id.strip_prefix("dkms:") else {
            continue;
        };
        let mut parts = rest.splitn(3, '/');
        let (Some(module), Some(_version), Some(kver)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let ok = matches!(it.status, Status::Compliant | Status::Waived);
        let bad = matches!(it.status, Status::Drift | Status::Error);
        let i = match modules.iter().position(|m| m.0 == module) {
            Some(i) => i,
            None => {
                modules.push((module.to_string(), None, false));
                modules.len() - 1
            }
        };
        if kver == running {
            modules[i].1 = Some(ok);
        } else if bad {
            modules[i].2 = true;
        }
    }
    modules
        .into_iter()
        .filter_map(|(m, running_ok, other_fails)| {
            let state = match (running_ok, other_fails) {
                (Some(true), false) => "built",
                (Some(true), true) => "next-kernel-fails",
                (Some(false), _) => "failed",
                (None, true) => "failed",
                (None, false) => return None, // nothing checked for any kernel
            };
            Some((m, state))
        })
        .collect()
}

/// The feature file's text for `report`, expiring `EXPIRY_INTERVALS` intervals after `now`.
pub fn render(report: &ComplianceReport, interval: Duration, now: SystemTime) -> String {
    let expiry = now + interval * EXPIRY_INTERVALS;
    let mut s = String::from(
        "# Written by guestprep daemon from /run/guestprep/report.json; rewritten with every report.\n",
    );
    s.push_str(&format!(
        "# +expiry-time={}\n",
        crate::clock::rfc3339(expiry)
    ));
    s.push_str(&format!("{PREFIX}/compliant={}\n", report.compliant));
    if let Some(m) = &report.seal {
        s.push_str(&format!("{PREFIX}/seal-id={}\n", label_value(&m.seal_id)));
    }
    if let Some(k) = &report.host.kernel {
        s.push_str(&format!("{PREFIX}/kernel={}\n", label_value(k)));
    }
    for (module, state) in dkms_states(report) {
        // The name part of a label key is at most 63 characters too.
        let name = label_value(&format!("dkms.{module}"));
        s.push_str(&format!("{PREFIX}/{name}={state}\n"));
    }
    s
}

/// Writes the feature file, when `[agent] nfd` asks for it.
pub fn publish(root: &Root, report: &ComplianceReport, agent: &Agent) -> Result<()> {
    if !agent.nfd {
        return Ok(());
    }
    let text = render(report, agent.interval, SystemTime::now());
    let p = &agent.nfd_path;
    fsutil::write_atomic(root, p, text.as_bytes(), Some(0o644))
        .with_context(|| format!("writing the NFD feature file {p}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values() {
        assert_eq!(label_value("6.12.57+deb13-amd64"), "6.12.57_deb13-amd64");
        assert_eq!(label_value("-x-"), "x");
        assert_eq!(label_value(&"a".repeat(80)).len(), 63);
        assert_eq!(label_value("dkms.i915-sriov-dkms"), "dkms.i915-sriov-dkms");
    }
}
