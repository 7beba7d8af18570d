//! `guestprep qga`: on the Proxmox host, read a VM's compliance report through its QEMU guest
//! agent (file-read of the daemon's report, or guest-exec of `guestprep verify --json`).
//!
//! Owns the command's arguments, the checks of what came back (a report at all, from this boot,
//! young enough), the messages and exit codes of each failure. The protocol is [`crate::qga`].

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use crate::exit::ExitCode;
use crate::guest_report::{self, FetchError, Freshness};
use crate::output::{self, Style};
use crate::paths::REPORT as REPORT_PATH;
use crate::qga::{Agent, QgaError};
use crate::report::ComplianceReport;

#[derive(Debug, Args)]
#[command(after_help = "\
On a Proxmox host the socket of VM 100 is /var/run/qemu-server/100.qga (or use --vmid 100); the VM
needs the guest agent option enabled and qemu-guest-agent running inside. Only one client at a
time: do not run this while another agent command (qm guest …) is in flight.")]
pub struct QgaArgs {
    /// The guest agent's unix socket.
    #[arg(
        long,
        value_name = "PATH",
        required_unless_present = "vmid",
        conflicts_with = "vmid"
    )]
    pub socket: Option<PathBuf>,
    /// Proxmox VM id: the socket is /var/run/qemu-server/VMID.qga.
    #[arg(long, value_name = "VMID")]
    pub vmid: Option<u32>,
    /// Seconds the whole exchange with the agent may take (connecting and every answer, whatever
    /// the agent sends); `verify`, `apply` and `exec` add their --exec-timeout for the program.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub timeout: u64,
    /// Print JSON (the report itself for `report` and `verify`); before or after the verb.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: QgaCommand,
}

#[derive(Debug, Subcommand)]
pub enum QgaCommand {
    /// Check that the agent answers; show its version and whether file-read and exec are enabled.
    Ping,
    /// Read the daemon's report (guest-file-open/read) and exit with its exit code.
    Report {
        /// The report's path in the guest.
        #[arg(long, value_name = "PATH", default_value = REPORT_PATH)]
        path: String,
        /// Fail (exit 8) when the report is older than this (`90s`, `20min`); it is always
        /// refused when made before the guest's last boot.
        #[arg(long, value_name = "SPAN", value_parser = parse_span)]
        max_age: Option<Duration>,
        /// Where guestprep is in the guest, to tell "not installed" from "daemon not running".
        #[arg(long, value_name = "PATH", default_value = "/usr/bin/guestprep")]
        guest_command: String,
    },
    /// Run `guestprep verify --json` in the guest (guest-exec) and exit with its exit code.
    Verify {
        /// The guestprep program in the guest.
        #[arg(long, value_name = "PATH", default_value = "guestprep")]
        guest_command: String,
        /// Seconds to wait for the guest's verify to finish.
        #[arg(long, value_name = "SECS", default_value_t = 120)]
        exec_timeout: u64,
        /// More arguments for the guest's `guestprep verify` (after `--`).
        #[arg(last = true, value_name = "ARGS")]
        args: Vec<String>,
    },
    /// Run `guestprep apply` in the guest (guest-exec), print its output and exit with its exit
    /// code: converge a VM from the host, as a Packer shell provisioner would over SSH.
    Apply {
        /// The guestprep program in the guest.
        #[arg(long, value_name = "PATH", default_value = "guestprep")]
        guest_command: String,
        /// Seconds to wait for the guest's apply to finish (a DKMS build takes minutes).
        #[arg(long, value_name = "SECS", default_value_t = 1800)]
        exec_timeout: u64,
        /// More arguments for the guest's `guestprep apply` (after `--`): `--check`, `--policy`…
        #[arg(last = true, value_name = "ARGS")]
        args: Vec<String>,
    },
    /// Run any program in the guest (guest-exec), print its output and exit with its exit code,
    /// like `qm guest exec` but with the output and status as a shell expects them.
    Exec {
        /// Seconds to wait for the program to finish.
        #[arg(long, value_name = "SECS", default_value_t = 120)]
        exec_timeout: u64,
        /// A file whose content is the program's standard input (`-`: this command's stdin).
        #[arg(long, value_name = "FILE")]
        input: Option<PathBuf>,
        /// The program and its arguments (a program without `/` is looked up in the agent's PATH).
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Print a file of the guest (guest-file-read), like `pvesh … agent/file-read`.
    Cat {
        /// The file's path in the guest.
        #[arg(value_name = "PATH")]
        path: String,
    },
}

fn parse_span(s: &str) -> Result<Duration, String> {
    crate::policy::parse_timespan(s)
}

/// A failure of the qga command, with its exit code. The message may carry the guest's words:
/// its controls are escaped.
fn fail(code: ExitCode, msg: impl std::fmt::Display) -> Result<ExitCode> {
    eprintln!(
        "guestprep qga: {}",
        output::escape_controls(&msg.to_string(), true)
    );
    Ok(code)
}

/// A guest program's output on our stdout: exact bytes into a pipe or file (`qga exec -- cat`
/// copies files), escaped on a terminal.
fn pass_stdout(b: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if out.is_terminal() {
        out.write_all(output::escape_bytes(b).as_bytes())
    } else {
        out.write_all(b)
    }
}

fn agent_failure(e: QgaError) -> Result<ExitCode> {
    let code = match e {
        QgaError::Command { .. } | QgaError::Protocol(_) => ExitCode::CheckFailed,
        _ => ExitCode::AgentUnavailable,
    };
    fail(code, e)
}

/// Runs the command; the exit code is the report's or the guest program's own (`exec` passes any
/// code through, as ssh does), or one of guestprep's for a failure to reach the guest.
pub fn run(args: &QgaArgs) -> Result<i32> {
    let socket = match (&args.socket, args.vmid) {
        (Some(s), _) => s.clone(),
        (None, Some(id)) => PathBuf::from(format!("/var/run/qemu-server/{id}.qga")),
        (None, None) => unreachable!("clap requires one"),
    };
    let timeout = Duration::from_secs(args.timeout.max(1));
    // A deadline for the whole exchange, not per answer: an agent that answers slowly, or a
    // byte at a time, or never finishes a file, costs --timeout (and the program's own time).
    let program_time = match &args.command {
        QgaCommand::Verify { exec_timeout, .. }
        | QgaCommand::Apply { exec_timeout, .. }
        | QgaCommand::Exec { exec_timeout, .. } => Duration::from_secs(*exec_timeout),
        _ => Duration::ZERO,
    };
    // The program's input is read first: a slow pipe is not the agent's time.
    let input = match &args.command {
        QgaCommand::Exec { input, .. } => read_input(input.as_deref())?,
        _ => None,
    };
    let deadline = std::time::Instant::now() + timeout + program_time;
    let mut agent = match Agent::connect_until(&socket, timeout, Some(deadline)) {
        Ok(a) => a,
        Err(e) => return agent_failure(e).map(ExitCode::code),
    };
    let code = match &args.command {
        QgaCommand::Ping => ping(&mut agent, args.json),
        QgaCommand::Report {
            path,
            max_age,
            guest_command,
        } => report(&mut agent, args.json, path, *max_age, guest_command),
        QgaCommand::Verify {
            guest_command,
            exec_timeout,
            args: extra,
        } => verify(
            &mut agent,
            args.json,
            guest_command,
            Duration::from_secs(*exec_timeout),
            extra,
        ),
        QgaCommand::Apply {
            guest_command,
            exec_timeout,
            args: extra,
        } => {
            let mut argv = vec!["apply".to_string()];
            argv.extend(extra.iter().cloned());
            return exec(
                &mut agent,
                guest_command,
                &argv,
                None,
                Duration::from_secs(*exec_timeout),
            );
        }
        QgaCommand::Exec {
            exec_timeout,
            command,
            ..
        } => {
            return exec(
                &mut agent,
                &command[0],
                &command[1..],
                input.as_deref(),
                Duration::from_secs(*exec_timeout),
            );
        }
        QgaCommand::Cat { path } => cat(&mut agent, path),
    };
    code.map(ExitCode::code)
}

/// `exec --input FILE` (`-`: our standard input).
fn read_input(input: Option<&std::path::Path>) -> Result<Option<Vec<u8>>> {
    Ok(match input {
        None => None,
        Some(p) if p == std::path::Path::new("-") => {
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)
                .context("reading standard input")?;
            Some(b)
        }
        Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
    })
}

/// `exec` and `apply`: the guest program's output on ours, its exit code as ours.
fn exec(
    agent: &mut Agent,
    program: &str,
    args: &[String],
    input: Option<&[u8]>,
    timeout: Duration,
) -> Result<i32> {
    let res = match agent.exec(program, args, input, timeout) {
        Ok(r) => r,
        Err(e) if e.is_disabled() => {
            return fail(
                ExitCode::AgentUnavailable,
                format!(
                    "the guest agent does not allow running programs ({e}); enable guest-exec in the guest's \
                     qemu-ga configuration"
                ),
            )
            .map(ExitCode::code);
        }
        Err(e) if e.is_not_found() => {
            return fail(ExitCode::NotInGuest, format!("{program}: {e}")).map(ExitCode::code);
        }
        Err(e) => return agent_failure(e).map(ExitCode::code),
    };
    pass_stdout(&res.stdout)?;
    // The guest's diagnostics are text for a person: always escaped.
    eprint!("{}", output::escape_bytes(&res.stderr));
    if res.truncated {
        eprintln!("guestprep qga: warning: the guest agent truncated the output");
    }
    Ok(match (res.exit_code, res.signal) {
        (Some(c), _) => c,
        // As a shell reports a program killed by a signal.
        (None, Some(sig)) => 128 + sig,
        (None, None) => {
            return fail(
                ExitCode::CheckFailed,
                format!("{program} in the guest ended without an exit code"),
            )
            .map(ExitCode::code);
        }
    })
}

fn cat(agent: &mut Agent, path: &str) -> Result<ExitCode> {
    match agent.read_file(path, 64 << 20) {
        Ok(b) => {
            pass_stdout(&b)?;
            Ok(ExitCode::Ok)
        }
        Err(e) if e.is_not_found() => fail(ExitCode::NotInGuest, format!("{path}: {e}")),
        Err(e) if e.is_disabled() => fail(
            ExitCode::AgentUnavailable,
            format!("the guest agent does not allow reading files ({e})"),
        ),
        Err(e) => agent_failure(e),
    }
}

fn ping(agent: &mut Agent, json: bool) -> Result<ExitCode> {
    let info = match agent.info() {
        Ok(i) => i,
        Err(e) => return agent_failure(e),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(ExitCode::Ok);
    }
    let enabled = |name: &str| {
        info["supported_commands"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == name))
            .map_or("absent", |c| {
                if c["enabled"].as_bool().unwrap_or(false) {
                    "enabled"
                } else {
                    "disabled"
                }
            })
    };
    println!(
        "guest agent answers: version {}; guest-file-read {} (for `report`), guest-exec {} (for `verify`)",
        output::escape_controls(info["version"].as_str().unwrap_or("?"), false),
        enabled("guest-file-read"),
        enabled("guest-exec")
    );
    Ok(ExitCode::Ok)
}

fn print_report(r: &ComplianceReport, raw: &[u8], json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        out.write_all(raw)?;
        if !raw.ends_with(b"\n") {
            writeln!(out)?;
        }
    } else {
        output::human(&mut out, r, &Style::stdout())?;
    }
    Ok(())
}

fn report(
    agent: &mut Agent,
    json: bool,
    path: &str,
    max_age: Option<Duration>,
    guest_command: &str,
) -> Result<ExitCode> {
    let f = match guest_report::fetch(agent, path, guest_command) {
        Ok(f) => f,
        Err(FetchError::Missing {
            installed: true, ..
        }) => {
            return fail(
                ExitCode::NotInGuest,
                format!(
                    "no report at {path} in the guest, but {guest_command} is there: is the daemon running? \
                     (in the guest: systemctl status guestprep.service)"
                ),
            );
        }
        Err(FetchError::Missing {
            unmanaged: Some(os),
            ..
        }) => {
            return fail(
                ExitCode::NotInGuest,
                format!(
                    "unmanaged: {os} is a system guestprep does not manage (no report at {path}, by design)"
                ),
            );
        }
        Err(FetchError::Missing {
            installed: false, ..
        }) => {
            return fail(
                ExitCode::NotInGuest,
                format!(
                    "guestprep is not installed in the guest: no report at {path} and no {guest_command}"
                ),
            );
        }
        Err(FetchError::Disabled(e)) => {
            return fail(
                ExitCode::AgentUnavailable,
                format!(
                    "the guest agent does not allow reading files ({e}); enable guest-file-read in the guest's \
                     qemu-ga configuration, or use `guestprep qga verify`"
                ),
            );
        }
        Err(FetchError::Invalid(m)) => return fail(ExitCode::CheckFailed, m),
        Err(FetchError::Agent(e)) => return agent_failure(e),
    };
    match f.freshness(max_age) {
        Freshness::Fresh => {}
        Freshness::MadeBeforeBoot(boot) => {
            return fail(
                ExitCode::StaleReport,
                format!(
                    "stale report: {path} was made at {}, before the guest's last boot at {boot}; the daemon has not \
                     run since (in the guest: systemctl status guestprep.service)",
                    f.report.generated_at,
                ),
            );
        }
        Freshness::TooOld { age, limit } => {
            return fail(
                ExitCode::StaleReport,
                format!(
                    "stale report: {path} was made {}s ago (at {}), more than --max-age {}",
                    age.round(),
                    f.report.generated_at,
                    crate::policy::format_timespan(limit)
                ),
            );
        }
        Freshness::NoClock => {
            return fail(
                ExitCode::AgentUnavailable,
                "--max-age needs the guest's clock, and guest-get-time failed",
            );
        }
    }
    print_report(&f.report, &f.raw, json)?;
    Ok(ExitCode::from_code(f.report.exit_code))
}

fn verify(
    agent: &mut Agent,
    json: bool,
    program: &str,
    timeout: Duration,
    extra: &[String],
) -> Result<ExitCode> {
    let mut argv = vec!["verify".to_string(), "--json".to_string()];
    argv.extend(extra.iter().cloned());
    let res = match agent.exec(program, &argv, None, timeout) {
        Ok(r) => r,
        Err(e) if e.is_not_found() => {
            return fail(
                ExitCode::NotInGuest,
                format!("guestprep is not installed in the guest: {e}"),
            );
        }
        Err(e) if e.is_disabled() => {
            return fail(
                ExitCode::AgentUnavailable,
                format!(
                    "the guest agent does not allow running programs ({e}); enable guest-exec in the guest's \
                     qemu-ga configuration, or use `guestprep qga report`"
                ),
            );
        }
        Err(e) => return agent_failure(e),
    };
    let stderr = output::escape_bytes(&res.stderr);
    let code = match (res.exit_code, res.signal) {
        (Some(c), _) => c,
        (None, Some(sig)) => {
            return fail(
                ExitCode::CheckFailed,
                format!("{program} was killed by signal {sig} in the guest: {stderr}"),
            );
        }
        (None, None) => {
            return fail(
                ExitCode::CheckFailed,
                format!("{program} in the guest ended without an exit code: {stderr}"),
            );
        }
    };
    match guest_report::parse(&res.stdout, &format!("the output of {program} verify")) {
        Ok(r) => {
            if res.truncated {
                eprintln!("guestprep qga: warning: the guest agent truncated the output");
            }
            eprint!("{stderr}");
            print_report(&r, &res.stdout, json)?;
            Ok(ExitCode::from_code(code))
        }
        Err(m) => {
            eprint!("{stderr}");
            fail(
                ExitCode::from_code(code),
                format!("{program} verify exited {code} in the guest without a report: {m}"),
            )
        }
    }
}
