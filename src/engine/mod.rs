//! The engine: one check/plan/apply shape for every resource, and the runs built on it.
//!
//! Owns the [`Resource`] trait, the [`Change`]s a plan is made of and how each is carried out
//! (file writes through `fsutil`, live effects only on a live root), and the two runs: `verify`
//! (check every item, write nothing) and `apply` (per item in policy order: check, plan, apply the
//! difference, check again). A resource never writes outside [`Change`], so `--check` and `--diff`
//! see every effect before it happens.

use std::time::Duration;

use anyhow::Result;
use serde_json::Value;

use crate::fsutil;
use crate::report::{ChangeRecord, Item, Status};

mod change;
mod system;
pub use change::{Change, UnitOp};
pub use system::{Mode, System};

/// How long to wait for a systemd start or stop job.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(90);

/// What a check found. Drift is data, not an `Err`: `Err` from `check` means "could not check".
#[derive(Clone, Debug)]
pub struct Observation {
    pub status: Status,
    pub expected: Value,
    pub actual: Value,
    pub message: String,
    /// For file items: the current bytes (None if missing), used by `plan` and `--diff`.
    pub current: Option<Vec<u8>>,
    /// Whatever else `plan` needs from the check (not part of the report).
    pub data: Value,
    /// What will make the item compliant, when it is not the plan's changes (or "reboot"): the
    /// step a later run or a person takes, or the other item whose changes fix this one.
    pub remediation: Option<String>,
}

impl Observation {
    /// The verdict most checks end with: drift naming every problem, or compliant with `note`
    /// (which says what was not checked, if anything).
    pub fn judged<S: AsRef<str>>(
        expected: Value,
        actual: Value,
        problems: &[S],
        note: impl Into<String>,
    ) -> Self {
        if problems.is_empty() {
            Observation::new(Status::Compliant, expected, actual, note)
        } else {
            let joined: Vec<&str> = problems.iter().map(AsRef::as_ref).collect();
            Observation::new(Status::Drift, expected, actual, joined.join("; "))
        }
    }

    pub fn new(status: Status, expected: Value, actual: Value, message: impl Into<String>) -> Self {
        Observation {
            status,
            expected,
            actual,
            message: message.into(),
            current: None,
            data: Value::Null,
            remediation: None,
        }
    }
}

/// Every kind of thing guestprep manages goes through these four steps.
pub trait Resource {
    /// Stable id, `KIND:NAME`.
    fn id(&self) -> String;
    /// The resource kind, as in the report.
    fn kind(&self) -> &'static str;
    /// Observes the system. Never writes.
    fn check(&self, sys: &System) -> Result<Observation>;
    /// The changes that would make `obs` compliant. Pure: no I/O.
    fn plan(&self, sys: &System, obs: &Observation) -> Vec<Change>;
    /// Carries out the plan; returns the details of what was done. The default executes each
    /// change in order.
    fn apply(&self, sys: &System, plan: &[Change]) -> Result<Vec<String>> {
        let mut details = Vec::new();
        for c in plan {
            details.extend(c.execute(sys)?);
        }
        Ok(details)
    }
    /// Files this resource writes (for stale temp-file cleanup and change watching).
    fn managed_paths(&self) -> Vec<String> {
        Vec::new()
    }
    /// The items, earlier in the run, whose changes this item's verdict reads (the file an
    /// effective-settings check parses): drift here with no plan of its own is then fixed
    /// through them, and the remediation says so instead of "apply cannot change this here".
    fn fixed_by(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The remediation of a drift item whose plan is empty.
const CANNOT: &str = "apply cannot change this here: ";

/// A drift item with no plan of its own whose verdict reads an earlier item that apply changes
/// (`Resource::fixed_by`): its remediation names that item and its changes.
fn through_earlier(r: &dyn Resource, item: &mut Item, earlier: &[Item]) {
    if item.status != Status::Drift
        || !item
            .remediation
            .as_deref()
            .is_some_and(|m| m.starts_with(CANNOT))
    {
        return;
    }
    let by = r.fixed_by();
    let through: Vec<String> = earlier
        .iter()
        .filter(|e| by.contains(&e.id) && e.status == Status::Drift)
        .filter_map(|e| {
            let plan = e.remediation.as_deref()?;
            (!plan.starts_with(CANNOT)).then(|| format!("{} ({plan})", e.id))
        })
        .collect();
    if !through.is_empty() {
        item.remediation = Some(format!(
            "through {}: apply makes that change first, then checks this item again",
            through.join(", ")
        ));
    }
}

/// The item of an observation, with its remediation when it is not compliant: the changes the
/// plan would make (as `apply --check` prints them), or what a person must do.
fn item_of(sys: &System, r: &dyn Resource, mut obs: Observation) -> Item {
    let given = obs.remediation.take();
    let remediation = match obs.status {
        Status::Drift | Status::PendingReboot if given.is_some() => given,
        Status::Drift => {
            let plan = r.plan(sys, &obs);
            Some(if plan.is_empty() {
                format!("{CANNOT}{}", obs.message)
            } else {
                plan.iter()
                    .map(Change::describe)
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        }
        Status::PendingReboot => {
            Some("reboot: the change is made and takes effect at the next boot".into())
        }
        _ => None,
    };
    let mut it = item(r, obs);
    it.remediation = remediation;
    it
}

fn item(r: &dyn Resource, obs: Observation) -> Item {
    Item {
        id: r.id(),
        kind: r.kind().to_string(),
        status: obs.status,
        expected: obs.expected,
        actual: obs.actual,
        message: obs.message,
        origin: None,
        remediation: None,
        waiver: None,
    }
}

fn error_item(r: &dyn Resource, e: &anyhow::Error) -> Item {
    Item {
        id: r.id(),
        kind: r.kind().to_string(),
        status: Status::Error,
        expected: Value::Null,
        actual: Value::Null,
        message: format!("{e:#}"),
        origin: None,
        remediation: None,
        waiver: None,
    }
}

/// Checks every resource. Writes nothing.
pub fn verify(sys: &System, resources: &[Box<dyn Resource>]) -> Vec<Item> {
    verify_each(sys, resources, |_| {})
}

/// [`verify`], telling `done` of each item as soon as it is checked (the daemon publishes what a
/// stuck round finished).
pub fn verify_each(
    sys: &System,
    resources: &[Box<dyn Resource>],
    mut done: impl FnMut(&Item),
) -> Vec<Item> {
    let mut items: Vec<Item> = Vec::with_capacity(resources.len());
    for r in resources {
        let mut item = match r.check(sys) {
            Ok(obs) => item_of(sys, r.as_ref(), obs),
            Err(e) => error_item(r.as_ref(), &e),
        };
        through_earlier(r.as_ref(), &mut item, &items);
        done(&item);
        items.push(item);
    }
    items
}

/// An item whose check could not run to its end: `error`, with why.
pub fn unfinished_item(id: String, kind: String, message: String) -> Item {
    Item {
        id,
        kind,
        status: Status::Error,
        expected: Value::Null,
        actual: Value::Null,
        message,
        origin: None,
        remediation: None,
        waiver: None,
    }
}

/// Options of an apply run.
#[derive(Clone, Copy, Debug, Default)]
pub struct ApplyOptions {
    /// Plan only: change nothing.
    pub check_only: bool,
    /// Carry out only plans made entirely of file writes and removals (the daemon's enforce
    /// mode); anything else stays drift.
    pub files_only: bool,
}

/// The outcome of `apply`.
pub struct ApplyOutcome {
    /// Final state of every item (after the changes; the planned-against state with `--check`).
    pub items: Vec<Item>,
    pub changes: Vec<ChangeRecord>,
    /// Diffs of every file changed (or that would be).
    pub diffs: Vec<String>,
    /// Some change failed.
    pub failed: bool,
}

/// Converges the system: per resource, in order, check, plan, apply, check again.
pub fn apply(sys: &System, resources: &[Box<dyn Resource>], opts: ApplyOptions) -> ApplyOutcome {
    let mut out = ApplyOutcome {
        items: Vec::new(),
        changes: Vec::new(),
        diffs: Vec::new(),
        failed: false,
    };
    if !opts.check_only {
        let mut sweep = fsutil::Sweep::default();
        for r in resources {
            for p in r.managed_paths() {
                match sweep.clean(sys.root(), &p) {
                    Ok(removed) => {
                        for f in removed {
                            tracing::warn!(file = %f.display(), "removed temp file left by an interrupted run");
                        }
                    }
                    Err(e) => tracing::warn!("{e:#}"),
                }
            }
        }
    }
    for r in resources {
        let obs = match r.check(sys) {
            Ok(o) => o,
            Err(e) => {
                out.items.push(error_item(r.as_ref(), &e));
                continue;
            }
        };
        if !matches!(obs.status, Status::Drift) {
            out.items.push(item_of(sys, r.as_ref(), obs));
            continue;
        }
        let plan = r.plan(sys, &obs);
        if opts.files_only && !plan.iter().all(Change::is_file_change) {
            out.items.push(item_of(sys, r.as_ref(), obs));
            continue;
        }
        if plan.is_empty() || opts.check_only {
            for c in &plan {
                out.diffs.extend(c.diff());
                out.changes.push(ChangeRecord {
                    item: r.id(),
                    action: c.describe(),
                    done: false,
                    not_run: false,
                    details: Vec::new(),
                });
            }
            let mut it = item_of(sys, r.as_ref(), obs);
            through_earlier(r.as_ref(), &mut it, &out.items);
            out.items.push(it);
            continue;
        }
        tracing::info!(item = %r.id(), "converging: {}", plan.iter().map(Change::describe).collect::<Vec<_>>().join("; "));
        sys.started.set(0);
        sys.executed.set(0);
        let result = r.apply(sys, &plan);
        // On failure, the changes before the one that failed were done; those after it (or
        // after a failure between two changes) never ran.
        let (done, started) = match &result {
            Ok(_) => (plan.len(), plan.len()),
            Err(_) => (sys.executed.get(), sys.started.get()),
        };
        for (i, c) in plan.iter().enumerate() {
            out.diffs.extend(c.diff());
            out.changes.push(ChangeRecord {
                item: r.id(),
                action: c.describe(),
                done: i < done,
                not_run: i >= started,
                details: Vec::new(),
            });
        }
        if let (Ok(details), Some(last)) = (&result, out.changes.last_mut()) {
            last.details = details.clone();
            for d in details {
                tracing::info!(item = %r.id(), "{d}");
            }
        }
        match result {
            Err(e) => {
                out.failed = true;
                let mut it = error_item(r.as_ref(), &e.context(format!("applying {}", r.id())));
                it.expected = obs.expected;
                it.actual = obs.actual;
                out.items.push(it);
            }
            Ok(_) => match r.check(sys) {
                Ok(after) => out.items.push(item_of(sys, r.as_ref(), after)),
                Err(e) => out.items.push(error_item(r.as_ref(), &e)),
            },
        }
    }
    out
}
