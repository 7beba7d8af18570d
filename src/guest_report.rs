//! A guest's compliance report read from the host through its guest agent: the daemon's
//! `/run/guestprep/report.json` by file-read, parsed, and dated by the guest's own clock (its age,
//! and whether it was made before the guest's last boot), and judged fresh or stale
//! ([`Fetched::freshness`]). `guestprep qga report` and `guestprep fleet` both read reports this
//! way and differ only in how they tell the answer (an exit code, a state).

use std::time::Duration;

use crate::qga::{Agent, QgaError};
use crate::report::{API_VERSION, ComplianceReport, parse_rfc3339, rfc3339};
use crate::text::{excerpt, excerpt_of};

/// Reports larger than this are refused (a real one is tens of KiB).
pub const MAX_REPORT: usize = 16 << 20;

/// A report as read from a guest.
#[derive(Debug)]
pub struct Fetched {
    pub report: ComplianceReport,
    /// The file's bytes, as the daemon wrote them.
    pub raw: Vec<u8>,
    /// When it was made (seconds since the epoch).
    pub made: i64,
    /// The guest's clock when it was read, if the agent told it.
    pub guest_now: Option<f64>,
    /// The guest's last boot (its clock minus its uptime), if the agent told both.
    pub guest_boot: Option<f64>,
}

impl Fetched {
    /// Seconds since the report was made, by the guest's clock (never negative).
    pub fn age(&self) -> Option<f64> {
        self.guest_now.map(|now| (now - self.made as f64).max(0.0))
    }

    /// Whether the report still says how the guest is: not made before the guest's last boot,
    /// and with `max_age`, no older than it by the guest's clock.
    pub fn freshness(&self, max_age: Option<Duration>) -> Freshness {
        judge(self.made, self.guest_now, self.guest_boot, max_age)
    }
}

/// A report's freshness, judged by the guest's clock.
#[derive(Clone, Debug, PartialEq)]
pub enum Freshness {
    Fresh,
    /// Made before the guest's last boot (that boot's time, RFC 3339): no daemon has run since.
    MadeBeforeBoot(String),
    /// Older than the limit asked for: its age in seconds.
    TooOld {
        age: f64,
        limit: Duration,
    },
    /// A limit was asked for, but the guest's clock is unknown (guest-get-time failed).
    NoClock,
}

/// [`Fetched::freshness`] of a report made at `made` (seconds since the epoch), the guest's clock
/// reading `now` and its last boot at `boot`. generatedAt holds whole seconds: one second of slack
/// before the boot.
fn judge(made: i64, now: Option<f64>, boot: Option<f64>, max_age: Option<Duration>) -> Freshness {
    if let Some(boot) = boot
        && (made as f64) < boot - 1.0
    {
        let at =
            std::time::UNIX_EPOCH + Duration::try_from_secs_f64(boot.max(0.0)).unwrap_or_default();
        return Freshness::MadeBeforeBoot(rfc3339(at));
    }
    let Some(limit) = max_age else {
        return Freshness::Fresh;
    };
    match now.map(|now| (now - made as f64).max(0.0)) {
        None => Freshness::NoClock,
        Some(age) if age > limit.as_secs_f64() => Freshness::TooOld { age, limit },
        Some(_) => Freshness::Fresh,
    }
}

/// Why there is no report.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The agent did not answer, or the connection failed.
    #[error(transparent)]
    Agent(QgaError),
    /// The agent answers but does not allow file-read.
    #[error("the guest agent does not allow reading files ({0})")]
    Disabled(QgaError),
    /// No report file; `installed`: whether the guestprep program is in the guest.
    #[error("no report at {path} in the guest")]
    Missing {
        path: String,
        installed: bool,
        /// Not installed, and the agent's `guest-get-osinfo` names a system guestprep does not
        /// manage (Talos, Windows…): its name, for an `unmanaged` verdict instead of a fault.
        unmanaged: Option<String>,
    },
    /// A file that is not a report of this version.
    #[error("{0}")]
    Invalid(String),
}

/// Reads the report at `path` in the guest; `program` is where guestprep is installed there (to
/// tell "not installed" from "daemon not running" when there is no report).
pub fn fetch(agent: &mut Agent, path: &str, program: &str) -> Result<Fetched, FetchError> {
    let raw = match agent.read_file(path, MAX_REPORT) {
        Ok(r) => r,
        Err(e) if e.is_not_found() => {
            let installed = exists(agent, program);
            return Err(FetchError::Missing {
                path: path.to_string(),
                installed,
                unmanaged: if installed { None } else { unmanaged_os(agent) },
            });
        }
        Err(e) if e.is_disabled() => return Err(FetchError::Disabled(e)),
        Err(e) => return Err(FetchError::Agent(e)),
    };
    let report = parse(&raw, path).map_err(FetchError::Invalid)?;
    let made = parse_rfc3339(&report.generated_at).ok_or_else(|| {
        FetchError::Invalid(format!(
            "{path}: generatedAt `{}` is not a time",
            excerpt(report.generated_at.as_bytes(), 40)
        ))
    })?;
    // Dated by the guest's own clock: no trust in the host's clock being in step.
    let guest_now = agent.guest_time().ok();
    let uptime = agent
        .read_file("/proc/uptime", 4096)
        .ok()
        .and_then(|b| crate::clock::parse_uptime(&b));
    let guest_boot = guest_now.zip(uptime).map(|(now, up)| now - up);
    Ok(Fetched {
        report,
        raw,
        made,
        guest_now,
        guest_boot,
    })
}

/// Parses a report (`what` names it in the error, which quotes only a short excerpt of it).
pub fn parse(raw: &[u8], what: &str) -> Result<ComplianceReport, String> {
    let r: ComplianceReport = serde_json::from_slice(raw).map_err(|e| {
        format!(
            "{what} is not a guestprep compliance report: {}",
            excerpt_of(&e, 200)
        )
    })?;
    if r.api_version != API_VERSION {
        return Err(format!(
            "{what} has apiVersion {}; this guestprep reads {API_VERSION}",
            excerpt(r.api_version.as_bytes(), 40)
        ));
    }
    Ok(r)
}

/// The guest's system as its agent names it (`guest-get-osinfo`) when it is one guestprep does
/// not manage (an immutable Talos node with only the qemu-guest-agent extension, Windows):
/// `Talos (id talos)`. `None` for Debian, Ubuntu, Flatcar, or when the agent cannot say.
pub fn unmanaged_os(agent: &mut Agent) -> Option<String> {
    let info = agent.execute("guest-get-osinfo", None).ok()?;
    let id = info
        .get("id")
        .and_then(|v| v.as_str())?
        .to_ascii_lowercase();
    if crate::platform::MANAGED_IDS.contains(&id.as_str()) {
        return None;
    }
    let name = info
        .get("pretty-name")
        .or_else(|| info.get("name"))
        .and_then(|v| v.as_str())
        .unwrap_or(&id);
    Some(format!(
        "{} (id {})",
        excerpt(name.as_bytes(), 60),
        excerpt(id.as_bytes(), 30)
    ))
}

/// Whether a path exists in the guest (it can be opened for reading).
pub fn exists(agent: &mut Agent, path: &str) -> bool {
    match agent.execute(
        "guest-file-open",
        Some(serde_json::json!({"path": path, "mode": "r"})),
    ) {
        Ok(h) => {
            let _ = agent.execute("guest-file-close", Some(serde_json::json!({"handle": h})));
            true
        }
        Err(e) => !e.is_not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_is_judged_by_the_guest_clock() {
        let min = Some(Duration::from_secs(60));
        let t = 1_800_000_000;
        let now = Some(t as f64 + 30.0);
        assert_eq!(judge(t, now, None, None), Freshness::Fresh);
        assert_eq!(judge(t, now, None, min), Freshness::Fresh);
        assert_eq!(judge(t, now, Some(t as f64 + 0.5), min), Freshness::Fresh);
        let booted = judge(t, now, Some(t as f64 + 10.0), None);
        assert_eq!(
            booted,
            Freshness::MadeBeforeBoot(rfc3339(
                std::time::UNIX_EPOCH + Duration::from_secs(t as u64 + 10)
            ))
        );
        let old = Some(t as f64 + 90.0);
        assert_eq!(
            judge(t, old, Some(t as f64), min),
            Freshness::TooOld {
                age: 90.0,
                limit: Duration::from_secs(60)
            }
        );
        assert_eq!(judge(t, None, None, min), Freshness::NoClock);
        assert_eq!(judge(t, None, None, None), Freshness::Fresh);
        // A guest clock behind the report's time is age 0, not negative.
        assert_eq!(
            judge(t, Some(t as f64 - 100.0), None, min),
            Freshness::Fresh
        );
    }
}
