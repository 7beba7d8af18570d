//! `guestprep apply`: converge the system to the policy.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;

use super::Target;
use crate::engine::{self, ApplyOptions};
use crate::exit::ExitCode;
use crate::output::{self, Style};
use crate::report::{ApplySection, ComplianceReport};

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub target: Target,
    /// Change nothing; exit 1 if anything would change.
    #[arg(long)]
    pub check: bool,
    /// Print a unified diff of every file changed (or, with --check, that would be).
    #[arg(long)]
    pub diff: bool,
    /// End with the JSON compliance report (with an `apply` section listing the changes).
    #[arg(long)]
    pub json: bool,
    /// With an offline --root: run package actions (apt-get, apt-mark, dkms) inside it with chroot.
    /// The caller mounts what they need (/proc, /sys, /dev) first, as for any chroot.
    #[arg(long)]
    pub chroot: bool,
    /// Build again a DKMS module whose build failed before, although its package, the kernel and
    /// its headers are unchanged (by default a failed build is not redone on every apply).
    #[arg(long)]
    pub retry_failed: bool,
    /// Seconds to wait for another apply on the same root to finish.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub lock_timeout: u64,
    #[command(flatten)]
    pub select: super::SelectArgs,
}

pub fn run(args: &ApplyArgs, quiet: u8) -> Result<ExitCode> {
    let started = Instant::now();
    // Validate the whole policy before taking the lock or touching anything.
    let (mut sys, loaded) = args.target.open()?;
    sys.retry_failed = args.retry_failed;
    if args.chroot {
        if sys.is_live() {
            anyhow::bail!("--chroot needs an offline --root DIR");
        }
        sys.use_chroot()?;
    }
    let filter = args.select.filter()?;
    let resources = super::selected(&loaded.policy, sys.root(), &filter);
    let _lock = if args.check {
        None
    } else {
        match crate::lock::acquire(sys.root(), Duration::from_secs(args.lock_timeout)) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("guestprep: {e:#}");
                return Ok(ExitCode::ApplyFailed);
            }
        }
    };
    if !args.check {
        // A run killed while writing the daemon's stamp left a temp file beside it.
        let _ = crate::fsutil::clean_stale_temps(sys.root(), crate::paths::APPLIED_STAMP);
    }
    let outcome = engine::apply(
        &sys,
        &resources,
        ApplyOptions {
            check_only: args.check,
            files_only: false,
        },
    );
    // Tell a running daemon (it watches this file): its report follows at once. Offline, only
    // when a daemon keeps that image's report (its directory exists): an offline run writes
    // nothing into an image but what the policy asks.
    let daemon_here =
        sys.is_live() || matches!(sys.lstat("/run/guestprep")?, crate::root::Node::Dir { .. });
    if !args.check && !outcome.changes.is_empty() && daemon_here {
        let stamp = format!(
            "{} {} change(s)\n",
            crate::clock::rfc3339(std::time::SystemTime::now()),
            outcome.changes.len()
        );
        if let Err(e) = crate::fsutil::write_atomic(
            sys.root(),
            crate::paths::APPLIED_STAMP,
            stamp.as_bytes(),
            Some(0o644),
        ) {
            tracing::warn!("could not tell the daemon that apply changed the system: {e:#}");
        }
    }
    let mut report = crate::report_of(outcome.items, &loaded, sys.root(), started);
    if !filter.is_empty() {
        report.filter = Some(filter);
    }
    report.apply = Some(ApplySection {
        check_only: args.check,
        changes: outcome.changes.clone(),
    });
    let code = if outcome.failed {
        ExitCode::ApplyFailed
    } else if args.check && !outcome.changes.is_empty() {
        ExitCode::Drift
    } else {
        match report.verify_exit() {
            // After apply, drift that could not be planned away, or an error item, is a failure.
            ExitCode::Drift if args.check => ExitCode::Drift,
            ExitCode::Drift | ExitCode::CheckFailed => ExitCode::ApplyFailed,
            other => other,
        }
    };
    report.exit_code = code.code();

    output::ignore_closed(print(
        args,
        &outcome.diffs,
        &outcome.changes,
        &report,
        quiet,
    ))?;
    Ok(code)
}

/// The run's output: diffs, changes, the items and summary (or the JSON report).
fn print(
    args: &ApplyArgs,
    diffs: &[String],
    changes: &[crate::report::ChangeRecord],
    report: &ComplianceReport,
    quiet: u8,
) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    // -q: the verdict line only; -qq: nothing (the exit code says it). --json is never cut.
    if !args.json && quiet > 0 {
        if quiet == 1 {
            output::verdict(&mut out, report)?;
        }
        return out.flush();
    }
    let style = Style::stdout();
    if args.diff {
        // With --json the diffs go to stderr so stdout stays one JSON document.
        for d in diffs {
            if args.json {
                eprint!("{d}");
            } else {
                write!(out, "{}", style.diff(d))?;
            }
        }
    }
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(report)?)?;
    } else {
        for c in changes {
            let verb = if c.done {
                "changed"
            } else if args.check {
                "would change"
            } else if c.not_run {
                "not run"
            } else {
                "failed"
            };
            writeln!(out, "{verb:<14} {}  {}", c.item, c.action)?;
        }
        output::human(&mut out, report, &style)?;
        if changes.is_empty() {
            writeln!(out, "nothing to change")?;
        }
    }
    out.flush()
}
