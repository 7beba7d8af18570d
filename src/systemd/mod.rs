//! systemd units: their state and the operations on them, behind one [`UnitManager`] trait with
//! two backends chosen by the root: [`dbus`] talks to the running systemd over the system bus
//! (never `systemctl`), [`offline`] does to an image's files what `systemctl --root` does.

pub mod dbus;
mod install;
mod links;
pub mod offline;
pub mod socket;

use anyhow::Result;
use serde::{Deserialize, Serialize};

/// Unit suffixes systemd knows.
pub const UNIT_SUFFIXES: &[&str] = &[
    "service",
    "socket",
    "target",
    "timer",
    "mount",
    "automount",
    "path",
    "swap",
    "slice",
    "scope",
    "device",
];

/// The state of one unit.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UnitState {
    /// systemd's unit-file state (`enabled`, `disabled`, `masked`, `static`, `alias`, …), or
    /// `not-found` when no unit file exists.
    pub unit_file_state: String,
    /// `active`, `inactive`, `failed`, …; `None` offline.
    pub active_state: Option<String>,
    /// `running`, `dead`, `exited`, …; `None` offline.
    pub sub_state: Option<String>,
    /// The condition that kept systemd from starting it (`ConditionCapability=CAP_SYS_TIME`).
    pub condition_failed: Option<String>,
    /// Offline: `[Install]` symlinks of an enabled unit that are missing (an interrupted enable).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_links: Vec<String>,
}

impl UnitState {
    pub fn is_masked(&self) -> bool {
        self.unit_file_state.starts_with("masked")
    }

    pub fn is_not_found(&self) -> bool {
        self.unit_file_state == "not-found"
    }

    /// Started at boot or by its dependencies without an `[Install]` action from us.
    pub fn is_enabled_like(&self) -> bool {
        matches!(
            self.unit_file_state.as_str(),
            "enabled"
                | "enabled-runtime"
                | "static"
                | "indirect"
                | "generated"
                | "alias"
                | "linked"
                | "transient"
        )
    }

    pub fn is_running(&self) -> bool {
        matches!(
            self.active_state.as_deref(),
            Some("active" | "activating" | "reloading" | "deactivating")
        )
    }
}

/// What systemd knows of a loaded unit at run time (live only): whether a process runs, since
/// when, when it last changed state (a reload ends with one), and which drop-ins it loaded.
/// Timestamps are microseconds since the epoch, 0 when systemd has none.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UnitRuntime {
    /// `loaded`, `not-found`, `masked`, …
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    /// The service's main process, 0 when none (or not a service).
    pub main_pid: u32,
    /// `ExecMainStartTimestamp`: when the main process started (services only).
    pub exec_main_start_usec: u64,
    /// `ActiveEnterTimestamp`: when the unit last became active.
    pub active_enter_usec: u64,
    /// `StateChangeTimestamp`: the last state change (the end of a reload is one).
    pub state_change_usec: u64,
    /// `DropInPaths`: the drop-in files systemd loaded for it.
    pub drop_in_paths: Vec<String>,
    /// `NeedDaemonReload`: its files changed on disk since systemd loaded them.
    pub need_daemon_reload: bool,
    /// A socket's `Listen`: (type, address), `("Stream", "[::]:22")` (sockets only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listen: Vec<(String, String)>,
    /// A socket's `BindIPv6Only` (`default`, `both`, `ipv6-only`; sockets only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bind_ipv6_only: String,
}

impl UnitRuntime {
    /// Active with a process of its own (not a oneshot that has exited, not a target).
    pub fn has_process(&self) -> bool {
        matches!(self.active_state.as_str(), "active" | "reloading") && self.main_pid != 0
    }
}

/// One file change systemd (or the offline backend) made: `symlink PATH -> DEST`, `unlink PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileChange {
    pub kind: String,
    pub path: String,
    pub dest: String,
}

impl std::fmt::Display for FileChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.dest.is_empty() {
            write!(f, "{} {}", self.kind, self.path)
        } else {
            write!(f, "{} {} → {}", self.kind, self.path, self.dest)
        }
    }
}

/// What guestprep does to units. Both backends give the same end state for the same calls.
pub trait UnitManager {
    fn state(&self, name: &str) -> Result<UnitState>;
    fn mask(&self, name: &str) -> Result<Vec<FileChange>>;
    fn unmask(&self, name: &str) -> Result<Vec<FileChange>>;
    fn enable(&self, name: &str) -> Result<Vec<FileChange>>;
    fn disable(&self, name: &str) -> Result<Vec<FileChange>>;
    /// `daemon-reload`.
    fn reload(&self) -> Result<()>;
    /// Starts the unit and waits for its job; returns the job result (`done`, `skipped`, …).
    fn start(&self, name: &str) -> Result<String>;
    /// Stops the unit and waits for its job; returns the job result.
    fn stop(&self, name: &str) -> Result<String>;
    /// Run-time state of a unit (live only; the offline backend refuses).
    fn runtime(&self, name: &str) -> Result<UnitRuntime>;
    /// `ReloadOrTryRestartUnit`: reload if it can, else restart; only if it runs. Job awaited.
    fn reload_or_try_restart(&self, name: &str) -> Result<String>;
    /// `TryRestartUnit`: restart only if it runs. Job awaited.
    fn try_restart(&self, name: &str) -> Result<String>;
    /// systemd's `SystemState` (`starting`, `running`, `degraded`…) and its queued jobs
    /// (`unit (start)`): whether the machine has settled after boot. Live only.
    fn settle(&self) -> Result<(String, Vec<String>)>;
    /// Drops what the backend read of the system and kept: something may have changed it.
    fn forget(&self) {}
}

/// Checks a unit name like systemd's `unit_name_is_valid`: `prefix[@instance].suffix`.
pub fn check_unit_name(s: &str) -> Result<(), String> {
    let Some((stem, suffix)) = s.rsplit_once('.') else {
        return Err(format!("`{s}` has no unit type suffix (like .service)"));
    };
    if !UNIT_SUFFIXES.contains(&suffix) {
        return Err(format!(
            "`{s}`: unknown unit type `.{suffix}`; expected one of {}",
            UNIT_SUFFIXES.join(", ")
        ));
    }
    if s.len() > 255 || stem.is_empty() || stem.starts_with('@') {
        return Err(format!("`{s}` is not a valid unit name"));
    }
    if let Some(c) = stem
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ":-_.\\@".contains(*c)))
    {
        return Err(format!("`{s}` contains `{c}`, not allowed in unit names"));
    }
    if stem.matches('@').count() > 1 {
        return Err(format!("`{s}` has more than one `@`"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names() {
        for ok in [
            "dkms.service",
            "systemd-timesyncd.service",
            "getty@tty1.service",
            "foo@.service",
            "dev-sda2.swap",
            "a\\x2db.mount",
        ] {
            assert!(check_unit_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "dkms",
            "dkms.servic",
            "a b.service",
            ".service",
            "@x.service",
            "a@b@c.service",
            "x/y.service",
        ] {
            assert!(check_unit_name(bad).is_err(), "{bad}");
        }
    }
}
