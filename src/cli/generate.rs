//! `guestprep completions SHELL` and the hidden `guestprep man --out DIR`: shell completions and
//! manual pages generated from the clap definition, so they cannot disagree with `--help`. The
//! package build (`make install`) runs both; nothing is generated at compile time.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, CommandFactory};

use crate::exit::ExitCode;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Directory to write guestprep.8 and one guestprep-SUBCOMMAND.8 per subcommand into.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

pub fn completions(args: &CompletionsArgs) -> Result<ExitCode> {
    let mut cmd = super::Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "guestprep", &mut std::io::stdout());
    Ok(ExitCode::Ok)
}

/// The page's date: SOURCE_DATE_EPOCH's day when set (Debian builds set it from the changelog),
/// so two builds of one source give the same pages.
fn page_date() -> String {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(|secs| {
            crate::report::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
                [..10]
                .to_string()
        })
        .unwrap_or_default()
}

pub fn man(args: &ManArgs) -> Result<ExitCode> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut cmd = super::Cli::command().disable_help_subcommand(true);
    cmd.build();
    let date = page_date();
    let mut written = Vec::new();
    write_pages(&cmd, "guestprep", &date, &args.out, &mut written)?;
    for p in written {
        println!("{}", p.display());
    }
    Ok(ExitCode::Ok)
}

/// Writes `NAME.8` for `cmd` and, under it, `NAME-SUB.8` for each visible subcommand.
fn write_pages(
    cmd: &clap::Command,
    name: &str,
    date: &str,
    out: &Path,
    written: &mut Vec<PathBuf>,
) -> Result<()> {
    let page = cmd
        .clone()
        .display_name(name.to_string())
        .bin_name(name.replace('-', " "));
    let man = clap_mangen::Man::new(page)
        .section("8")
        .manual("System Administration")
        .source(format!("guestprep {}", env!("CARGO_PKG_VERSION")))
        .date(date);
    let mut buf = Vec::new();
    man.render(&mut buf).context("rendering a manual page")?;
    let path = out.join(format!("{name}.8"));
    std::fs::write(&path, &buf).with_context(|| format!("writing {}", path.display()))?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(
            sub,
            &format!("{name}-{}", sub.get_name()),
            date,
            out,
            written,
        )?;
    }
    Ok(())
}
