//! `guestprep seal`: the command around [`crate::seal`]: choosing the operations (flag, then the
//! policy's `[seal]`, then the defaults, plus an interrupted seal's), the compliance gate, the
//! dry run, the confirmation, the lock, and the resumable seal (journal first, manifest last: see
//! `seal/journal.rs`).

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use super::Target;
use crate::exit::ExitCode;
use crate::report::Status;
use crate::seal::{self, Action, Manifest, Settings};

#[derive(Debug, Args)]
pub struct SealArgs {
    #[command(flatten)]
    pub target: Target,
    /// List the operations, their defaults and what each removes, and exit.
    #[arg(long)]
    pub list: bool,
    /// The operations, comma-separated and read left to right as virt-sysprep's: `defaults`,
    /// `all`, `NAME` or `+NAME`, `-NAME` (`defaults,-logfiles,+user-ssh-keys`). Default: the
    /// policy's `[seal] operations`, else `defaults`.
    #[arg(long, value_name = "LIST")]
    pub operations: Option<String>,
    /// Print every path and size it would remove or truncate; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do it without asking (required when standard input is not a terminal).
    #[arg(short, long)]
    pub yes: bool,
    /// Seal even though `verify` finds drift (said in the output and in the manifest). It only
    /// passes the gate: a sealed or half-sealed template sealed again keeps its first seal's id,
    /// time, host name and machine-id either way.
    #[arg(long)]
    pub force: bool,
    /// Print the manifest (or, with --dry-run, the plan) as JSON.
    #[arg(long)]
    pub json: bool,
}

fn verb(a: Action) -> &'static str {
    match a {
        Action::Remove => "remove",
        Action::RemoveTree => "remove tree",
        Action::Truncate => "truncate",
        Action::Uninitialize => "set uninitialized",
        Action::RemoveLines => "remove lines from",
    }
}

pub fn run(args: &SealArgs) -> Result<ExitCode> {
    if args.list {
        println!("{:<24} {:<8} WHAT IT REMOVES", "OPERATION", "DEFAULT");
        for op in seal::OPERATIONS {
            let d = if op.default { "yes" } else { "no" };
            println!("{:<24} {:<8} {}", op.name, d, op.about);
        }
        return Ok(ExitCode::Ok);
    }
    let p = match prepare(args)? {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    // The gate: a template is sealed only when it is what its policy says.
    let (report, bad) = gate(&p.sys, &p.loaded, &p.ops);
    let refuse = !bad.is_empty() && !args.force;
    if !bad.is_empty() {
        let what = format!(
            "{} item(s) not compliant: {}{}",
            bad.len(),
            bad[..bad.len().min(5)].join(", "),
            if bad.len() > 5 { ", …" } else { "" }
        );
        if refuse {
            eprintln!(
                "guestprep seal: refusing to seal: {what}. Run `guestprep apply` (or `guestprep verify` to see \
                 why), or seal anyway with --force; nothing was changed"
            );
        } else {
            eprintln!("guestprep seal: sealing although {what} (--force)");
        }
    }
    show(args, &p.ops, &p.plan, refuse)?;
    if refuse {
        return Ok(ExitCode::Drift);
    }
    if args.dry_run {
        eprintln!("guestprep seal: dry run: nothing was changed");
        return Ok(ExitCode::Ok);
    }
    if let Some(code) = confirm(args, p.sys.root(), &p.plan)? {
        return Ok(code);
    }

    carry_out(args, &p, &report, &bad)
}

/// Seals: the lock, the manifest this seal writes (an earlier seal's facts kept), the journal,
/// the plan carried out, the manifest.
fn carry_out(
    args: &SealArgs,
    p: &Prepared,
    report: &crate::report::ComplianceReport,
    bad: &[String],
) -> Result<ExitCode> {
    let Prepared {
        sys,
        loaded,
        ops,
        plan,
        earlier,
        machine_id,
    } = p;
    let _lock = match crate::lock::acquire(sys.root(), Duration::from_secs(60)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("guestprep seal: {e:#}");
            return Ok(ExitCode::ApplyFailed);
        }
    };
    // Another seal may have run while this one waited for the lock: its plan would be stale.
    if seal::Earlier::load(sys.root()).ok().as_ref() != Some(earlier) {
        eprintln!(
            "guestprep seal: another seal changed {} while this one waited: run it again; nothing was changed",
            sys.describe()
        );
        return Ok(ExitCode::ApplyFailed);
    }
    let fresh = Manifest {
        seal_id: seal::new_seal_id()?,
        sealed_at: crate::clock::rfc3339(std::time::SystemTime::now()),
        guestprep_version: env!("CARGO_PKG_VERSION").to_string(),
        policy_digest: loaded.digest(),
        template_hostname: report.host.hostname.clone().unwrap_or_default(),
        template_machine_id: seal::app_specific_machine_id(machine_id),
        operations: seal::ordered(ops).into_iter().map(String::from).collect(),
        forced: !bad.is_empty(),
        // journald's directory is named after the machine-id: the manifest names it by role.
        removed: plan.steps.clone(),
    };
    let manifest = seal::record(earlier.continued(machine_id), fresh, machine_id);
    let done = match seal::finish(sys.root(), plan, &manifest, earlier) {
        Ok(d) => d,
        Err(e) => {
            eprintln!(
                "guestprep seal: {e:#}; the seal is incomplete (no manifest written): run `guestprep seal` again to finish it"
            );
            return Ok(ExitCode::ApplyFailed);
        }
    };
    for p in &done.stale {
        eprintln!(
            "guestprep seal: removed {}, left by an interrupted write",
            p.display()
        );
    }
    if args.json {
        std::io::stdout().write_all(&seal::to_json(&manifest)?)?;
    }
    let total: u64 = plan.steps.iter().map(|s| s.bytes).sum();
    if done.wrote {
        eprintln!(
            "guestprep seal: sealed {} (seal {}{}): {} path(s), {}. Power off now (systemctl poweroff) and make the template (qm template VMID).",
            sys.describe(),
            manifest.seal_id,
            if earlier.continued(machine_id).is_some() {
                format!(", first sealed {}", manifest.sealed_at)
            } else {
                String::new()
            },
            plan.steps.len(),
            seal::size(total)
        );
    } else {
        eprintln!(
            "guestprep seal: {} is sealed already (seal {} of {}): nothing to do",
            sys.describe(),
            manifest.seal_id,
            manifest.sealed_at
        );
    }
    Ok(ExitCode::Ok)
}

/// What a seal works from, all found before anything is changed.
struct Prepared {
    sys: crate::engine::System,
    loaded: crate::policy::Loaded,
    /// The chosen operations, plus an interrupted seal's.
    ops: BTreeSet<&'static str>,
    plan: seal::Plan,
    earlier: seal::Earlier,
    /// The raw machine-id (empty when there is none to read): never written anywhere.
    machine_id: String,
}

/// Reads the policy, the operations, what an earlier seal left and the machine-id, and plans;
/// `Err(code)` (said on stderr) when the seal cannot go on.
fn prepare(args: &SealArgs) -> Result<Result<Prepared, ExitCode>> {
    // Validate everything before looking at the system: policy, operations, settings.
    let (sys, loaded) = args.target.open()?;
    let conf = loaded.policy.seal.clone().unwrap_or_default();
    let spec = match &args.operations {
        Some(s) => seal::split_spec(s),
        None => conf.operations.clone(),
    };
    let chosen = match seal::select(&spec) {
        Ok(o) => o,
        Err(m) => {
            eprintln!("guestprep seal: --operations: {m}; nothing was changed");
            return Ok(Err(ExitCode::Usage));
        }
    };
    let settings = Settings {
        user_ssh_keys: conf.user_ssh_keys.clone(),
        build_ssh_keys: conf.build_ssh_keys.clone(),
        uninitialized_machine_id: conf.uninitialized_machine_id,
        prometheus_textfile: loaded.policy.agent().prometheus_textfile,
    };
    // What an earlier seal left, and the machine-id, before anything is planned: finishing an
    // interrupted seal plans its operations too.
    let found =
        seal::Earlier::load(sys.root()).and_then(|e| Ok((seal::machine_id(sys.root())?, e)));
    let (machine_id, earlier) = match found {
        Ok(f) => f,
        Err(e) => {
            eprintln!("guestprep seal: {e:#}; nothing was changed");
            return Ok(Err(ExitCode::ApplyFailed));
        }
    };
    let ops = earlier.operations(&chosen, &machine_id);
    let plan = match seal::plan(sys.root(), &ops, &settings) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("guestprep seal: {e:#}; nothing was changed");
            return Ok(Err(if e.is::<seal::SettingsError>() {
                ExitCode::Usage
            } else {
                ExitCode::ApplyFailed
            }));
        }
    };
    if let (seal::Earlier::Interrupted(m), Some(_)) = (&earlier, earlier.continued(&machine_id)) {
        eprintln!(
            "guestprep seal: {} seal {} of {}, interrupted ({} left it): operations {}",
            if args.dry_run {
                "would finish"
            } else {
                "finishing"
            },
            m.seal_id,
            m.sealed_at,
            seal::JOURNAL,
            seal::ordered(&ops).join(",")
        );
    }
    Ok(Ok(Prepared {
        sys,
        loaded,
        ops,
        plan,
        earlier,
        machine_id,
    }))
}

/// Verifies the template against its policy: the report, and the items in drift or in error.
fn gate(
    sys: &crate::engine::System,
    loaded: &crate::policy::Loaded,
    ops: &BTreeSet<&'static str>,
) -> (crate::report::ComplianceReport, Vec<String>) {
    let report = crate::usecase::verify(sys, loaded, &crate::report::Filter::default());
    let bad = report
        .items
        .iter()
        .filter(|i| matches!(i.status, Status::Drift | Status::Error))
        .filter(|i| {
            !crate::policy::seal_ops::SETTLES
                .iter()
                .any(|(op, id)| ops.contains(op) && i.id == *id && i.status == Status::Drift)
        })
        .map(|i| i.id.clone())
        .collect();
    (report, bad)
}

/// Prints the plan: every path and size (`would …` in a dry run), or, with `--dry-run --json`,
/// the plan as JSON.
fn show(
    args: &SealArgs,
    ops: &BTreeSet<&'static str>,
    plan: &seal::Plan,
    refuse: bool,
) -> Result<()> {
    let total: u64 = plan.steps.iter().map(|s| s.bytes).sum();
    if args.json && args.dry_run {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "operations": seal::ordered(ops),
                "steps": plan.steps,
                "skipped": plan.skipped.iter().map(|(p, w)| serde_json::json!({"path": p, "why": w})).collect::<Vec<_>>(),
                "bytes": total,
                "wouldRefuse": refuse,
            }))?
        );
    } else if !args.json || refuse {
        let mut out = std::io::stdout().lock();
        let would = if args.dry_run { "would " } else { "" };
        for s in &plan.steps {
            writeln!(
                out,
                "{would}{} {} ({}) [{}]",
                verb(s.action),
                s.path,
                seal::size(s.bytes),
                s.operation
            )?;
        }
        for (p, why) in &plan.skipped {
            writeln!(out, "{would}leave {p}: {why}")?;
        }
        writeln!(
            out,
            "{} path(s), {} [{}]",
            plan.steps.len(),
            seal::size(total),
            seal::ordered(ops).join(",")
        )?;
    }
    Ok(())
}

/// Asks on a terminal unless `--yes`; `Some(code)` when the seal must not go on.
fn confirm(
    args: &SealArgs,
    root: &crate::root::Root,
    plan: &seal::Plan,
) -> Result<Option<ExitCode>> {
    if args.yes {
        return Ok(None);
    }
    if !std::io::stdin().is_terminal() {
        eprintln!(
            "guestprep seal: refusing without --yes: standard input is not a terminal; nothing was changed"
        );
        return Ok(Some(ExitCode::Usage));
    }
    let total: u64 = plan.steps.iter().map(|s| s.bytes).sum();
    eprint!(
        "Seal {}: remove or truncate {} path(s), {}? [y/N] ",
        root.describe(),
        plan.steps.len(),
        seal::size(total)
    );
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        eprintln!("guestprep seal: not sealed; nothing was changed");
        return Ok(Some(ExitCode::Usage));
    }
    Ok(None)
}
