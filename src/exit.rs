//! Exit codes: a public contract (scripts branch on them), documented in README and `--help`.

/// What the process exit code means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCode {
    /// Compliant, or converged.
    Ok = 0,
    /// Drift found (`verify`, `apply --check`), or left after `apply`.
    Drift = 1,
    /// Invalid policy or usage; nothing was changed.
    Usage = 2,
    /// Compliant except for changes that need a reboot.
    PendingReboot = 3,
    /// A change could not be applied (or another apply holds the lock).
    ApplyFailed = 4,
    /// No drift, but an item could not be checked (`verify`).
    CheckFailed = 5,
}

impl ExitCode {
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// The exit-code table for `--help` and the README.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  compliant / converged
  1  drift (verify, apply --check; or drift left after apply)
  2  invalid policy or usage; nothing was changed
  3  compliant except for a pending reboot
  4  a change could not be applied (or the apply lock could not be taken)
  5  no drift, but an item could not be checked (verify)";
