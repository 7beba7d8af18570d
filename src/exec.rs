//! Running a program: its output captured, a failure carrying the tail of its stderr, and a sign
//! of life while it runs (a progress line on a terminal, a heartbeat line off one). Knows nothing
//! of what it runs; a caller that knows where progress shows (a DKMS make.log) passes a callback.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Runs a program; a failure carries the tail of its stderr. Long work shows it is alive: on a
/// terminal a progress line (the command, the time so far), off a terminal (cloud-init's output
/// log, journald) a heartbeat line every 15 s (`GUESTPREP_HEARTBEAT_SECS`). A DKMS build of a
/// real driver takes minutes inside one `apt-get` or `dkms` call.
pub fn run(argv: &[String]) -> Result<String> {
    run_with(argv, &mut || None)
}

/// [`run`], with `progress` asked about once a second what the command is doing (a DKMS build's
/// make.log, [`crate::packages::makelog::watch`]); its answer is shown with the heartbeat.
pub fn run_with(argv: &[String], progress: &mut dyn FnMut() -> Option<String>) -> Result<String> {
    use std::io::{IsTerminal, Read};
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", argv[0]))?;
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = r.read_to_end(&mut b);
            b
        })
    };
    let out_t = drain(Box::new(child.stdout.take().expect("piped")));
    let err_t = drain(Box::new(child.stderr.take().expect("piped")));
    let started = std::time::Instant::now();
    let tty = std::io::stderr().is_terminal();
    let every = std::env::var("GUESTPREP_HEARTBEAT_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|v| *v > 0)
        .map_or(Duration::from_secs(15), Duration::from_secs);
    let shown = command_of(argv)
        .iter()
        .take(4)
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    let mut next_beat = every;
    let mut shown_progress = false;
    let mut build = None;
    let mut looked = Duration::ZERO;
    let status = loop {
        if let Some(st) = child.try_wait().context("waiting for a command")? {
            break st;
        }
        let t = started.elapsed();
        // What the command does, when its caller knows where to look: once a second.
        if t >= looked + Duration::from_secs(1) {
            build = progress().or(build);
            looked = t;
        }
        let doing = build
            .as_deref()
            .map(|b| format!(": {b}"))
            .unwrap_or_default();
        if tty && t >= Duration::from_secs(2) {
            let line: String = format!("  {shown}: {}s{doing}", t.as_secs())
                .chars()
                .take(160)
                .collect();
            eprint!("\r{line}\x1b[K");
            shown_progress = true;
        } else if !tty && t >= next_beat {
            eprintln!(
                "guestprep: still running `{shown}` ({}s){doing}",
                t.as_secs()
            );
            next_beat += every;
        }
        std::thread::sleep(Duration::from_millis(if tty { 250 } else { 100 }));
    };
    if shown_progress {
        eprintln!();
    }
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    if !status.success() {
        let err = String::from_utf8_lossy(&stderr);
        let tail: Vec<&str> = err
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        bail!(
            "`{}` failed ({}): {}",
            argv.join(" "),
            status,
            tail.join(" | ")
        );
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

/// The command line after any `env VAR=…` prefix: the program really run and its arguments.
pub fn command_of(argv: &[String]) -> &[String] {
    let skip = argv
        .iter()
        .take_while(|a| *a == "env" || a.contains('='))
        .count();
    &argv[skip..]
}
