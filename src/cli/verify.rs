//! `guestprep verify`: check every item (or those `--only`/`--skip` select) and report in one or
//! several formats (`--output FORMAT[=PATH]`); `--wait` first lets a freshly booted machine
//! settle. Never writes to the system.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;

use super::{Format, SelectArgs, Target};
use crate::exit::{ExitCode, UsageError};
use crate::output::{self, Style};
use crate::report::{ComplianceReport, Filter, Waited};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub target: Target,
    /// Print the JSON report (same as --format json, or --output json).
    #[arg(long)]
    pub json: bool,
    /// Output format, to standard output [default: human].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// An output: FORMAT (to standard output) or FORMAT=PATH (to a file, written atomically);
    /// repeatable, so one verification gives JUnit for a CI's UI and JSON for the archive.
    #[arg(long = "output", value_name = "FORMAT[=PATH]")]
    pub outputs: Vec<String>,
    #[command(flatten)]
    pub select: SelectArgs,
    /// Wait for the machine to settle first (systemd's job queue empty, its state running or
    /// degraded, over D-Bus), then verify again until compliant or SPAN ends (default 2min).
    /// Offline: no waiting.
    #[arg(long, value_name = "SPAN", num_args = 0..=1, default_missing_value = "2min", require_equals = true)]
    pub wait: Option<String>,
}

/// Loads the policy and checks the system: the report of `verify`.
pub fn report(target: &Target, filter: &Filter) -> Result<ComplianceReport> {
    let (sys, loaded) = target.open()?;
    Ok(crate::usecase::verify(&sys, &loaded, filter))
}

/// One output asked for: its format, its file (`None`: standard output), and the argument as
/// given, for messages.
struct Output {
    format: Format,
    path: Option<PathBuf>,
    what: String,
}

/// The outputs asked for. `--json` and `--format` are shorthands for one output to standard
/// output, as is `--output FORMAT=-`; two to standard output is a usage error. Each file is
/// checked here, before any work: only nothing or a regular file may be at its path
/// ([`super::check_host_file`]).
fn outputs(args: &VerifyArgs) -> Result<Vec<Output>> {
    use clap::ValueEnum;
    if args.json
        && let Some(f) = args.format
        && f != Format::Json
    {
        return Err(UsageError(format!(
            "--json and --format {} conflict: --json is --format json",
            f.to_possible_value()
                .map_or(String::new(), |v| v.get_name().to_string())
        ))
        .into());
    }
    let to_stdout = |format, what: &str| Output {
        format,
        path: None,
        what: what.to_string(),
    };
    let mut out = Vec::new();
    if args.json {
        out.push(to_stdout(Format::Json, "--json"));
    } else if let Some(f) = args.format {
        out.push(to_stdout(f, "--format"));
    }
    for spec in &args.outputs {
        let (name, path) = match spec.split_once('=') {
            Some((_, "")) => {
                return Err(
                    UsageError(format!("--output {spec}: the path after `=` is empty")).into(),
                );
            }
            Some((n, "-")) => (n, None),
            Some((n, p)) => (n, Some(PathBuf::from(p))),
            None => (spec.as_str(), None),
        };
        let format = Format::from_str(name, true).map_err(|_| {
            UsageError(format!(
                "--output {spec}: unknown format `{name}` (human, json, prometheus, junit)"
            ))
        })?;
        let what = format!("--output {spec}");
        if let Some(p) = &path {
            super::check_host_file(p, &what)?;
        }
        out.push(Output { format, path, what });
    }
    if out.iter().filter(|o| o.path.is_none()).count() > 1 {
        return Err(UsageError(
            "two outputs to standard output: give all but one a path (--output FORMAT=PATH)".into(),
        )
        .into());
    }
    if !out.iter().any(|o| o.path.is_none()) {
        out.push(to_stdout(Format::Human, "human"));
    }
    Ok(out)
}

fn render(r: &ComplianceReport, f: Format, style: &Style, quiet: u8) -> Result<String> {
    Ok(match f {
        Format::Json => format!("{}\n", serde_json::to_string_pretty(r)?),
        Format::Prometheus => crate::export::prometheus(r),
        Format::Junit => crate::export::junit(r),
        Format::Human => {
            let mut b = Vec::new();
            if quiet == 0 {
                output::human(&mut b, r, style)?;
            } else if quiet == 1 {
                output::verdict(&mut b, r)?;
            }
            String::from_utf8_lossy(&b).into_owned()
        }
    })
}

pub fn run(args: &VerifyArgs, quiet: u8) -> Result<ExitCode> {
    let outs = outputs(args)?;
    let filter = args.select.filter()?;
    let span = match &args.wait {
        Some(s) => Some(
            crate::policy::parse_timespan(s).map_err(|e| UsageError(format!("--wait {s}: {e}")))?,
        ),
        None => None,
    };
    let r = match span {
        Some(span) if args.target.root == std::path::Path::new("/") => {
            wait_and_verify(args, &filter, span, quiet)?
        }
        _ => report(&args.target, &filter)?,
    };
    let style = Style::stdout();
    for o in &outs {
        let text = render(&r, o.format, &style, quiet)?;
        match &o.path {
            Some(p) => super::write_host_file(p, &text, &o.what)?,
            None => {
                let mut out = std::io::stdout().lock();
                output::ignore_closed(out.write_all(text.as_bytes()).and_then(|()| out.flush()))?;
            }
        }
    }
    Ok(r.verify_exit())
}

/// `--wait`: systemd settles (its job queue empty, state running or degraded), then verify is
/// repeated until compliant or the span ends, saying on stderr what it waits for.
fn wait_and_verify(
    args: &VerifyArgs,
    filter: &Filter,
    span: Duration,
    quiet: u8,
) -> Result<ComplianceReport> {
    let started = Instant::now();
    let deadline = started + span;
    let say = |msg: String| {
        if quiet == 0 {
            eprintln!("guestprep: {msg}");
        }
    };
    let (sys, _) = args.target.open()?;
    let units = sys.units()?;
    let mut last_said = None::<Instant>;
    let (settled, state) = loop {
        let (state, jobs) = units.settle()?;
        if jobs.is_empty() && (state == "running" || state == "degraded") {
            break (true, state);
        }
        if Instant::now() >= deadline {
            break (false, state);
        }
        if last_said.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
            let shown: Vec<&str> = jobs.iter().take(5).map(String::as_str).collect();
            say(format!(
                "waiting for systemd to settle: state {state}, {} job(s) queued{}",
                jobs.len(),
                if shown.is_empty() {
                    String::new()
                } else {
                    format!(": {}", shown.join(", "))
                }
            ));
            last_said = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    drop(sys);
    let mut rounds = 0;
    let mut said: Option<(Instant, Vec<String>)> = None;
    let mut r = loop {
        rounds += 1;
        let r = report(&args.target, filter)?;
        if r.compliant || Instant::now() >= deadline {
            break r;
        }
        let bad: Vec<String> = r
            .items
            .iter()
            .filter(|i| {
                matches!(
                    i.status,
                    crate::report::Status::Drift | crate::report::Status::Error
                )
            })
            .map(|i| i.id.clone())
            .collect();
        // Said again when what it waits for changed, else every 10 s.
        let repeat = said
            .as_ref()
            .is_some_and(|(t, b)| *b == bad && t.elapsed() < Duration::from_secs(10));
        if !repeat {
            let shown: Vec<&str> = bad.iter().take(5).map(String::as_str).collect();
            say(format!(
                "waiting for compliance ({}s left): {} item(s) not compliant: {}",
                deadline.saturating_duration_since(Instant::now()).as_secs(),
                bad.len(),
                shown.join(", ")
            ));
            said = Some((Instant::now(), bad));
        }
        std::thread::sleep(
            Duration::from_secs(2).min(deadline.saturating_duration_since(Instant::now())),
        );
    };
    r.waited = Some(Waited {
        seconds: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        settled,
        system_state: state,
        rounds,
    });
    Ok(r)
}
