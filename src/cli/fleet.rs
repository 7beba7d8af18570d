//! `guestprep fleet`: on a Proxmox node, every VM's compliance through its guest agent, at once.
//!
//! Owns the command's arguments and where the answers go (stdout, the textfile); the survey is
//! [`crate::fleet`].

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;

use crate::exit::UsageError;
use crate::fleet::{self, Options, render};
use crate::paths::REPORT as REPORT_PATH;

#[derive(Debug, Args)]
#[command(after_help = "\
Exit codes:
  0  every running VM with its guest agent on has a fresh compliant report (pending reboot allowed)
  1  a VM drifts, has an error, a stale report, no report, or no guestprep
  2  usage
  6  a VM's agent did not answer within --timeout, sent what is not an answer, or does not
     allow file-read; or the node's own files of a VM (VMID.pid, VMID.conf) are not regular files
Stopped VMs and VMs with the agent option off count for nothing.

The textfile is for node-exporter's textfile collector (Debian: /var/lib/prometheus/node-exporter);
guestprep-fleet.timer (in the package, not enabled) writes it every 5 minutes.")]
pub struct FleetArgs {
    /// Where QEMU puts the VMs' guest agent sockets (VMID.qga) and pid files (VMID.pid).
    #[arg(long, value_name = "DIR", default_value = "/var/run/qemu-server")]
    pub qga_dir: PathBuf,
    /// The node's VM configurations (VMID.conf: name, agent option).
    #[arg(long, value_name = "DIR", default_value = "/etc/pve/qemu-server")]
    pub config_dir: PathBuf,
    /// Only these VMs (repeatable, or comma-separated).
    #[arg(long, value_name = "VMID", value_delimiter = ',')]
    pub vmid: Vec<u32>,
    /// Only VMs whose name matches this glob (`k8s-*`); repeatable.
    #[arg(long, value_name = "GLOB")]
    pub name: Vec<String>,
    /// Leave out VMs that are not running.
    #[arg(long)]
    pub only_running: bool,
    /// Seconds one VM may take in all (connect and every answer, whatever its agent sends): a hung
    /// or drip-feeding agent costs this once.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
    /// Agents asked at once (default: four per core).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub parallel: Option<u64>,
    /// A report older than this is stale (`15min`); one made before the guest's boot always is.
    #[arg(long, value_name = "SPAN", value_parser = crate::policy::parse_timespan)]
    pub max_age: Option<Duration>,
    /// The report's path in the guests.
    #[arg(long, value_name = "PATH", default_value = REPORT_PATH)]
    pub path: String,
    /// Where guestprep is in the guests, to tell "not installed" from "daemon not running".
    #[arg(long, value_name = "PATH", default_value = "/usr/bin/guestprep")]
    pub guest_command: String,
    /// Print a JSON list, one object per VM with its report (or the reason there is none).
    #[arg(long)]
    pub json: bool,
    /// Also write the Prometheus textfile here (atomically, mode 0644; only where nothing is or
    /// over a regular file); `-`: to standard output, instead of the table.
    #[arg(long, value_name = "PATH")]
    pub prometheus_textfile: Option<PathBuf>,
}

pub fn run(args: &FleetArgs, quiet: u8) -> Result<i32> {
    if !args.qga_dir.is_dir() {
        return Err(UsageError(format!(
            "--qga-dir {}: no such directory (is this a Proxmox VE node?)",
            args.qga_dir.display()
        ))
        .into());
    }
    // `-`: the textfile on standard output, instead of the table. A file is checked before
    // any VM is asked, and again when written.
    let (textfile, to_stdout) = match args.prometheus_textfile.as_deref() {
        Some(p) if p == std::path::Path::new("-") => (None, true),
        Some(p) => (
            Some((p, format!("--prometheus-textfile {}", p.display()))),
            false,
        ),
        None => (None, false),
    };
    if to_stdout && args.json {
        return Err(UsageError(
            "--json and --prometheus-textfile - both go to standard output: give the textfile a path"
                .into(),
        )
        .into());
    }
    if let Some((p, what)) = &textfile {
        super::check_host_file(p, what)?;
    }
    let started = Instant::now();
    let vms = fleet::pve::discover(&args.qga_dir, &args.config_dir)?;
    let vms = fleet::select(vms, &args.vmid, &args.name, args.only_running);
    let opts = Options {
        timeout: Duration::from_secs(args.timeout),
        parallel: args
            .parallel
            .map_or_else(fleet::default_parallel, |n| n as usize),
        report_path: args.path.clone(),
        guest_command: args.guest_command.clone(),
        max_age: args.max_age,
        keep_reports: args.json,
    };
    let results = fleet::survey(&vms, &opts);
    let elapsed = started.elapsed();
    let prometheus = || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        render::prometheus(&results, now, elapsed)
    };
    if let Some((p, what)) = &textfile {
        // Atomic: the collector never reads half of it.
        super::write_host_file(p, &prometheus(), what)?;
    }
    let text = if to_stdout {
        prometheus()
    } else if args.json {
        render::json(&results)
    } else if quiet > 0 {
        format!("{}\n", render::summary_line(&results, elapsed))
    } else {
        render::table(&results, elapsed)
    };
    if quiet < 2 || args.json || to_stdout {
        let mut out = std::io::stdout().lock();
        // A closed pipe (`fleet | head`) is not an error: the exit code still says it.
        if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush())
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            return Err(e).context("writing to standard output");
        }
    }
    Ok(fleet::exit_code(&results).code())
}
