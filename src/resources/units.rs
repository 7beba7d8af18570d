//! `[units]`: systemd units masked, unmasked, enabled or disabled, and (with `now`) stopped or
//! started, through systemd's own API on a live system and its unit files offline; drop-ins
//! written for them and loaded by systemd (`Reload` once after any changed).
//!
//! Owns judging one unit: the unit-file state *and* the active state (a unit that should be masked
//! but still runs is drift; a unit systemd skipped for an unmet condition is reported, not fought),
//! and the plan that converges it. A real unit file in /etc/systemd/system blocks masking: it is
//! reported with what to do, never deleted.

use anyhow::Result;
use serde_json::json;

use super::FileResource;
use super::services::{Action, Feed};
use crate::engine::{Change, Observation, Resource, System, UnitOp};
use crate::policy::Units;
use crate::report::Status;
use crate::systemd::UnitState;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    Masked,
    Unmasked,
    Enabled,
    Disabled,
}

impl Want {
    fn as_str(self) -> &'static str {
        match self {
            Want::Masked => "masked",
            Want::Unmasked => "unmasked",
            Want::Enabled => "enabled",
            Want::Disabled => "disabled",
        }
    }
}

/// The drop-in files and, per unit, the item that checks systemd loaded them. They run before
/// the unit items, so a unit started with `now` starts with its drop-ins.
pub fn dropin_resources(u: &Units) -> Vec<Box<dyn Resource>> {
    let mut out: Vec<Box<dyn Resource>> = Vec::new();
    // Units in the order their first drop-in comes, each with its drop-ins' paths in order.
    let mut units: Vec<&str> = Vec::new();
    let mut paths: std::collections::HashMap<&str, Vec<String>> = Default::default();
    for d in &u.dropins {
        out.push(Box::new(FileResource::new(
            "units",
            &d.path(),
            d.content.clone(),
        )));
        paths
            .entry(d.unit.as_str())
            .or_insert_with(|| {
                units.push(&d.unit);
                Vec::new()
            })
            .push(d.path());
    }
    for unit in units {
        out.push(Box::new(DropinsLoaded {
            unit: unit.to_string(),
            paths: paths.remove(unit).unwrap_or_default(),
        }));
    }
    out
}

/// Which running unit reads which drop-in, for the `service:` items.
pub fn feeds(u: &Units) -> Vec<Feed> {
    u.dropins
        .iter()
        .map(|d| Feed {
            unit: d.unit.clone(),
            action: Action::Restart,
            path: d.path(),
            allowed: u.restart,
            section: "[units]".to_string(),
        })
        .collect()
}

/// `unit-dropins:UNIT`: systemd has loaded the unit's drop-ins (its `DropInPaths`), and has no
/// newer version of its files to load (`NeedDaemonReload`). Fixed with one `Reload`.
pub struct DropinsLoaded {
    pub unit: String,
    pub paths: Vec<String>,
}

impl Resource for DropinsLoaded {
    fn id(&self) -> String {
        format!("unit-dropins:{}", self.unit)
    }

    fn kind(&self) -> &'static str {
        "units"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let expected = json!({"dropInPaths": self.paths, "needDaemonReload": false});
        if let Some(why) = sys.offline_reason() {
            return Ok(Observation::new(
                Status::Skipped,
                expected,
                json!(null),
                format!("whether systemd loaded the drop-ins is checked live only: {why}"),
            ));
        }
        let rt = sys.units()?.runtime(&self.unit)?;
        let actual = json!({"dropInPaths": rt.drop_in_paths, "needDaemonReload": rt.need_daemon_reload, "loadState": rt.load_state});
        let mut problems = Vec::new();
        for p in &self.paths {
            if sys.exists(p) && !rt.drop_in_paths.contains(p) {
                problems.push(format!("systemd has not loaded {p}"));
            }
        }
        if rt.need_daemon_reload {
            problems.push(format!(
                "systemd has older versions of {}'s files loaded (NeedDaemonReload)",
                self.unit
            ));
        }
        if !problems.is_empty() {
            problems.push("a daemon-reload loads them; `guestprep apply` does it".to_string());
        }
        Ok(Observation::judged(expected, actual, &problems, ""))
    }

    fn plan(&self, sys: &System, obs: &Observation) -> Vec<Change> {
        if !sys.is_live() || obs.status != Status::Drift {
            return Vec::new();
        }
        vec![Change::Unit {
            op: UnitOp::Reload,
            name: self.unit.clone(),
        }]
    }
}

pub fn resources(u: &Units) -> Vec<Box<dyn Resource>> {
    let mut out: Vec<Box<dyn Resource>> = Vec::new();
    // `now = [list]`: looked up in a set, not the list, for each unit.
    let now: Option<std::collections::HashSet<&str>> = match &u.now {
        crate::policy::Now::Units(l) => Some(l.iter().map(String::as_str).collect()),
        crate::policy::Now::All(_) => None,
    };
    for (names, want) in [
        (&u.mask, Want::Masked),
        (&u.unmask, Want::Unmasked),
        (&u.disable, Want::Disabled),
        (&u.enable, Want::Enabled),
    ] {
        for n in names {
            out.push(Box::new(UnitItem {
                name: n.clone(),
                want,
                now: now
                    .as_ref()
                    .map_or_else(|| u.now.applies_to(n), |s| s.contains(n.as_str())),
            }));
        }
    }
    out
}

pub struct UnitItem {
    pub name: String,
    pub want: Want,
    pub now: bool,
}

/// Unit-file states in which a unit is not started at boot by an `[Install]` link.
fn is_disabled_like(st: &UnitState) -> bool {
    matches!(
        st.unit_file_state.as_str(),
        "disabled" | "static" | "not-found" | "indirect" | "generated" | "transient"
    ) || st.is_masked()
}

impl UnitItem {
    fn expected(&self, live: bool) -> serde_json::Value {
        let active = match self.want {
            Want::Masked => Some(false),
            Want::Disabled | Want::Enabled if self.now => Some(self.want == Want::Enabled),
            _ => None,
        };
        json!({"unitFileState": self.want.as_str(), "running": if live { json!(active) } else { json!(null) }, "now": self.now})
    }

    /// The unit-file part: Ok(()) or the problem.
    fn file_problem(&self, st: &UnitState) -> Option<String> {
        let s = &st.unit_file_state;
        match self.want {
            Want::Masked if !st.is_masked() => Some(format!("unit-file state {s}, want masked")),
            Want::Unmasked if st.is_masked() => Some("masked, want unmasked".to_string()),
            Want::Enabled if st.is_masked() => Some("masked, want enabled".to_string()),
            Want::Enabled if !st.is_enabled_like() => {
                Some(format!("unit-file state {s}, want enabled"))
            }
            Want::Enabled if !st.missing_links.is_empty() => Some(format!(
                "enabled, but [Install] links are missing: {}",
                st.missing_links.join(", ")
            )),
            Want::Disabled if !is_disabled_like(st) => {
                Some(format!("unit-file state {s}, want disabled"))
            }
            _ => None,
        }
    }
}

impl Resource for UnitItem {
    fn id(&self) -> String {
        format!("unit:{}", self.name)
    }

    fn kind(&self) -> &'static str {
        "units"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let expected = self.expected(sys.is_live());
        // systemd refuses to mask over a real unit file: say so before asking it.
        let etc = format!("/etc/systemd/system/{}", self.name);
        if self.want == Want::Masked && matches!(sys.lstat(&etc)?, crate::root::Node::File { .. }) {
            return Ok(Observation::new(
                Status::Error,
                expected,
                json!({"blockingFile": etc}),
                format!(
                    "a unit file at {etc} blocks masking (systemd will not replace it). Move it away, e.g. to \
                     /etc/systemd/system/{}.d/ as a drop-in, or delete it yourself; guestprep never deletes a file you wrote",
                    self.name
                ),
            ));
        }
        let st = sys.units()?.state(&self.name)?;
        let actual = json!(st);
        if self.want == Want::Enabled && st.is_not_found() {
            return Ok(Observation::new(
                Status::Error,
                expected,
                actual,
                format!("unit {} not found: is its package installed?", self.name),
            ));
        }
        let mut problems: Vec<String> = self.file_problem(&st).into_iter().collect();
        let mut notes = Vec::new();
        if sys.is_live() {
            let active = st.active_state.as_deref().unwrap_or("?");
            match self.want {
                Want::Masked if st.is_running() => {
                    problems.push(format!(
                        "masked but still running ({active}){}",
                        if self.now {
                            ""
                        } else {
                            ": set `now = true` to stop it"
                        }
                    ));
                }
                Want::Disabled if self.now && st.is_running() => {
                    problems.push(format!("disabled but running ({active})"))
                }
                Want::Enabled if self.now && !st.is_running() => match &st.condition_failed {
                    Some(c) => notes.push(format!("not running: systemd skipped it, {c} not met")),
                    None => problems.push(format!("enabled but not running ({active})")),
                },
                _ => {}
            }
        } else {
            notes.push("active state not checked on an offline root".to_string());
        }
        if self.want == Want::Masked && st.is_masked() && problems.is_empty() && sys.is_live() {
            notes.insert(
                0,
                format!(
                    "masked, {}",
                    st.active_state.as_deref().unwrap_or("inactive")
                ),
            );
        }
        Ok(Observation::judged(
            expected,
            actual,
            &problems,
            notes.join("; "),
        ))
    }

    fn plan(&self, sys: &System, obs: &Observation) -> Vec<Change> {
        let Ok(st) = serde_json::from_value::<UnitState>(obs.actual.clone()) else {
            return Vec::new();
        };
        let unit = |op| Change::Unit {
            op,
            name: self.name.clone(),
        };
        let mut plan = Vec::new();
        match self.want {
            Want::Masked if !st.is_masked() => plan.push(unit(UnitOp::Mask)),
            Want::Unmasked | Want::Enabled if st.is_masked() => plan.push(unit(UnitOp::Unmask)),
            _ => {}
        }
        if self.want == Want::Enabled && (!st.is_enabled_like() || !st.missing_links.is_empty()) {
            plan.push(unit(UnitOp::Enable));
        }
        if self.want == Want::Disabled && !is_disabled_like(&st) {
            plan.push(unit(UnitOp::Disable));
        }
        if !plan.is_empty() && sys.is_live() {
            plan.push(unit(UnitOp::Reload));
        }
        if sys.is_live() && self.now {
            let stop = matches!(self.want, Want::Masked | Want::Disabled) && st.is_running();
            let start =
                self.want == Want::Enabled && !st.is_running() && st.condition_failed.is_none();
            if stop {
                plan.push(unit(UnitOp::Stop));
            }
            if start {
                plan.push(unit(UnitOp::Start));
            }
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::temproot::TempRoot;

    const UNIT: &str = "/usr/lib/systemd/system/site.service";
    const WANTS: &str = "/etc/systemd/system/multi-user.target.wants/site.service";

    fn item(want: Want) -> UnitItem {
        UnitItem {
            name: "site.service".into(),
            want,
            now: false,
        }
    }

    fn root() -> TempRoot {
        let t = TempRoot::new();
        t.file(
            UNIT,
            "[Service]\nExecStart=/bin/true\n\n[Install]\nWantedBy=multi-user.target\n",
        );
        t
    }

    #[test]
    fn enabled_is_the_install_links() {
        let t = root();
        let (status, message) = t.check(&item(Want::Enabled));
        assert_eq!(status, Status::Drift);
        assert!(
            message.starts_with("unit-file state disabled, want enabled"),
            "{message}"
        );
        assert_eq!(t.check(&item(Want::Disabled)).0, Status::Compliant);
        t.link(WANTS, UNIT);
        assert_eq!(t.check(&item(Want::Enabled)).0, Status::Compliant);
        assert_eq!(t.check(&item(Want::Disabled)).0, Status::Drift);
        // A unit no package installed cannot be enabled: an error, not drift.
        let gone = UnitItem {
            name: "gone.service".into(),
            want: Want::Enabled,
            now: false,
        };
        assert_eq!(t.check(&gone).0, Status::Error);
    }

    #[test]
    fn masked_is_a_link_to_dev_null() {
        let t = root();
        let masked = "/etc/systemd/system/site.service";
        assert_eq!(t.check(&item(Want::Masked)).0, Status::Drift);
        assert_eq!(t.check(&item(Want::Unmasked)).0, Status::Compliant);
        t.link(masked, "/dev/null");
        assert_eq!(t.check(&item(Want::Masked)).0, Status::Compliant);
        assert_eq!(t.check(&item(Want::Unmasked)).0, Status::Drift);
        assert_eq!(t.check(&item(Want::Enabled)).0, Status::Drift);
        // A real unit file there blocks masking: reported, never deleted.
        t.file(masked, "[Service]\nExecStart=/bin/false\n");
        let (status, message) = t.check(&item(Want::Masked));
        assert_eq!(status, Status::Error);
        assert!(message.contains("blocks masking"), "{message}");
    }
}
