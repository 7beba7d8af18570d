//! Running services follow the files guestprep manages for them.
//!
//! Owns the `service:UNIT` items: which unit reads which managed file (sshd's drop-in →
//! `ssh.service`, chrony's → `chrony.service`, a unit's drop-ins → that unit, `[[files]]` →
//! its `restart`/`reload` lists), judging whether the running unit has read the file's current
//! version, and the one reload or restart that fixes it. The judgement is made from systemd's
//! own timestamps over D-Bus (`ExecMainStartTimestamp`, `ActiveEnterTimestamp`, and for a reload
//! `StateChangeTimestamp`, which a reload's end updates) against the file's mtime: no subprocess,
//! and a second `apply` restarts nothing. One item per unit, after every file item, so a unit is
//! restarted once per run however many of its files changed. A socket (`ssh.socket`, whose
//! `ListenStream=` a drop-in sets) counts from when it last started listening, and is restarted;
//! which units follow sshd's files on a root is `sshsocket.rs`'s to say (a daemon a socket has
//! not started yet reloads nothing; a per-connection sshd has no daemon to follow).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use serde_json::json;

use crate::engine::{Change, Observation, Resource, System, UnitOp};
use crate::report::{Status, rfc3339};
use crate::systemd::UnitRuntime;

/// What the unit does to take a new configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `ReloadOrTryRestartUnit`: re-read in place (sshd keeps its sessions).
    Reload,
    /// `TryRestartUnit`.
    Restart,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Reload => "reload",
            Action::Restart => "restart",
        }
    }
}

/// One managed file and the unit that reads it, as a section declares it.
#[derive(Clone, Debug)]
pub struct Feed {
    pub unit: String,
    pub action: Action,
    pub path: String,
    /// The section lets `apply` do it (`restart = false` says no).
    pub allowed: bool,
    /// The section, for messages (`[ssh]`, `files[2]`).
    pub section: String,
}

/// Groups feeds by unit, in the order their files came: one item per unit. A unit is restarted
/// when any of its files asks for a restart, reloaded otherwise, and left alone when any section
/// feeding it said `restart = false`.
pub fn resources(feeds: &[Feed]) -> Vec<Box<dyn Resource>> {
    let mut out: Vec<Follow> = Vec::new();
    // Each unit's place in `out`, and the files it already follows: looked up, not scanned, for
    // each feed (10,000 `[[files]]` restarting one unit are 10,000 feeds of it).
    let mut at: std::collections::HashMap<&str, usize> = Default::default();
    let mut files: Vec<std::collections::HashSet<&str>> = Vec::new();
    for f in feeds {
        match at.get(f.unit.as_str()) {
            Some(&i) => {
                let o = &mut out[i];
                if files[i].insert(&f.path) {
                    o.files.push(f.path.clone());
                }
                if f.action == Action::Restart {
                    o.action = Action::Restart;
                }
                if !f.allowed {
                    o.allowed = false;
                    o.held_by = Some(f.section.clone());
                }
            }
            None => {
                at.insert(&f.unit, out.len());
                files.push([f.path.as_str()].into());
                out.push(Follow {
                    unit: f.unit.clone(),
                    action: f.action,
                    files: vec![f.path.clone()],
                    allowed: f.allowed,
                    held_by: (!f.allowed).then(|| f.section.clone()),
                });
            }
        }
    }
    out.into_iter()
        .map(|f| Box::new(f) as Box<dyn Resource>)
        .collect()
}

/// `service:UNIT`: the running unit has read the current version of every file it follows.
pub struct Follow {
    pub unit: String,
    pub action: Action,
    pub files: Vec<String>,
    pub allowed: bool,
    /// The section whose `restart = false` holds it back.
    pub held_by: Option<String>,
}

fn usec_time(us: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(us)
}

fn time_usec(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// When the running unit last read its configuration, in µs since the epoch: its main process's
/// start (or, without one, when it became active); for a reload, its last state change if later.
pub fn config_read_usec(rt: &UnitRuntime, action: Action) -> u64 {
    let start = if rt.exec_main_start_usec > 0 {
        rt.exec_main_start_usec
    } else {
        rt.active_enter_usec
    };
    match action {
        Action::Restart => start,
        Action::Reload => start.max(rt.state_change_usec),
    }
}

impl Follow {
    /// Each followed file's last change, µs since the epoch. A file that is gone counts from its
    /// directory's last change (the removal was one).
    fn changes(&self, sys: &System) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for f in &self.files {
            let t = match sys.modified(f)? {
                Some(t) => Some(t),
                None => {
                    let dir = f.rsplit_once('/').map_or("/", |(d, _)| d);
                    sys.modified(if dir.is_empty() { "/" } else { dir })?
                }
            };
            if let Some(t) = t {
                out.push((f.clone(), time_usec(t)));
            }
        }
        Ok(out)
    }

    /// For a socket: the service it starts (`NAME.service`, systemd's default) when that service
    /// runs. A per-connection socket's instances (`NAME@…`) do not stop it from restarting.
    fn triggered_daemon(&self, sys: &System) -> Result<Option<String>> {
        let Some(stem) = self.unit.strip_suffix(".socket") else {
            return Ok(None);
        };
        let service = format!("{stem}.service");
        let rt = sys.units()?.runtime(&service)?;
        Ok(rt.has_process().then_some(service))
    }

    fn fix(&self) -> String {
        format!("systemctl {} {}", self.verb(), self.unit)
    }

    fn verb(&self) -> &'static str {
        match self.action {
            Action::Reload => "reload-or-restart",
            Action::Restart => "restart",
        }
    }
}

impl Resource for Follow {
    fn id(&self) -> String {
        format!("service:{}", self.unit)
    }

    fn kind(&self) -> &'static str {
        "service"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let expected = json!({
            "readsCurrentConfiguration": true,
            "files": self.files,
            "action": self.action.as_str(),
            "automatic": self.allowed,
        });
        if let Some(why) = sys.offline_reason() {
            return Ok(Observation::new(
                Status::Skipped,
                expected,
                json!(null),
                format!(
                    "whether {} runs its current configuration is checked live only: {why}",
                    self.unit
                ),
            ));
        }
        let rt = sys.units()?.runtime(&self.unit)?;
        let changes = self.changes(sys)?;
        let files: serde_json::Map<String, serde_json::Value> = changes
            .iter()
            .map(|(f, t)| (f.clone(), json!(rfc3339(usec_time(*t)))))
            .collect();
        let read_at = config_read_usec(&rt, self.action);
        let mut actual = json!({
            "loadState": rt.load_state,
            "activeState": rt.active_state,
            "subState": rt.sub_state,
            "mainPid": rt.main_pid,
            "filesChangedAt": files,
        });
        if rt.load_state == "not-found" {
            return Ok(Observation::new(
                Status::Compliant,
                expected,
                actual,
                format!(
                    "{} is not installed: nothing runs an older configuration",
                    self.unit
                ),
            ));
        }
        // A socket has no process: it "runs" its configuration from when it started listening.
        let is_socket = self.unit.ends_with(".socket");
        let running = if is_socket {
            rt.active_state == "active"
        } else {
            rt.has_process()
        };
        if !running {
            return Ok(Observation::new(
                Status::Compliant,
                expected,
                actual,
                format!(
                    "{} is not running ({}/{}): it reads its configuration when it starts",
                    self.unit, rt.active_state, rt.sub_state
                ),
            ));
        }
        actual["configurationReadAt"] = json!(rfc3339(usec_time(read_at)));
        let stale: Vec<&(String, u64)> = changes.iter().filter(|(_, t)| *t > read_at).collect();
        if stale.is_empty() {
            return Ok(Observation::new(Status::Compliant, expected, actual, ""));
        }
        let what = stale
            .iter()
            .map(|(f, t)| format!("{f} changed at {}", rfc3339(usec_time(*t))))
            .collect::<Vec<_>>()
            .join(", ");
        let since = match self.action {
            _ if is_socket => "has listened since",
            Action::Reload => "last (re)loaded its configuration at",
            Action::Restart => "has run since",
        };
        let who = if is_socket {
            self.unit.clone()
        } else {
            format!("{} (PID {})", self.unit, rt.main_pid)
        };
        let head = format!(
            "{who} {since} {}, before {what}: it still runs the older configuration",
            rfc3339(usec_time(read_at)),
        );
        // systemd refuses to start a socket (`Accept=no`) while the service it starts runs
        // ("Socket service … already active, refusing"): that daemon is stopped first, and the
        // next connection starts it again on the new sockets.
        let daemon = self.triggered_daemon(sys)?;
        if self.allowed {
            let then = match &daemon {
                Some(d) => format!(
                    "; `guestprep apply` will stop {d}, which runs on the socket (systemd starts no socket while it runs), then restart {} (or `systemctl stop {d} && {}`)",
                    self.unit,
                    self.fix()
                ),
                None => format!(
                    "; `guestprep apply` will {} it (or `{}`)",
                    self.action.as_str(),
                    self.fix()
                ),
            };
            let mut obs =
                Observation::new(Status::Drift, expected, actual, format!("{head}{then}"));
            obs.data = json!({ "stopFirst": daemon });
            Ok(obs)
        } else {
            Ok(Observation::new(
                Status::PendingReboot,
                expected,
                actual,
                format!(
                    "{head}; `restart = false` in {} leaves that to you: `{}` when convenient (a reboot also does it)",
                    self.held_by.as_deref().unwrap_or("the policy"),
                    self.fix()
                ),
            ))
        }
    }

    fn plan(&self, sys: &System, obs: &Observation) -> Vec<Change> {
        if !sys.is_live() || obs.status != Status::Drift || !self.allowed {
            return Vec::new();
        }
        let mut plan = Vec::new();
        if let Some(d) = obs.data["stopFirst"].as_str() {
            plan.push(Change::Unit {
                op: UnitOp::Stop,
                name: d.to_string(),
            });
        }
        plan.push(Change::Unit {
            op: match self.action {
                Action::Reload => UnitOp::ReloadOrTryRestart,
                Action::Restart => UnitOp::TryRestart,
            },
            name: self.unit.clone(),
        });
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(start: u64, enter: u64, change: u64) -> UnitRuntime {
        UnitRuntime {
            load_state: "loaded".into(),
            active_state: "active".into(),
            sub_state: "running".into(),
            main_pid: 42,
            exec_main_start_usec: start,
            active_enter_usec: enter,
            state_change_usec: change,
            ..UnitRuntime::default()
        }
    }

    #[test]
    fn restart_counts_from_the_main_process_start() {
        // Reloaded at 300 after a start at 100: a restart-follower still counts from 100.
        assert_eq!(config_read_usec(&rt(100, 110, 300), Action::Restart), 100);
        assert_eq!(config_read_usec(&rt(100, 110, 300), Action::Reload), 300);
        // No main process start time (not a service): when it became active.
        assert_eq!(config_read_usec(&rt(0, 110, 120), Action::Restart), 110);
    }

    #[test]
    fn one_item_per_unit_restart_wins_and_false_holds() {
        let feed = |unit: &str, action, path: &str, allowed| Feed {
            unit: unit.into(),
            action,
            path: path.into(),
            allowed,
            section: "[x]".into(),
        };
        let r = resources(&[
            feed("a.service", Action::Reload, "/etc/a", true),
            feed("b.service", Action::Restart, "/etc/b", true),
            feed("a.service", Action::Restart, "/etc/a2", false),
            feed("a.service", Action::Reload, "/etc/a", true),
        ]);
        let ids: Vec<String> = r.iter().map(|r| r.id()).collect();
        assert_eq!(ids, ["service:a.service", "service:b.service"]);
    }

    #[test]
    fn exited_oneshot_has_no_process() {
        let mut r = rt(100, 110, 120);
        assert!(r.has_process());
        r.main_pid = 0;
        r.sub_state = "exited".into();
        assert!(!r.has_process());
    }
}
