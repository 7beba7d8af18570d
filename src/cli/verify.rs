//! `guestprep verify`: check every item and report; never writes.

use std::io::Write;
use std::time::Instant;

use anyhow::Result;
use clap::Args;

use super::{Format, Target};
use crate::engine;
use crate::exit::ExitCode;
use crate::output::{self, Style};
use crate::report::ComplianceReport;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub target: Target,
    /// Print the JSON report (same as --format json).
    #[arg(long)]
    pub json: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    pub format: Format,
}

/// Loads the policy and checks the system: the report of `verify`.
pub fn report(target: &Target) -> Result<ComplianceReport> {
    let started = Instant::now();
    let (sys, loaded) = target.open()?;
    let resources = crate::resources::build(&loaded.policy, &sys.root);
    let items = engine::verify(&sys, &resources);
    Ok(ComplianceReport::new(
        items,
        loaded.digest(),
        crate::sources_strings(&loaded),
        &sys.root,
        started,
    ))
}

pub fn run(args: &VerifyArgs) -> Result<ExitCode> {
    let r = report(&args.target)?;
    let format = if args.json { Format::Json } else { args.format };
    let text = match format {
        Format::Json => format!("{}\n", serde_json::to_string_pretty(&r)?),
        Format::Prometheus => crate::export::prometheus(&r),
        Format::Junit => crate::export::junit(&r),
        Format::Human => {
            let mut b = Vec::new();
            output::human(&mut b, &r, &Style::stdout())?;
            String::from_utf8_lossy(&b).into_owned()
        }
    };
    let mut out = std::io::stdout().lock();
    output::ignore_closed(out.write_all(text.as_bytes()).and_then(|()| out.flush()))?;
    Ok(r.verify_exit())
}
