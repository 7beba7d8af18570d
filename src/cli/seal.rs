//! `guestprep seal`: the command around [`crate::seal`]: choosing the operations (flag, then the
//! policy's `[seal]`, then the defaults), the compliance gate, the dry run, the confirmation, the
//! lock, and the manifest written last.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use super::Target;
use crate::engine;
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
    /// Seal even though `verify` finds drift (said in the output and in the manifest).
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
    // Validate everything before looking at the system: policy, operations, settings.
    let (sys, loaded) = args.target.open()?;
    let conf = loaded.policy.seal.clone().unwrap_or_default();
    let spec = match &args.operations {
        Some(s) => seal::split_spec(s),
        None => conf.operations.clone(),
    };
    let ops = match seal::select(&spec) {
        Ok(o) => o,
        Err(m) => {
            eprintln!("guestprep seal: --operations: {m}; nothing was changed");
            return Ok(ExitCode::Usage);
        }
    };
    let settings = Settings {
        user_ssh_keys: conf.user_ssh_keys.clone(),
        uninitialized_machine_id: conf.uninitialized_machine_id,
        prometheus_textfile: loaded.policy.agent().prometheus_textfile,
    };
    let plan = match seal::plan(&sys.root, &ops, &settings) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("guestprep seal: {e:#}; nothing was changed");
            return Ok(ExitCode::Usage);
        }
    };

    // The gate: a template is sealed only when it is what its policy says.
    let started = std::time::Instant::now();
    let resources = crate::resources::build(&loaded.policy, &sys.root);
    let items = engine::verify(&sys, &resources);
    let report = crate::report_of(items, &loaded, &sys.root, started);
    let bad: Vec<&str> = report
        .items
        .iter()
        .filter(|i| matches!(i.status, Status::Drift | Status::Error))
        .map(|i| i.id.as_str())
        .collect();
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

    let total: u64 = plan.steps.iter().map(|s| s.bytes).sum();
    if args.json && args.dry_run {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "operations": seal::ordered(&ops),
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
            seal::ordered(&ops).join(",")
        )?;
    }
    if refuse {
        return Ok(ExitCode::Drift);
    }
    if args.dry_run {
        eprintln!("guestprep seal: dry run: nothing was changed");
        return Ok(ExitCode::Ok);
    }
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            eprintln!(
                "guestprep seal: refusing without --yes: standard input is not a terminal; nothing was changed"
            );
            return Ok(ExitCode::Usage);
        }
        eprint!(
            "Seal {}: remove or truncate {} path(s), {}? [y/N] ",
            sys.root.describe(),
            plan.steps.len(),
            seal::size(total)
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("guestprep seal: not sealed; nothing was changed");
            return Ok(ExitCode::Usage);
        }
    }

    let _lock = match crate::lock::acquire(&sys.root, Duration::from_secs(60)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("guestprep seal: {e:#}");
            return Ok(ExitCode::ApplyFailed);
        }
    };
    let machine_id = sys
        .root
        .read_string("/etc/machine-id")?
        .unwrap_or_default()
        .trim()
        .to_string();
    let manifest = Manifest {
        seal_id: seal::new_seal_id()?,
        sealed_at: crate::report::rfc3339(std::time::SystemTime::now()),
        guestprep_version: env!("CARGO_PKG_VERSION").to_string(),
        policy_digest: loaded.digest(),
        template_hostname: report.host.hostname.clone().unwrap_or_default(),
        template_machine_id: seal::app_specific_machine_id(&machine_id),
        operations: seal::ordered(&ops).into_iter().map(String::from).collect(),
        forced: !bad.is_empty(),
        // journald's directory is named after the machine-id: the manifest names it by role.
        removed: seal::redact_machine_id(&plan.steps, &machine_id),
    };
    if let Err(e) = seal::execute(&sys.root, &plan) {
        eprintln!("guestprep seal: {e:#}; the seal is incomplete (no manifest written)");
        return Ok(ExitCode::ApplyFailed);
    }
    let mut json = serde_json::to_vec_pretty(&manifest)?;
    json.push(b'\n');
    crate::fsutil::write_atomic(&sys.root, seal::MANIFEST, &json, Some(0o644))
        .with_context(|| format!("writing the seal manifest {}", seal::MANIFEST))?;
    if args.json {
        std::io::stdout().write_all(&json)?;
    }
    eprintln!(
        "guestprep seal: sealed {} (seal {}): {} path(s), {}. Power off now (systemctl poweroff) and make the template (qm template VMID).",
        sys.root.describe(),
        manifest.seal_id,
        plan.steps.len(),
        seal::size(total)
    );
    Ok(ExitCode::Ok)
}
