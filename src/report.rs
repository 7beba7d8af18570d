//! The compliance report: the public, versioned output of `verify --json` and `apply --json`.
//!
//! Owns the report types (whose JSON Schema is generated from them and committed as
//! `docs/report.schema.json`), the summary and exit-code rules, and the host facts. Changing a
//! field name here breaks users' scripts: add fields, never rename them.

use std::time::{SystemTime, UNIX_EPOCH};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// Facts about the managed system (read from the root when offline).
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Host {
    pub hostname: Option<String>,
    /// Running kernel when live; newest installed kernel of the image when offline.
    pub kernel: Option<String>,
    /// `PRETTY_NAME` of os-release.
    pub os: Option<String>,
    /// `ID` and `VERSION_ID` of os-release.
    pub os_id: Option<String>,
    pub os_version_id: Option<String>,
    /// Seconds since boot; null offline.
    pub uptime_seconds: Option<f64>,
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
            || crate::waivers::glob(pattern, id)
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
    pub seal: Option<crate::seal::Manifest>,
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
            host: host_facts(root),
            root: root.dir().display().to_string(),
            mode: if root.is_live() { "live" } else { "offline" }.to_string(),
            generated_at: rfc3339(SystemTime::now()),
            duration_ms: started.elapsed().as_millis() as u64,
            guestprep_version: env!("CARGO_PKG_VERSION").to_string(),
            exit_code: 0,
            filter: None,
            waited: None,
            apply: None,
            seal: crate::seal::Manifest::load(root),
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

/// Reads host facts: from the live system, or from the image files offline.
pub fn host_facts(root: &Root) -> Host {
    let os = root
        .read_string("/etc/os-release")
        .ok()
        .flatten()
        .or_else(|| root.read_string("/usr/lib/os-release").ok().flatten());
    let field = |k: &str| -> Option<String> {
        os.as_deref()?.lines().find_map(|l| {
            let v = l.strip_prefix(k)?.strip_prefix('=')?;
            Some(v.trim().trim_matches('"').to_string())
        })
    };
    let (hostname, kernel, uptime) = if root.is_live() {
        let uts = nix::sys::utsname::uname().ok();
        let uptime = root
            .read_string("/proc/uptime")
            .ok()
            .flatten()
            .and_then(|s| crate::qga::parse_uptime(s.as_bytes()));
        (
            uts.as_ref()
                .map(|u| u.nodename().to_string_lossy().into_owned()),
            uts.as_ref()
                .map(|u| u.release().to_string_lossy().into_owned()),
            uptime,
        )
    } else {
        let hostname = root
            .read_string("/etc/hostname")
            .ok()
            .flatten()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        (hostname, installed_kernels(root).pop(), None)
    };
    Host {
        hostname,
        kernel,
        os: field("PRETTY_NAME"),
        os_id: field("ID"),
        os_version_id: field("VERSION_ID"),
        uptime_seconds: uptime,
    }
}

/// Kernel versions installed in the root (directories of /usr/lib/modules), oldest first.
pub fn installed_kernels(root: &Root) -> Vec<String> {
    let mut k = root.list_dir("/usr/lib/modules").unwrap_or_default();
    if k.is_empty() {
        k = root.list_dir("/lib/modules").unwrap_or_default();
    }
    k.sort_by(|a, b| version_cmp(a, b));
    k
}

/// Compares version strings numerically where they are numbers (6.12.9 < 6.12.10).
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |s: &str| -> Vec<(u64, String)> {
        s.split(|c: char| !c.is_ascii_alphanumeric())
            .map(|p| (p.parse().unwrap_or(0), p.to_string()))
            .collect()
    };
    parts(a).cmp(&parts(b))
}

/// Formats a time as RFC 3339 UTC with seconds (`2026-11-22T10:00:00Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses the RFC 3339 UTC form [`rfc3339`] writes (`2026-11-22T10:00:00Z`, fractional seconds
/// and a `+00:00` offset accepted) into seconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, time) = s.split_once(['T', 't', ' '])?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let time = time
        .strip_suffix(['Z', 'z'])
        .or_else(|| time.strip_suffix("+00:00"))?;
    let mut t = time.splitn(3, ':');
    let (hh, mm): (i64, i64) = (t.next()?.parse().ok()?, t.next()?.parse().ok()?);
    let ss: i64 = t.next()?.split('.').next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days-from-civil (Howard Hinnant's algorithm), the inverse of `rfc3339`.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Duration;

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
