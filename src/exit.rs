//! Exit codes: a public contract (scripts branch on them), documented in README and `--help`.

/// What the process exit code means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCode {
    /// Compliant, or converged.
    Ok = 0,
    /// Drift found (`verify`, `apply --check`). Drift left after `apply` is [`ExitCode::ApplyFailed`].
    Drift = 1,
    /// Invalid policy or usage; nothing was changed.
    Usage = 2,
    /// Compliant except for changes that need a reboot.
    PendingReboot = 3,
    /// A change could not be applied, drift remains after `apply`, or another apply holds the lock.
    ApplyFailed = 4,
    /// No drift, but an item could not be checked (`verify`).
    CheckFailed = 5,
    /// `qga`, `fleet`: the guest agent cannot be reached or does not answer.
    AgentUnavailable = 6,
    /// `qga`: guestprep or its report is not in the guest.
    NotInGuest = 7,
    /// `qga report`: the report is older than the guest's boot or than `--max-age`.
    StaleReport = 8,
}

impl ExitCode {
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The code a report or a guest's process gave; an unknown one counts as a failed check.
    pub fn from_code(c: i32) -> Self {
        use ExitCode::*;
        [
            Ok,
            Drift,
            Usage,
            PendingReboot,
            ApplyFailed,
            CheckFailed,
            AgentUnavailable,
            NotInGuest,
            StaleReport,
        ]
        .into_iter()
        .find(|e| e.code() == c)
        .unwrap_or(CheckFailed)
    }
}

/// The exit-code table for `--help` and the README.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  compliant / converged
  1  drift (verify, apply --check); fleet: a VM is not compliant
  2  invalid policy or usage; nothing was changed
  3  compliant except for a pending reboot
  4  a change could not be applied, drift remains after apply, or the apply lock was not free
  5  no drift, but an item could not be checked (verify)
  6  qga, fleet: a guest agent cannot be reached or does not answer
  7  qga: guestprep, or its report, is not in the guest
  8  qga report: the report is stale (older than the guest's boot, or than --max-age)";

/// The command line asks for something that cannot be: a `--root` that does not exist, no policy
/// anywhere, a `--policy` file that is missing. Exit 2, nothing changed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
