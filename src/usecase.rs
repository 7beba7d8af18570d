//! The use cases every front end shares (the CLI's verbs and the daemon): open a root and its
//! policy, choose the items, verify, and make the report of a run (origins, waivers, the seal
//! manifest). Below `cli/` and `agent/`, above everything they use.

use anyhow::Result;

use crate::engine::{self, Resource, System};
use crate::exit::UsageError;
use crate::policy::{LoadError, Loaded, Sources};
use crate::report::{ComplianceReport, Filter};
use crate::root::Root;
use crate::{policy, report, saferead, waivers};

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
    match policy::load_for(sources, root, &validation_context(root)) {
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

/// What the policy is validated against on this root: its OpenSSH release (the binary live,
/// dpkg's status offline; neither: the newest table, and `policy check` says so).
pub fn validation_context(root: &Root) -> policy::ValidationContext {
    use crate::platform::{openssh_installed, openssh_release};
    let found = openssh_installed(root)
        .and_then(|(version, from)| Some((openssh_release(&version)?, version, from)));
    match found {
        Some((release, version, from)) => policy::ValidationContext {
            openssh: Some(policy::openssh::Sshd {
                version,
                release,
                from,
            }),
            no_openssh: None,
            os: None,
        },
        None => policy::ValidationContext {
            openssh: None,
            no_openssh: Some(format!(
                "no sshd on {} (neither /usr/sbin/sshd nor openssh-server in dpkg's status)",
                root.describe()
            )),
            os: None,
        },
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
    root: &Root,
    started: std::time::Instant,
) -> report::ComplianceReport {
    waivers::annotate(&mut items, loaded);
    let mut r = report::ComplianceReport::new(
        items,
        loaded.digest(),
        sources_strings(loaded),
        root,
        started,
    );
    r.seal = report::seal::Manifest::load(root);
    r
}

/// The resources of the policy that the filter keeps.
pub fn selected(policy: &policy::Policy, root: &Root, filter: &Filter) -> Vec<Box<dyn Resource>> {
    crate::resources::build(policy, root)
        .into_iter()
        .filter(|r| filter.keeps(&r.id(), r.kind()))
        .collect()
}

/// `verify`: checks the selected items (writing nothing) and reports them; the filter is in the
/// report when one was given.
pub fn verify(sys: &System, loaded: &Loaded, filter: &Filter) -> ComplianceReport {
    let started = std::time::Instant::now();
    let resources = selected(&loaded.policy, sys.root(), filter);
    let items = engine::verify(sys, &resources);
    let mut r = report_of(items, loaded, sys.root(), started);
    if !filter.is_empty() {
        r.filter = Some(filter.clone());
    }
    r
}
