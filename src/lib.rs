//! guestprep: converge, verify and seal Proxmox VM templates from a declarative TOML policy.
//!
//! The library holds everything; `main.rs` only parses arguments and maps errors to exit codes.
//! Data flows one way: [`policy`] (fragments → validated `Policy`) → [`resources`] (the ordered
//! items of that policy) → [`engine`] (check/plan/apply over a [`root::Root`]) → [`report`].

pub mod agent;
pub mod cli;
pub mod engine;
pub mod exit;
pub mod export;
pub mod fsutil;
pub mod lock;
pub mod output;
pub mod packages;
pub mod policy;
pub mod qga;
pub mod report;
pub mod resources;
pub mod root;
pub mod seal;
pub mod systemd;

use anyhow::Result;

use crate::engine::System;
use crate::exit::{ExitCode, UsageError};
use crate::policy::{LoadError, Loaded, Sources};
use crate::root::Root;

/// Opens the root and loads the whole policy (validated) for a command.
pub fn open(target: &cli::Target) -> Result<(System, Loaded)> {
    let root = open_root(&target.root)?;
    let sources = Sources::from_args(&target.policy.paths);
    let loaded = load_policy(&sources, &root)?;
    Ok((System::new(root), loaded))
}

/// Opens the `--root` directory; one that does not exist (or is not a directory) is usage.
pub fn open_root(dir: &std::path::Path) -> Result<Root> {
    if !dir.is_dir() {
        return Err(UsageError(format!(
            "--root {}: {}",
            dir.display(),
            if dir.exists() {
                "not a directory"
            } else {
                "no such directory"
            }
        ))
        .into());
    }
    Root::new(dir)
}

/// Loads the whole policy (validated); an invalid one is an [`policy::InvalidPolicy`] error, no
/// policy or a missing `--policy` path a [`UsageError`].
pub fn load_policy(sources: &Sources, root: &Root) -> Result<Loaded> {
    match policy::load(sources, root) {
        Ok(l) => Ok(l),
        Err(LoadError::Invalid(e)) => Err(e.into()),
        Err(LoadError::NoPolicy(where_)) => Err(UsageError(format!(
            "no policy: no fragment found in {where_} (give one with --policy PATH)"
        ))
        .into()),
        Err(LoadError::Io(e)) => {
            let missing = e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
            });
            if missing && matches!(sources, Sources::Explicit(_)) {
                Err(UsageError(format!("{e:#}")).into())
            } else {
                Err(e)
            }
        }
    }
}

pub fn sources_strings(l: &Loaded) -> Vec<String> {
    l.sources.iter().map(|p| p.display().to_string()).collect()
}

/// Runs a parsed command line and returns the process exit code. Errors are printed here, once.
pub fn run(cli: cli::Cli) -> i32 {
    use cli::Command;
    let code = |r: Result<ExitCode>| r.map(ExitCode::code);
    let (result, failure) = match &cli.command {
        Command::Apply(a) => (code(cli::apply::run(a)), ExitCode::ApplyFailed),
        Command::Verify(a) => (code(cli::verify::run(a)), ExitCode::CheckFailed),
        Command::Policy(p) => (code(cli::policy::run(p)), ExitCode::Usage),
        Command::Schema => (code(cli::schema::run()), ExitCode::Usage),
        Command::Prefetch(a) => (code(cli::prefetch::run(a)), ExitCode::ApplyFailed),
        // `qga exec` passes the guest program's own code through: already a number.
        Command::Qga(a) => (cli::qga::run(a), ExitCode::AgentUnavailable),
        Command::Daemon(a) => (code(agent::run(&a.target)), ExitCode::CheckFailed),
        Command::Seal(a) => (code(cli::seal::run(a)), ExitCode::ApplyFailed),
        Command::Completions(a) => (code(cli::generate::completions(a)), ExitCode::Usage),
        Command::Man(a) => (code(cli::generate::man(a)), ExitCode::Usage),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if let Some(inv) = e.downcast_ref::<policy::InvalidPolicy>() {
                eprintln!("{inv}");
                eprintln!("nothing was changed");
                return ExitCode::Usage.code();
            }
            if let Some(u) = e.downcast_ref::<UsageError>() {
                eprintln!("guestprep: error: {u}");
                eprintln!("nothing was changed");
                return ExitCode::Usage.code();
            }
            eprintln!("guestprep: error: {e:#}");
            let code = if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
            }) && matches!(cli.command, Command::Policy(_))
            {
                ExitCode::Usage
            } else {
                failure
            };
            code.code()
        }
    }
}
