//! guestprep: converge, verify and seal Proxmox VM templates from a declarative TOML policy.
//!
//! The library holds everything; `main.rs` only parses arguments and calls [`cli::run`]. `cli/`
//! sits on top: nothing else imports it.
//! Data flows one way: [`policy`] (fragments → validated `Policy`) → [`resources`] (the ordered
//! items of that policy) → [`engine`] (check/plan/apply over a [`root::Root`]) → [`report`].

pub mod agent;
pub mod boot;
pub mod cli;
pub mod engine;
pub mod exit;
pub mod export;
pub mod fleet;
pub mod fsutil;
pub mod guest_report;
pub mod inroot;
pub mod lock;
pub mod output;
pub mod packages;
pub mod paths;
pub mod policy;
pub mod qga;
pub mod report;
pub mod resources;
pub mod root;
pub mod saferead;
pub mod seal;
pub mod systemd;
pub mod text;
pub mod waivers;

use anyhow::Result;

use crate::engine::System;
use crate::exit::UsageError;
use crate::policy::{LoadError, Loaded, Sources};
use crate::root::Root;

/// Opens the root directory and loads the whole policy (validated) from `policy` (files or
/// directories; none: the root's drop-in directories).
pub fn open(root_dir: &std::path::Path, policy: &[std::path::PathBuf]) -> Result<(System, Loaded)> {
    let root = open_root(root_dir)?;
    let sources = Sources::from_args(policy);
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
            let unreadable = e
                .chain()
                .any(|c| c.is::<saferead::NotRegular>() || c.is::<saferead::TooLarge>());
            if unreadable || (missing && matches!(sources, Sources::Explicit(_))) {
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

/// The report of a run: each item's origin in the policy and the policy's waivers applied, then
/// the summary and exit code over what remains.
pub fn report_of(
    mut items: Vec<report::Item>,
    loaded: &Loaded,
    root: &root::Root,
    started: std::time::Instant,
) -> report::ComplianceReport {
    waivers::annotate(&mut items, loaded);
    report::ComplianceReport::new(
        items,
        loaded.digest(),
        sources_strings(loaded),
        root,
        started,
    )
}
