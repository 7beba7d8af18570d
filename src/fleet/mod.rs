//! `guestprep fleet`: every VM of a Proxmox node and its compliance, read through the VMs' guest
//! agents concurrently, for a table, JSON, and node-exporter's textfile collector (the cluster
//! view is then a Prometheus query; there is no fleet server of our own).
//!
//! Owns which VMs are asked ([`pve`] finds them), the bound on parallel connections, the per-VM
//! deadline (a hung agent costs its timeout once, never more, never anyone else's), the state of
//! each VM and the exit code over all of them. Rendering is [`render`].

pub mod pve;
pub mod render;

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::value::RawValue;

use crate::exit::ExitCode;
use crate::guest_report::{self, FetchError, Freshness};
use crate::qga::{Agent, QgaError};
use crate::report::Summary;

pub use pve::Vm;

/// What is known of a VM's compliance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// A fresh report: compliant.
    Compliant,
    /// A fresh report: compliant but for a reboot.
    PendingReboot,
    /// A fresh report: drift.
    Drift,
    /// A fresh report: an item could not be checked or changed.
    Error,
    /// A report made before the guest's last boot, or older than `--max-age`.
    Stale,
    /// guestprep is installed but its daemon wrote no report.
    NoReport,
    /// Neither a report nor the guestprep program in the guest.
    NotInstalled,
    /// No guestprep, and the agent names a system guestprep does not manage (Talos, Windows):
    /// neither compliant nor a fault, and no reason to alert.
    Unmanaged,
    /// A file where the report should be that is not one.
    InvalidReport,
    /// The agent answers but does not allow file-read.
    FileReadDisabled,
    /// The agent socket refuses connections or the agent does not answer in time (or sends what
    /// is not an answer); or the node's own files of the VM cannot be read (a FIFO at its pid
    /// file, a device at its configuration).
    NoAnswer,
    /// The VM's guest agent option is off.
    AgentOff,
    /// The VM does not run.
    Stopped,
}

impl State {
    pub const ALL: [State; 13] = [
        State::Compliant,
        State::PendingReboot,
        State::Drift,
        State::Error,
        State::Stale,
        State::NoReport,
        State::NotInstalled,
        State::Unmanaged,
        State::InvalidReport,
        State::FileReadDisabled,
        State::NoAnswer,
        State::AgentOff,
        State::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Compliant => "compliant",
            State::PendingReboot => "pending-reboot",
            State::Drift => "drift",
            State::Error => "error",
            State::Stale => "stale",
            State::NoReport => "no-report",
            State::NotInstalled => "not-installed",
            State::Unmanaged => "unmanaged",
            State::InvalidReport => "invalid-report",
            State::FileReadDisabled => "file-read-disabled",
            State::NoAnswer => "no-answer",
            State::AgentOff => "agent-off",
            State::Stopped => "stopped",
        }
    }

    /// A fresh report that is compliant (a pending reboot allowed, as in the report itself).
    pub fn is_compliant(self) -> bool {
        matches!(self, State::Compliant | State::PendingReboot)
    }

    /// The VM was expected to answer (it runs with its agent on).
    pub fn expects_agent(self) -> bool {
        !matches!(self, State::AgentOff | State::Stopped)
    }

    /// A fresh report was read.
    pub fn has_fresh_report(self) -> bool {
        matches!(
            self,
            State::Compliant | State::PendingReboot | State::Drift | State::Error
        )
    }
}

/// How the VMs are asked.
#[derive(Clone, Debug)]
pub struct Options {
    /// The whole time one VM may take (connect, every answer).
    pub timeout: Duration,
    /// Agents asked at once.
    pub parallel: usize,
    /// The report's path in the guests.
    pub report_path: String,
    /// Where guestprep is in the guests (tells "not installed" from "no report").
    pub guest_command: String,
    /// Reports older than this are stale (always: those made before the guest's boot).
    pub max_age: Option<Duration>,
    /// Keep each report whole (for `--json`); otherwise only its summary is kept.
    pub keep_reports: bool,
}

/// The default bound on parallel connections: a few per core.
pub fn default_parallel() -> usize {
    std::thread::available_parallelism().map_or(4, |n| n.get() * 4)
}

/// One VM's answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VmResult {
    pub vmid: u32,
    pub name: Option<String>,
    /// True only for a fresh compliant report.
    pub compliant: bool,
    pub state: State,
    /// Why there is no fresh report (`agent-off`, `no-answer`, `not-installed`, `no-report`,
    /// `stale`, `invalid-report`, `file-read-disabled`, `stopped`); absent with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<State>,
    /// What happened, in words, when there is no fresh report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub running: bool,
    /// The configuration's agent option (absent without a configuration).
    pub agent: Option<bool>,
    /// The agent answered.
    pub up: bool,
    /// Seconds since the report was made, by the guest's clock.
    pub report_age_seconds: Option<f64>,
    pub generated_at: Option<String>,
    pub exit_code: Option<i32>,
    pub summary: Option<Summary>,
    pub seal_id: Option<String>,
    pub guestprep_version: Option<String>,
    /// How long this VM took to answer.
    pub duration_ms: u64,
    /// The report itself (with `--json`), stale ones included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<Box<RawValue>>,
}

impl VmResult {
    fn new(vm: &Vm, state: State, message: Option<String>) -> Self {
        VmResult {
            vmid: vm.vmid,
            name: vm.name.clone(),
            compliant: state.is_compliant(),
            state,
            reason: (!state.has_fresh_report()).then_some(state),
            message,
            running: vm.running,
            agent: vm.agent,
            up: false,
            report_age_seconds: None,
            generated_at: None,
            exit_code: None,
            summary: None,
            seal_id: None,
            guestprep_version: None,
            duration_ms: 0,
            report: None,
        }
    }
}

/// Asks every VM, at most `opts.parallel` at once; the results in the order of `vms`.
pub fn survey(vms: &[Vm], opts: &Options) -> Vec<VmResult> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<VmResult>>> = Mutex::new((0..vms.len()).map(|_| None).collect());
    let workers = opts.parallel.clamp(1, vms.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            // Small stacks: hundreds of VMs cost threads, not memory.
            let spawned = std::thread::Builder::new()
                .name("fleet".into())
                .stack_size(512 << 10)
                .spawn_scoped(s, || {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(vm) = vms.get(i) else { break };
                        let r = ask(vm, opts);
                        results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
                    }
                });
            if spawned.is_err() {
                // Out of threads: the ones already running take the rest.
                break;
            }
        }
    });
    // A VM no worker reached (no thread could start at all) is asked here.
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .zip(vms)
        .map(|(r, vm)| r.unwrap_or_else(|| ask(vm, opts)))
        .collect()
}

/// Asks one VM, within `opts.timeout` in all.
pub fn ask(vm: &Vm, opts: &Options) -> VmResult {
    let start = Instant::now();
    let mut r = ask_inner(vm, opts, start);
    r.duration_ms = start.elapsed().as_millis() as u64;
    r
}

fn ask_inner(vm: &Vm, opts: &Options, start: Instant) -> VmResult {
    // The node's own files for this VM are broken (a FIFO at its pid file…): not asked, not
    // taken for stopped either; the operator has to look.
    if let Some(p) = &vm.problem {
        return VmResult::new(
            vm,
            State::NoAnswer,
            Some(crate::output::escape_controls(p, false)),
        );
    }
    if !vm.running {
        return VmResult::new(vm, State::Stopped, Some("the VM is not running".into()));
    }
    if vm.agent == Some(false) {
        return VmResult::new(
            vm,
            State::AgentOff,
            Some(
                "the VM's guest agent option is off (qm set VMID --agent 1, then restart it)"
                    .into(),
            ),
        );
    }
    let Some(socket) = &vm.socket else {
        return if vm.agent == Some(true) {
            VmResult::new(
                vm,
                State::NoAnswer,
                Some(
                    "the VM runs without a guest agent socket: the agent option was turned on after it started \
                     (restart the VM)"
                        .into(),
                ),
            )
        } else {
            VmResult::new(
                vm,
                State::AgentOff,
                Some("the VM runs without a guest agent socket".into()),
            )
        };
    };
    let deadline = start + opts.timeout;
    let mut agent = match Agent::connect_until(socket, opts.timeout, Some(deadline)) {
        Ok(a) => a,
        Err(e) => return no_answer(vm, &e),
    };
    let f = match guest_report::fetch(&mut agent, &opts.report_path, &opts.guest_command) {
        Ok(f) => f,
        Err(e) => {
            let (state, up) = match &e {
                FetchError::Agent(q) => return no_answer(vm, q),
                FetchError::Disabled(_) => (State::FileReadDisabled, true),
                FetchError::Missing {
                    installed: true, ..
                } => (State::NoReport, true),
                FetchError::Missing {
                    unmanaged: Some(_), ..
                } => (State::Unmanaged, true),
                FetchError::Missing {
                    installed: false, ..
                } => (State::NotInstalled, true),
                FetchError::Invalid(_) => (State::InvalidReport, true),
            };
            let message = match &e {
                FetchError::Missing {
                    installed: true, ..
                } => format!(
                    "{e}, but {} is there: is the daemon running? (systemctl status guestprep.service)",
                    opts.guest_command
                ),
                FetchError::Missing {
                    unmanaged: Some(os),
                    ..
                } => format!("{os}: a system guestprep does not manage (no guestprep, by design)"),
                FetchError::Missing {
                    installed: false, ..
                } => format!(
                    "guestprep is not installed: {e} and no {}",
                    opts.guest_command
                ),
                _ => e.to_string(),
            };
            let mut r = VmResult::new(
                vm,
                state,
                Some(crate::output::escape_controls(&message, false)),
            );
            r.up = up;
            return r;
        }
    };
    let age = f.age();
    let stale = match f.freshness(opts.max_age) {
        Freshness::Fresh => None,
        Freshness::MadeBeforeBoot(boot) => Some(format!(
            "stale report: made at {}, before the guest's last boot at {boot}; the daemon has not run since",
            f.report.generated_at
        )),
        Freshness::TooOld { age, limit } => Some(format!(
            "stale report: made {}s ago, more than --max-age {}",
            age.round(),
            crate::policy::format_timespan(limit)
        )),
        Freshness::NoClock => {
            Some("--max-age needs the guest's clock, and guest-get-time failed".into())
        }
    };
    let state = match (&stale, ExitCode::from_code(f.report.exit_code)) {
        (Some(_), _) => State::Stale,
        (None, ExitCode::Ok) => State::Compliant,
        (None, ExitCode::PendingReboot) => State::PendingReboot,
        (None, ExitCode::Drift) => State::Drift,
        (None, _) => State::Error,
    };
    let mut r = VmResult::new(
        vm,
        state,
        stale.map(|m| crate::output::escape_controls(&m, false)),
    );
    r.up = true;
    r.report_age_seconds = age.map(|a| (a * 10.0).round() / 10.0);
    r.generated_at = Some(f.report.generated_at.clone());
    r.exit_code = Some(f.report.exit_code);
    r.seal_id = f.report.seal.as_ref().map(|s| s.seal_id.clone());
    r.guestprep_version = Some(f.report.guestprep_version.clone());
    r.summary = Some(f.report.summary.clone());
    if opts.keep_reports {
        r.report = String::from_utf8(f.raw)
            .ok()
            .and_then(|s| RawValue::from_string(s.trim_end().to_string()).ok());
    }
    r
}

fn no_answer(vm: &Vm, e: &QgaError) -> VmResult {
    VmResult::new(
        vm,
        State::NoAnswer,
        Some(crate::output::escape_controls(&e.to_string(), false)),
    )
}

/// The exit code over all VMs: 6 when any VM that should answer did not (or forbids file-read),
/// else 1 when any is not compliant, else 0. Stopped VMs and VMs with the agent off count for
/// nothing.
pub fn exit_code(results: &[VmResult]) -> ExitCode {
    let expected = || results.iter().filter(|r| r.state.expects_agent());
    if expected().any(|r| matches!(r.state, State::NoAnswer | State::FileReadDisabled)) {
        ExitCode::AgentUnavailable
    } else if expected().any(|r| !r.compliant && r.state != State::Unmanaged) {
        ExitCode::Drift
    } else {
        ExitCode::Ok
    }
}

/// Keeps the VMs the command line selects: ids (none: all), name globs (none: all; a VM without
/// a name matches none), running only.
pub fn select(vms: Vec<Vm>, ids: &[u32], names: &[String], only_running: bool) -> Vec<Vm> {
    vms.into_iter()
        .filter(|vm| ids.is_empty() || ids.contains(&vm.vmid))
        .filter(|vm| {
            names.is_empty()
                || vm
                    .name
                    .as_deref()
                    .is_some_and(|n| names.iter().any(|g| crate::text::glob(g, n)))
        })
        .filter(|vm| !only_running || vm.running)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(vmid: u32, name: Option<&str>, running: bool) -> Vm {
        Vm {
            vmid,
            name: name.map(str::to_string),
            agent: Some(true),
            running,
            socket: None,
            problem: None,
        }
    }

    fn result(state: State) -> VmResult {
        VmResult::new(&vm(1, None, true), state, None)
    }

    #[test]
    fn exit_codes() {
        let ec = |states: &[State]| {
            exit_code(&states.iter().map(|s| result(*s)).collect::<Vec<_>>()).code()
        };
        assert_eq!(ec(&[]), 0);
        assert_eq!(
            ec(&[
                State::Compliant,
                State::PendingReboot,
                State::AgentOff,
                State::Stopped
            ]),
            0
        );
        assert_eq!(ec(&[State::Compliant, State::Drift]), 1);
        assert_eq!(ec(&[State::Stale]), 1);
        assert_eq!(ec(&[State::NotInstalled]), 1);
        assert_eq!(ec(&[State::Compliant, State::Unmanaged]), 0);
        assert_eq!(ec(&[State::NoReport, State::InvalidReport]), 1);
        assert_eq!(ec(&[State::Drift, State::NoAnswer]), 6);
        assert_eq!(ec(&[State::FileReadDisabled]), 6);
    }

    #[test]
    fn reasons_only_without_a_fresh_report() {
        for s in State::ALL {
            let r = result(s);
            assert_eq!(r.reason.is_none(), s.has_fresh_report(), "{s:?}");
            assert_eq!(
                r.compliant,
                matches!(s, State::Compliant | State::PendingReboot)
            );
        }
    }

    #[test]
    fn selection() {
        let vms = vec![
            vm(100, Some("k8s-a"), true),
            vm(101, Some("k8s-b"), false),
            vm(102, Some("db-1"), true),
            vm(103, None, true),
        ];
        let ids = |v: Vec<Vm>| v.iter().map(|v| v.vmid).collect::<Vec<_>>();
        assert_eq!(
            ids(select(vms.clone(), &[], &[], false)),
            [100, 101, 102, 103]
        );
        assert_eq!(ids(select(vms.clone(), &[], &[], true)), [100, 102, 103]);
        assert_eq!(
            ids(select(vms.clone(), &[101, 103], &[], false)),
            [101, 103]
        );
        assert_eq!(
            ids(select(vms.clone(), &[], &["k8s-*".into()], false)),
            [100, 101]
        );
        assert_eq!(ids(select(vms, &[], &["k8s-*".into()], true)), [100]);
    }

    #[test]
    fn stopped_and_agent_off_are_not_asked() {
        let opts = Options {
            timeout: Duration::from_secs(1),
            parallel: 2,
            report_path: "/r".into(),
            guest_command: "/g".into(),
            max_age: None,
            keep_reports: false,
        };
        let mut off = vm(7, None, true);
        off.agent = Some(false);
        let rs = survey(&[vm(6, None, false), off, vm(8, None, true)], &opts);
        let states: Vec<_> = rs.iter().map(|r| r.state).collect();
        // 8: running, agent on, no socket: the agent was enabled after the VM started.
        assert_eq!(states, [State::Stopped, State::AgentOff, State::NoAnswer]);
        assert!(rs.iter().all(|r| !r.up));
    }
}
