//! The compliance report: the public, versioned output of `verify --json` and `apply --json`.
//!
//! Owns the report types (whose JSON Schema is generated from them and committed as
//! `docs/report.schema.json`), the summary and exit-code rules, and the host facts. Changing a
//! field name here breaks users' scripts: add fields, never rename them.

use std::time::SystemTime;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::clock::{parse_rfc3339, rfc3339};
pub use crate::platform::{Host, installed_kernels, version_cmp};

pub mod seal;
use crate::exit::ExitCode;
use crate::root::Root;

pub const API_VERSION: &str = "guestprep.io/v1";
pub const KIND: &str = "ComplianceReport";

/// The state of one item.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// As the policy says.
    Compliant,
    /// Differs from the policy.
    Drift,
    /// Configured as the policy says; takes effect at the next boot.
    PendingReboot,
    /// Could not be checked or changed; `message` says why.
    Error,
    /// Not checked here (a live-only check on an offline root, say); `message` says why.
    Skipped,
    /// Not as the policy says, but a `[[waivers]]` entry accepts it until its expiry; the real
    /// status is in `waiver.status` (and `actual.status`).
    Waived,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Compliant => "compliant",
            Status::Drift => "drift",
            Status::PendingReboot => "pending-reboot",
            Status::Error => "error",
            Status::Skipped => "skipped",
            Status::Waived => "waived",
        }
    }
}

/// One checked item.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    /// Stable identifier, `KIND:NAME` (`sysctl:net.ipv4.ip_forward`, `file:/etc/…`).
    pub id: String,
    /// Resource kind: chrony, sysctl, modules, grub, ssh, swap, file.
    pub kind: String,
    pub status: Status,
    /// What the policy asks for.
    pub expected: Value,
    /// What was found (configured and live values where both exist).
    pub actual: Value,
    /// Human explanation, empty when compliant.
    #[serde(default)]
    pub message: String,
    /// Where the policy asks for this item: the fragment's `file:line:column`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// When not compliant: the change `apply` would make (as `apply --check` prints it), or what
    /// a person must do when apply cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediation: Option<String>,
    /// The `[[waivers]]` entry that matched this item (also when it has lapsed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiver: Option<WaiverInfo>,
}

/// A waiver as applied to one item.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaiverInfo {
    pub reason: String,
    /// `YYYY-MM-DD`, the last day the waiver holds; absent when it does not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// The item's real status, which the waiver accepts.
    pub status: Status,
    /// True when `expires` has passed: the item counts again with its real status.
    pub lapsed: bool,
    /// Where the waiver was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub total: usize,
    pub compliant: usize,
    pub drift: usize,
    pub pending_reboot: usize,
    pub error: usize,
    pub skipped: usize,
    /// Items a `[[waivers]]` entry accepts (not counted as drift or error).
    #[serde(default)]
    pub waived: usize,
}

impl Summary {
    pub fn of(items: &[Item]) -> Self {
        let mut s = Summary {
            total: items.len(),
            ..Summary::default()
        };
        for i in items {
            match i.status {
                Status::Compliant => s.compliant += 1,
                Status::Drift => s.drift += 1,
                Status::PendingReboot => s.pending_reboot += 1,
                Status::Error => s.error += 1,
                Status::Skipped => s.skipped += 1,
                Status::Waived => s.waived += 1,
            }
        }
        s
    }

    /// Each status with its count, in the order the summary lists them.
    pub fn by_status(&self) -> [(Status, usize); 6] {
        [
            (Status::Compliant, self.compliant),
            (Status::Drift, self.drift),
            (Status::PendingReboot, self.pending_reboot),
            (Status::Error, self.error),
            (Status::Skipped, self.skipped),
            (Status::Waived, self.waived),
        ]
    }
}

/// Which items a run covers: `--only KIND|ID-GLOB` and `--skip KIND|ID-GLOB`, repeatable.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub only: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip: Vec<String>,
}

impl Filter {
    /// Whether one pattern names an item: its kind (`sysctl`), the kind in its id (`unit` of
    /// `unit:chrony.service`), or a glob of its id (`unit:chrony*`).
    fn names(pattern: &str, id: &str, kind: &str) -> bool {
        pattern == kind
            || id.split_once(':').is_some_and(|(k, _)| k == pattern)
            || crate::text::glob(pattern, id)
    }

    /// Whether the item is selected: named by an `only` (when there are any) and by no `skip`.
    pub fn keeps(&self, id: &str, kind: &str) -> bool {
        (self.only.is_empty() || self.only.iter().any(|p| Self::names(p, id, kind)))
            && !self.skip.iter().any(|p| Self::names(p, id, kind))
    }

    pub fn is_empty(&self) -> bool {
        self.only.is_empty() && self.skip.is_empty()
    }
}

/// What `verify --wait` waited for.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Waited {
    /// Seconds spent waiting, in all.
    pub seconds: f64,
    /// True when systemd's job queue emptied and its state became `running` or `degraded`
    /// within the span.
    pub settled: bool,
    /// systemd's `SystemState` when the waiting ended.
    pub system_state: String,
    /// Verifications made (the last one is this report).
    pub rounds: u32,
}

/// One change `apply` made (or, with `--check`, would make).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangeRecord {
    pub item: String,
    pub action: String,
    /// False with `--check`: planned, not done.
    pub done: bool,
    /// True when an earlier change of the same item failed, so this one was not attempted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_run: bool,
    /// What was done in detail, on the last change of an item: the symlinks systemd created or
    /// removed, a job's result.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

/// What `apply` did, appended to its report.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplySection {
    pub check_only: bool,
    pub changes: Vec<ChangeRecord>,
}

/// The compliance report, `apiVersion: guestprep.io/v1`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComplianceReport {
    /// Always `guestprep.io/v1` for this schema.
    pub api_version: String,
    /// Always `ComplianceReport`.
    pub kind: String,
    /// True when no item is in drift or error (pending-reboot and skipped items allowed).
    pub compliant: bool,
    pub summary: Summary,
    pub items: Vec<Item>,
    /// `sha256:` of the effective policy (canonical JSON).
    pub policy_digest: String,
    /// Policy fragments, in the order they were merged.
    pub policy_sources: Vec<String>,
    pub host: Host,
    /// The root directory checked.
    pub root: String,
    /// `live` for the running system, `offline` for a root directory.
    pub mode: String,
    /// RFC 3339 UTC time the report was made.
    pub generated_at: String,
    pub duration_ms: u64,
    pub guestprep_version: String,
    /// The exit code the command returns for this report.
    pub exit_code: i32,
    /// Present in the output of `apply`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply: Option<ApplySection>,
    /// The item selection (`--only`, `--skip`) when one was given: the summary and exit code
    /// cover the selected items only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    /// `verify --wait`: how long it waited for the machine to settle and become compliant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waited: Option<Waited>,
    /// The seal manifest (/var/lib/guestprep/seal.json) when this system is, or was cloned from,
    /// a template sealed by `guestprep seal`: which template, when, by which policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<seal::Manifest>,
}

impl ComplianceReport {
    pub fn new(
        items: Vec<Item>,
        policy_digest: String,
        policy_sources: Vec<String>,
        root: &Root,
        started: std::time::Instant,
    ) -> Self {
        let summary = Summary::of(&items);
        let mut r = ComplianceReport {
            api_version: API_VERSION.to_string(),
            kind: KIND.to_string(),
            compliant: summary.drift == 0 && summary.error == 0,
            summary,
            items,
            policy_digest,
            policy_sources,
            host: crate::platform::host_facts(root, &crate::platform::Platform::detect(root)),
            root: root.dir().display().to_string(),
            mode: if root.is_live() { "live" } else { "offline" }.to_string(),
            generated_at: rfc3339(SystemTime::now()),
            duration_ms: started.elapsed().as_millis() as u64,
            guestprep_version: env!("CARGO_PKG_VERSION").to_string(),
            exit_code: 0,
            filter: None,
            waited: None,
            apply: None,
            seal: None,
        };
        r.exit_code = r.verify_exit().code();
        r
    }

    /// The exit code of `verify` for this report: drift 1, otherwise error 5, otherwise pending
    /// reboot 3, otherwise 0.
    pub fn verify_exit(&self) -> ExitCode {
        let s = &self.summary;
        if s.drift > 0 {
            ExitCode::Drift
        } else if s.error > 0 {
            ExitCode::CheckFailed
        } else if s.pending_reboot > 0 {
            ExitCode::PendingReboot
        } else {
            ExitCode::Ok
        }
    }
}

/// The JSON Schema of the report, as committed in `docs/report.schema.json`.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(ComplianceReport);
    let mut s = serde_json::to_string_pretty(&schema).expect("schema serializes");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn report_with(statuses: &[Status]) -> ComplianceReport {
        let items = statuses
            .iter()
            .enumerate()
            .map(|(i, s)| Item {
                id: format!("x:{i}"),
                kind: "x".into(),
                status: *s,
                expected: Value::Null,
                actual: Value::Null,
                message: String::new(),
                origin: None,
                remediation: None,
                waiver: None,
            })
            .collect();
        let root = Root::offline(Path::new("/")).unwrap();
        ComplianceReport::new(
            items,
            String::new(),
            Vec::new(),
            &root,
            std::time::Instant::now(),
        )
    }

    #[test]
    fn exit_code_precedence() {
        use Status::*;
        let code = |s: &[Status]| report_with(s).verify_exit();
        assert_eq!(code(&[Compliant, Skipped]), ExitCode::Ok);
        assert_eq!(code(&[Compliant, PendingReboot]), ExitCode::PendingReboot);
        assert_eq!(code(&[PendingReboot, Error]), ExitCode::CheckFailed);
        assert_eq!(code(&[Error, Drift, PendingReboot]), ExitCode::Drift);
        assert!(report_with(&[PendingReboot, Skipped]).compliant);
        assert!(!report_with(&[Error]).compliant);
    }

    #[test]
    fn kernel_versions_sort_numerically() {
        let mut v = vec!["6.12.10-amd64", "6.12.9-amd64", "6.1.0-28-amd64"];
        v.sort_by(|a, b| version_cmp(a, b));
        assert_eq!(v, ["6.1.0-28-amd64", "6.12.9-amd64", "6.12.10-amd64"]);
    }
}
