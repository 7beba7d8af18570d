//! `guestprep dkms try FILE.deb|URL [--kernel VER]...`: build a DKMS package's module for each
//! installed kernel with headers in a throwaway tree, install nothing, and say per kernel whether
//! it builds, is refused by BUILD_EXCLUSIVE_KERNEL, or fails (with the first errors), and how long
//! it took. Exit 0 only if it builds for every kernel asked.

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::exit::ExitCode;
use crate::packages::dkmstry::{self, Outcome};

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
    /// One JSON object per kernel instead of lines.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: &DkmsCommand) -> Result<ExitCode> {
    let DkmsCommand::Try(a) = cmd;
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
    eprintln!(
        "guestprep: building {} {} for {} kernel(s) in a throwaway DKMS tree (nothing is installed)",
        m.name,
        m.version,
        kernels.len()
    );
    let tried = dkmstry::try_build(&deb, &m, &kernels, work.path())?;
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
        };
        if a.json {
            println!(
                "{}",
                serde_json::json!({
                    "module": m.name, "version": m.version, "kernel": t.kernel,
                    "outcome": word, "detail": detail, "seconds": (secs * 10.0).round() / 10.0,
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
