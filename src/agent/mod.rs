//! `guestprep daemon`: keeps the compliance report fresh at a fixed path, for the host to read
//! through the QEMU guest agent, and optionally repairs file drift.
//!
//! Owns the daemon's life: the first verification and readiness (`Type=notify`), re-verifying on
//! change events (inotify on what the checks read, systemd's D-Bus signals for units), debounced,
//! and on the `[agent] interval` timer for what has no event (values in /proc); enforce mode;
//! publishing the report (and the Prometheus textfile, NFD's feature file: `nfd.rs`) atomically;
//! SIGHUP reload, SIGTERM stop.
//! Each verification runs off the async runtime, on a blocking thread, through the same engine
//! as `guestprep verify`: the report is the same document.

pub mod nfd;
pub mod notify;
pub mod units;
pub mod watch;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::engine::{self, ApplyOptions, Resource, System};
use crate::exit::ExitCode;
use crate::fsutil;
use crate::policy::{self, Agent, Loaded, Sources};
use crate::report::{ChangeRecord, ComplianceReport, Status};
use crate::root::Root;

/// Where the daemon keeps the report (in the root): read by the host with the guest agent's
/// file-read. Fixed; a public contract.
pub const REPORT_PATH: &str = crate::paths::REPORT;
/// Written by `guestprep apply` after it changed something. Live values it set (sysctl, loaded
/// modules, started units) have no inotify events; the daemon watches this file instead, so its
/// report follows an apply at once rather than at the next timer round.
pub const APPLIED_STAMP: &str = crate::paths::APPLIED_STAMP;

/// One verification (and, in enforce mode, repair) pass.
pub struct Round {
    pub report: ComplianceReport,
    /// Directories to watch for the next change.
    pub watch: BTreeMap<PathBuf, watch::DirSpec>,
    /// What enforce mode changed.
    pub changes: Vec<ChangeRecord>,
    /// Items enforce mode changed that are still not compliant: not retried until the timer, so
    /// a change that cannot converge does not loop on its own events.
    pub unconverged: Vec<String>,
}

/// What a round has verified so far, shared with the loop: a round stuck past `verify_timeout`
/// is published as it stands.
#[derive(Default)]
pub struct Progress {
    /// Every item of the round, in order: id and kind.
    pub planned: Vec<(String, String)>,
    pub done: Vec<crate::report::Item>,
}

impl Progress {
    /// The round's items as they stand after `limit`: those finished, the one stuck and the
    /// rest, both `error`.
    pub fn unfinished(&self, limit: Duration) -> Vec<crate::report::Item> {
        let mut items = self.done.clone();
        let mut rest = self.planned.iter().skip(items.len());
        let Some((stuck, kind)) = rest.next() else {
            return items;
        };
        items.push(engine::unfinished_item(
            stuck.clone(),
            kind.clone(),
            format!(
                "its check did not finish within {} ([agent] verify_timeout): something it reads \
                 does not answer; the daemon reports again when it does",
                policy::format_timespan(limit)
            ),
        ));
        for (id, kind) in rest {
            items.push(engine::unfinished_item(
                id.clone(),
                kind.clone(),
                format!("not verified: the round is stuck on {stuck}"),
            ));
        }
        items
    }
}

/// Verifies the root against the policy; with `enforce`, re-applies drift that file writes alone
/// repair (except the items in `skip`). Blocking; tells `progress` of each item checked.
pub fn round(
    root_dir: &Path,
    loaded: &Loaded,
    enforce: bool,
    skip: &HashSet<String>,
    progress: &std::sync::Mutex<Progress>,
) -> Result<Round> {
    let started = Instant::now();
    let root = Root::new(root_dir)?;
    let sys = System::new(root.clone());
    let resources = crate::resources::build(&loaded.policy, &root);
    if let Ok(mut p) = progress.lock() {
        p.planned = resources
            .iter()
            .map(|r| (r.id(), r.kind().to_string()))
            .collect();
    }
    let mut items = engine::verify_each(&sys, &resources, |i| {
        if let Ok(mut p) = progress.lock() {
            p.done.push(i.clone());
        }
    });

    let (mut files, mut dirs) = sys.touched_paths();
    files.push(APPLIED_STAMP.to_string());
    for r in &resources {
        files.extend(r.managed_paths());
    }
    if !root.is_live() && loaded.policy.units.is_some() {
        // Offline, units are symlinks in /etc/systemd/system and its .wants directories.
        let etc = "/etc/systemd/system";
        dirs.push(etc.to_string());
        for e in root.list_dir(etc).unwrap_or_default() {
            if e.ends_with(".wants") || e.ends_with(".requires") {
                dirs.push(format!("{etc}/{e}"));
            }
        }
    }

    let mut changes = Vec::new();
    let mut unconverged = Vec::new();
    let drift: HashSet<String> = items
        .iter()
        .filter(|i| i.status == Status::Drift && !skip.contains(&i.id))
        .map(|i| i.id.clone())
        .collect();
    if enforce && !drift.is_empty() {
        let subset: Vec<Box<dyn Resource>> = resources
            .into_iter()
            .filter(|r| drift.contains(&r.id()))
            .collect();
        match crate::lock::acquire(&root, Duration::ZERO) {
            Err(e) => tracing::info!("not enforcing now: {e:#}"),
            Ok(_lock) => {
                let opts = ApplyOptions {
                    check_only: false,
                    files_only: true,
                };
                let out = engine::apply(&sys, &subset, opts);
                for c in &out.changes {
                    if c.done {
                        tracing::info!(item = %c.item, "enforced: {}", c.action);
                    } else {
                        let why = out
                            .items
                            .iter()
                            .find(|i| i.id == c.item)
                            .map_or("", |i| i.message.as_str());
                        tracing::warn!(item = %c.item, "enforcing failed: {}: {why}", c.action);
                    }
                }
                for after in out.items {
                    let touched = out.changes.iter().any(|c| c.item == after.id);
                    if touched && after.status != Status::Compliant {
                        unconverged.push(after.id.clone());
                    }
                    if let Some(slot) = items.iter_mut().find(|i| i.id == after.id) {
                        *slot = after;
                    }
                }
                changes = out.changes;
            }
        }
    }
    let report = crate::report_of(items, loaded, &root, started);
    Ok(Round {
        report,
        watch: watch::specs(&root, &files, &dirs),
        changes,
        unconverged,
    })
}

/// Writes the report (and the Prometheus textfile, when configured) atomically, mode 0644.
pub fn publish(root: &Root, report: &ComplianceReport, agent: &Agent) -> Result<()> {
    let mut json = serde_json::to_vec_pretty(report)?;
    json.push(b'\n');
    fsutil::write_atomic(root, REPORT_PATH, &json, Some(0o644))
        .with_context(|| format!("writing the report {REPORT_PATH}"))?;
    if let Some(p) = &agent.prometheus_textfile {
        let text = crate::export::prometheus(report);
        fsutil::write_atomic(root, p, text.as_bytes(), Some(0o644))
            .with_context(|| format!("writing the Prometheus textfile {p}"))?;
    }
    nfd::publish(root, report, agent)
}

/// The one-line status systemd shows (`systemctl status guestprep`): "compliant 35/35", or
/// "drift: 2 items (sysctl:vm.swappiness, …)".
pub fn status_line(r: &ComplianceReport) -> String {
    let s = &r.summary;
    let ids = |st: Status| {
        let v: Vec<&str> = r
            .items
            .iter()
            .filter(|i| i.status == st)
            .map(|i| i.id.as_str())
            .collect();
        let more = if v.len() > 3 { ", …" } else { "" };
        format!("{}{more}", v[..v.len().min(3)].join(", "))
    };
    let plural = |n: usize| if n == 1 { "item" } else { "items" };
    let mut line = if s.drift > 0 {
        format!(
            "drift: {} {} ({})",
            s.drift,
            plural(s.drift),
            ids(Status::Drift)
        )
    } else if s.error > 0 {
        format!(
            "error: {} {} could not be checked ({})",
            s.error,
            plural(s.error),
            ids(Status::Error)
        )
    } else {
        format!("compliant {}/{}", s.compliant, s.total)
    };
    if s.pending_reboot > 0 {
        line.push_str(&format!(", {} pending reboot", s.pending_reboot));
    }
    if s.skipped > 0 {
        line.push_str(&format!(", {} skipped", s.skipped));
    }
    line
}

/// The unit names of the policy, to watch through systemd's signals.
fn unit_names(l: &Loaded) -> Vec<String> {
    l.policy
        .units
        .as_ref()
        .map(|u| {
            [&u.mask, &u.unmask, &u.enable, &u.disable]
                .into_iter()
                .flatten()
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(root: &Path, policy: &[PathBuf]) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(serve(root.to_path_buf(), policy.to_vec()))
}

async fn pending_tick(i: &mut Option<tokio::time::Interval>) {
    match i {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn serve(root_dir: PathBuf, policy: Vec<PathBuf>) -> Result<ExitCode> {
    let root = crate::open_root(&root_dir)?;
    // The daemon's own runtime directory, made before anything is watched: its appearing later
    // (with the first report) would itself look like a change.
    root.open_dir("/run/guestprep", true)
        .context("creating the report's directory /run/guestprep")?;
    let sources = Sources::from_args(&policy);
    let mut loaded = Arc::new(crate::load_policy(&sources, &root)?);
    let mut agent = loaded.policy.agent();
    let mut watcher = watch::Watcher::new()?;
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let mut unit_signals: Option<units::UnitSignals> = None;
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut watchdog = notify::watchdog_interval().map(tokio::time::interval);
    let mut skip: HashSet<String> = HashSet::new();
    let mut reason = "start".to_string();
    let mut last_status = String::new();
    let mut first = true;
    let mut subscribe = true;
    // Set while subscribing to systemd's signals failed (the bus restarting): when to try again.
    let mut resubscribe_in: Option<Duration> = None;
    tracing::info!(
        root = %root.describe(),
        "guestprep daemon {}: report at {REPORT_PATH}, re-verifying on changes and every {}{}",
        env!("CARGO_PKG_VERSION"),
        policy::format_timespan(agent.interval),
        if agent.enforce { ", enforcing file drift" } else { ", report only" }
    );
    loop {
        let (dir, l, enforce, sk) = (
            root.dir().to_path_buf(),
            loaded.clone(),
            agent.enforce,
            skip.clone(),
        );
        // A thread per round, off the runtime: verification blocks (and talks to systemd through
        // its own D-Bus runtime); idle, the daemon keeps a single thread.
        let (done, mut result) = tokio::sync::oneshot::channel();
        let progress = Arc::new(std::sync::Mutex::new(Progress::default()));
        let shared = progress.clone();
        let round_started = Instant::now();
        std::thread::Builder::new()
            .name("verify".into())
            .spawn(move || {
                let _ = done.send(round(&dir, &l, enforce, &sk, &shared));
            })
            .context("starting the verification thread")?;
        // While the round runs, SIGTERM still stops the daemon, and a round stuck past
        // `verify_timeout` is published as it stands (never the last report's verdicts).
        let limit = tokio::time::sleep(agent.verify_timeout);
        tokio::pin!(limit);
        let mut stuck = false;
        let res = loop {
            tokio::select! {
                r = &mut result => break r.context("the verification thread died")?,
                _ = &mut limit, if !stuck => {
                    stuck = true;
                    let items = progress.lock().map(|p| p.unfinished(agent.verify_timeout))
                        .unwrap_or_default();
                    let report = crate::report_of(items, &loaded, &root, round_started);
                    if let Err(e) = publish(&root, &report, &agent) {
                        tracing::error!("{e:#}");
                    }
                    let status = status_line(&report);
                    tracing::error!(
                        "{status} (verification stuck for {}; published what it could not finish)",
                        policy::format_timespan(agent.verify_timeout)
                    );
                    let ready = if first { "READY=1\n" } else { "" };
                    notify::notify_or_log(&format!("{ready}STATUS={status}"));
                    last_status = status;
                }
                _ = term.recv() => return Ok(stop("SIGTERM")),
                _ = int.recv() => return Ok(stop("SIGINT")),
                // A stuck round stops the watchdog: systemd restarts a daemon that cannot verify.
                _ = pending_tick(&mut watchdog), if !stuck => notify::notify_or_log("WATCHDOG=1"),
            }
        };
        match res {
            Ok(r) => {
                skip.extend(r.unconverged);
                watcher.set(&r.watch);
                if let Err(e) = publish(&root, &r.report, &agent) {
                    tracing::error!("{e:#}");
                }
                let status = status_line(&r.report);
                if status != last_status || first || !r.changes.is_empty() {
                    tracing::info!(
                        "{status} ({reason}; verified in {} ms; watching {} directories)",
                        r.report.duration_ms,
                        watcher.len()
                    );
                } else {
                    tracing::debug!("{status} ({reason}; unchanged)");
                }
                let ready = if first { "READY=1\n" } else { "" };
                notify::notify_or_log(&format!("{ready}STATUS={status}"));
                last_status = status;
            }
            Err(e) if first => return Err(e.context("first verification")),
            Err(e) => tracing::error!("verification failed: {e:#}"),
        }
        first = false;
        if subscribe {
            subscribe = false;
            unit_signals = None;
            let names = unit_names(&loaded);
            if root.is_live() && !names.is_empty() && root.exists("/run/systemd/system") {
                match units::watch(&names, tx.clone()).await {
                    Ok(s) => {
                        if resubscribe_in.is_some() {
                            tracing::info!("watching systemd's signals again");
                        }
                        unit_signals = Some(s);
                        resubscribe_in = None;
                    }
                    Err(e) => {
                        // The bus may be restarting: try again, sooner than the timer.
                        let next = resubscribe_in.map_or(Duration::from_secs(1), |d| {
                            (d * 2).clamp(Duration::from_secs(1), Duration::from_secs(60))
                        });
                        tracing::warn!(
                            "not watching systemd's signals ({e:#}); trying again in {}s",
                            next.as_secs()
                        );
                        resubscribe_in = Some(next);
                    }
                }
            }
        }
        let resubscribe_at = resubscribe_in.map(|d| tokio::time::Instant::now() + d);

        let deadline = tokio::time::Instant::now() + agent.interval;
        let debounce;
        (reason, debounce) = loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    skip.clear();
                    break ("timer".to_string(), false);
                }
                ev = watcher.next() => match ev {
                    Ok(None) => continue,
                    Ok(Some(p)) => break (format!("changed: {}", watch::display(&root, &p)), true),
                    Err(e) => {
                        tracing::warn!("{e:#}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
                Some(m) = rx.recv() => {
                    if m == units::LOST {
                        // Changes while the bus was away were missed: subscribe and re-verify.
                        tracing::warn!("{m}; subscribing again");
                        unit_signals = None;
                        subscribe = true;
                        resubscribe_in = Some(Duration::ZERO);
                    }
                    break (m, true)
                }
                _ = sleep_until_some(resubscribe_at) => {
                    subscribe = true;
                    break ("subscribing to systemd's signals again".to_string(), false);
                }
                _ = hup.recv() => {
                    notify::notify_or_log(&notify::reloading());
                    match crate::load_policy(&sources, &root) {
                        Ok(l) => {
                            tracing::info!("policy reloaded ({})", l.digest());
                            loaded = Arc::new(l);
                            agent = loaded.policy.agent();
                            skip.clear();
                            subscribe = true;
                            notify::notify_or_log("READY=1");
                            break ("policy reloaded".to_string(), false);
                        }
                        Err(e) => {
                            tracing::error!("reload failed, keeping the running policy: {e:#}");
                            notify::notify_or_log(&format!(
                                "READY=1\nSTATUS={last_status} (reload failed: invalid policy, see the journal)"
                            ));
                        }
                    }
                }
                _ = term.recv() => return Ok(stop("SIGTERM")),
                _ = int.recv() => return Ok(stop("SIGINT")),
                _ = pending_tick(&mut watchdog) => notify::notify_or_log("WATCHDOG=1"),
            }
        };
        if debounce {
            // Changes come in bursts (a package upgrade, an editor's save): wait for quiet.
            tokio::time::sleep(agent.debounce).await;
            watcher.drain().await;
            while rx.try_recv().is_ok() {}
        }
        // `unit_signals` lives across rounds: dropping it (on reload) stops its forwarding tasks.
        let _ = &unit_signals;
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn stop(why: &str) -> ExitCode {
    notify::notify_or_log("STOPPING=1");
    tracing::info!("{why}: stopping");
    ExitCode::Ok
}
