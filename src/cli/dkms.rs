//! `guestprep dkms try FILE.deb|URL [--kernel VER]...`: build a DKMS package's module for each
//! installed kernel with headers in a throwaway tree, install nothing, and say per kernel whether
//! it builds, is refused (by BUILD_EXCLUSIVE_KERNEL, or because the kernel lacks build options the
//! module needs: `--require-config`, and the policy's `require_config` for this module), or fails
//! (with the first errors), and how long it took. Exit 0 only if it builds for every kernel asked.

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::exit::ExitCode;
use crate::packages::dkmstry::{self, Outcome, Tried};
use crate::packages::kconfig::Need;

#[derive(Debug, Subcommand)]
pub enum DkmsCommand {
    /// Build a DKMS .deb's module for the installed kernels, in a throwaway tree; install nothing.
    Try(TryArgs),
}

#[derive(Debug, Args)]
pub struct TryArgs {
    /// The package: a .deb file or an http(s) URL.
    #[arg(value_name = "FILE.deb|URL")]
    pub package: String,
    /// Build for this kernel (its `uname -r` name; repeatable). Default: every installed kernel
    /// that has headers (/usr/lib/modules/VER/build).
    #[arg(long = "kernel", value_name = "VER")]
    pub kernels: Vec<String>,
    /// A kernel build option the module needs (`CONFIG_DRM`; repeatable): a kernel whose
    /// /boot/config-VER lacks it is refused, not built. Added to the policy's `require_config` for
    /// this module (a `[[packages.deb]]` whose name or DKMS module is this package's).
    #[arg(long = "require-config", value_name = "CONFIG_X")]
    pub require_config: Vec<String>,
    #[command(flatten)]
    pub policy: super::PolicyArgs,
    /// One JSON object per kernel instead of lines.
    #[arg(long)]
    pub json: bool,
}

/// What the module needs of a kernel: `--require-config` and the policy's `require_config` for
/// it. The root's own policy is read when there is one (none is not an error here); `--policy`
/// names one.
fn needs_of(
    a: &TryArgs,
    m: &dkmstry::Module,
    package: Option<&str>,
    root: &crate::root::Root,
) -> Result<Vec<Need>> {
    let mut options: Vec<String> = Vec::new();
    let sources = crate::policy::Sources::from_args(&a.policy.paths);
    let policy = match crate::policy::load(&sources, root) {
        Err(crate::policy::LoadError::NoPolicy(_)) if a.policy.paths.is_empty() => None,
        Ok(l) => Some(l.policy),
        Err(_) => Some(crate::usecase::load_policy(&sources, root)?.policy),
    };
    for d in policy
        .iter()
        .flat_map(|p| p.packages.iter())
        .flat_map(|p| &p.deb)
    {
        if let Some(k) = &d.dkms
            && (k.module == m.name || Some(d.name.as_str()) == package)
        {
            options.extend(k.require_config.iter().cloned());
        }
    }
    options.extend(a.require_config.iter().cloned());
    let mut needs: Vec<Need> = Vec::new();
    for n in Need::of(&m.name, &options) {
        if !needs.contains(&n) {
            needs.push(n);
        }
    }
    Ok(needs)
}

pub fn run(cmd: &DkmsCommand) -> Result<ExitCode> {
    let DkmsCommand::Try(a) = cmd;
    // Bad input before anything is downloaded.
    for o in &a.require_config {
        crate::policy::check_config_option(o)
            .map_err(|e| crate::exit::UsageError(format!("--require-config: {e}")))?;
    }
    let work = tempfile::Builder::new()
        .prefix("guestprep-dkms-try-")
        .tempdir()?;
    let deb = dkmstry::local_deb(&a.package, work.path())?;
    let m = dkmstry::module_of(&deb)?;
    let root = crate::root::Root::new(std::path::Path::new("/"))?;
    let kernels = if a.kernels.is_empty() {
        crate::resources::packages::kernels_with_headers(&root)
    } else {
        a.kernels.clone()
    };
    if kernels.is_empty() {
        return Err(crate::exit::UsageError(
            "no installed kernel has headers (/usr/lib/modules/VER/build): install linux-headers-VER, or name one with --kernel"
                .to_string(),
        )
        .into());
    }
    for k in &kernels {
        if !root.exists(&format!("/usr/lib/modules/{k}/build")) {
            return Err(crate::exit::UsageError(format!(
                "kernel {k} has no headers here (/usr/lib/modules/{k}/build): install linux-headers-{k}"
            ))
            .into());
        }
    }
    let package = crate::packages::deb::read(&deb)?.package;
    let needs = needs_of(a, &m, package.as_deref(), &root)?;
    // Kernels that lack what the module needs are refused here, before anything is built.
    let mut refused: Vec<Tried> = Vec::new();
    let mut fit: Vec<String> = Vec::new();
    for k in &kernels {
        match dkmstry::unfit(&root, k, &needs)? {
            Some(outcome) => refused.push(Tried {
                kernel: k.clone(),
                outcome,
                took: std::time::Duration::ZERO,
            }),
            None => fit.push(k.clone()),
        }
    }
    let mut tried = if fit.is_empty() {
        Vec::new()
    } else {
        eprintln!(
            "guestprep: building {} {} for {} kernel(s) in a throwaway DKMS tree (nothing is installed)",
            m.name,
            m.version,
            fit.len()
        );
        dkmstry::try_build(&deb, &m, &fit, work.path())?
    };
    tried.extend(refused);
    tried.sort_by_key(|t| kernels.iter().position(|k| *k == t.kernel));
    let mut all = true;
    for t in &tried {
        let secs = t.took.as_secs_f64();
        let (word, detail) = match &t.outcome {
            Outcome::Builds => ("builds", String::new()),
            Outcome::Refused(re) => {
                all = false;
                (
                    "refused",
                    format!("BUILD_EXCLUSIVE_KERNEL=\"{re}\" excludes it"),
                )
            }
            Outcome::Fails(errors) => {
                all = false;
                ("fails", errors.join(" | "))
            }
            Outcome::Unfit { detail, .. } => {
                all = false;
                ("refused", detail.clone())
            }
        };
        let missing = match &t.outcome {
            Outcome::Unfit { missing, .. } => missing.clone(),
            _ => Vec::new(),
        };
        if a.json {
            println!(
                "{}",
                serde_json::json!({
                    "module": m.name, "version": m.version, "kernel": t.kernel,
                    "outcome": word, "detail": detail, "seconds": (secs * 10.0).round() / 10.0,
                    "missingConfig": missing,
                })
            );
        } else if detail.is_empty() {
            println!("{}: {word} ({secs:.1}s)", t.kernel);
        } else {
            println!("{}: {word} ({secs:.1}s): {detail}", t.kernel);
        }
    }
    Ok(if all { ExitCode::Ok } else { ExitCode::Drift })
}
