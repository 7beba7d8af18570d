//! [`Change`]: one effect of a plan, how it is described (`apply --check`), diffed (`--diff`) and
//! carried out: file writes and removals through `fsutil`, live effects (a `/proc/sys` value, a
//! program, a unit operation over D-Bus, systemd-timedated) only where the [`super::Mode`] allows.

use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{Mode, System};
use crate::fsutil;

/// One effect of a plan.
#[derive(Clone, Debug)]
pub enum Change {
    /// Write a whole file atomically. `old` is the current content, for diffs.
    Write {
        path: String,
        content: Vec<u8>,
        mode: Option<u32>,
        old: Option<Vec<u8>>,
    },
    /// Remove a file guestprep owns.
    Remove { path: String, old: Vec<u8> },
    /// Create a directory (and missing parents) with this mode.
    MakeDir { path: String, mode: u32 },
    /// Set the time zone of the running system: systemd-timedated's `SetTimezone` (it rewrites
    /// the /etc/localtime link). Live roots only; offline, a plan writes the link itself.
    Timezone { zone: String },
    /// Create or replace a symbolic link atomically (`/etc/localtime` offline).
    Symlink { path: String, target: String },

    /// Set the mode and/or owner of a file or directory (`shown`: `owner:group` as written).
    Attrs {
        path: String,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        shown: String,
    },
    /// Set a live kernel value (a file under /proc/sys). Live roots only.
    WriteProc { path: String, value: String },
    /// Run a program on the live system. Live roots only.
    Run { argv: Vec<String> },
    /// Run a program of the managed system itself: on a live root as [`Change::Run`]; on an
    /// offline root with `--chroot`, inside it with /proc, /sys and /dev mounted
    /// ([`crate::inroot`]); refused offline otherwise.
    RunInRoot { argv: Vec<String> },
    /// A systemd operation on a unit (D-Bus when live, unit files offline).
    Unit { op: UnitOp, name: String },
    /// Download a file into the root, verified by sha256 (retried with backoff).
    Download {
        url: String,
        sha256: String,
        path: String,
        retries: u32,
        base_delay: Duration,
    },
}

/// What to do to a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitOp {
    Mask,
    Unmask,
    Enable,
    Disable,
    /// systemd's `Reload` (daemon-reload): re-read unit files and drop-ins.
    Reload,
    Start,
    Stop,
    /// `ReloadOrTryRestartUnit`: the service re-reads its configuration, if it runs.
    ReloadOrTryRestart,
    /// `TryRestartUnit`: the service restarts with its new configuration, if it runs.
    TryRestart,
}

impl UnitOp {
    /// The verb as `systemctl` spells it.
    pub fn verb(self) -> &'static str {
        match self {
            UnitOp::Mask => "mask",
            UnitOp::Unmask => "unmask",
            UnitOp::Enable => "enable",
            UnitOp::Disable => "disable",
            UnitOp::Reload => "daemon-reload",
            UnitOp::Start => "start",
            UnitOp::Stop => "stop",
            UnitOp::ReloadOrTryRestart => "reload-or-try-restart",
            UnitOp::TryRestart => "try-restart",
        }
    }
}

impl Change {
    /// A write or removal of a file, and nothing else (no program, no live value, no unit).
    pub fn is_file_change(&self) -> bool {
        matches!(
            self,
            Change::Write { .. }
                | Change::Remove { .. }
                | Change::MakeDir { .. }
                | Change::Attrs { .. }
                | Change::Symlink { .. }
        )
    }

    pub fn describe(&self) -> String {
        match self {
            Change::Write {
                path, old: None, ..
            } => format!("create {path}"),
            Change::Write { path, .. } => format!("update {path}"),
            Change::Remove { path, .. } => format!("remove {path}"),
            Change::MakeDir { path, mode } => format!("create directory {path} ({mode:04o})"),
            Change::Timezone { zone } => format!("set the time zone to {zone} (systemd-timedated)"),
            Change::Symlink { path, target } => format!("link {path} -> {target}"),

            Change::Attrs {
                path, mode, shown, ..
            } => match (mode, shown.is_empty()) {
                (Some(m), true) => format!("chmod {m:04o} {path}"),
                (Some(m), false) => format!("chmod {m:04o} {path}; chown {shown} {path}"),
                (None, _) => format!("chown {shown} {path}"),
            },
            Change::WriteProc { path, value } => format!("set {path} = {value}"),
            Change::Run { argv } => format!("run {}", argv.join(" ")),
            Change::RunInRoot { argv } => format!("run {} (in the root)", argv.join(" ")),
            Change::Unit {
                op: UnitOp::Reload, ..
            } => "reload systemd".to_string(),
            Change::Unit { op, name } => format!("{} {name}", op.verb()),
            Change::Download { url, path, .. } => format!("download {url} to {path}"),
        }
    }

    /// A unified diff for file changes.
    pub fn diff(&self) -> Option<String> {
        let (path, old, new): (&str, &[u8], &[u8]) = match self {
            Change::Write {
                path, content, old, ..
            } => (path, old.as_deref().unwrap_or(b""), content),
            Change::Remove { path, old } => (path, old, b""),
            _ => return None,
        };
        let (old, new) = (String::from_utf8_lossy(old), String::from_utf8_lossy(new));
        let a = if matches!(self, Change::Write { old: None, .. }) {
            "/dev/null".to_string()
        } else {
            format!("a{path}")
        };
        let b = if matches!(self, Change::Remove { .. }) {
            "/dev/null".to_string()
        } else {
            format!("b{path}")
        };
        let diff = similar::TextDiff::from_lines(old.as_ref(), new.as_ref());
        Some(
            diff.unified_diff()
                .context_radius(3)
                .header(&a, &b)
                .to_string(),
        )
    }

    /// Carries the change out and returns what was done in detail (the symlinks systemd created
    /// or removed, a job's result). Live-only changes refuse an offline root.
    pub fn execute(&self, sys: &System) -> Result<Vec<String>> {
        sys.started.set(sys.started.get() + 1);
        let r = self.execute_inner(sys);
        // Whatever was read before may have changed now. A unit operation went through the
        // units backend, which keeps what it holds up to date itself.
        sys.forget_reads();
        if !matches!(self, Change::Unit { .. }) {
            sys.forget_units();
        }
        if r.is_ok() {
            sys.executed.set(sys.executed.get() + 1);
        }
        r
    }

    fn execute_inner(&self, sys: &System) -> Result<Vec<String>> {
        match self {
            Change::Write {
                path,
                content,
                mode,
                ..
            } => {
                fsutil::write_atomic(sys.root(), path, content, *mode)?;
            }
            Change::Remove { path, .. } => {
                fsutil::remove(sys.root(), path)?;
            }
            Change::MakeDir { path, mode } => {
                fsutil::make_dir(sys.root(), path, *mode)?;
            }
            Change::Timezone { zone } => {
                if !sys.is_live() {
                    bail!(
                        "refusing to set the time zone of the running system on an {}",
                        sys.root().describe()
                    );
                }
                crate::systemd::dbus::set_timezone(zone)?;
                return Ok(vec![format!(
                    "systemd-timedated set the time zone to {zone}"
                )]);
            }
            Change::Symlink { path, target } => {
                fsutil::symlink_atomic(sys.root(), path, target)?;
                return Ok(vec![format!("{path} -> {target}")]);
            }
            Change::Attrs {
                path,
                mode,
                uid,
                gid,
                ..
            } => {
                fsutil::set_attrs(sys.root(), path, *mode, *uid, *gid)?;
            }
            Change::WriteProc { path, value } => {
                if !sys.is_live() {
                    bail!("refusing to set {path} on an {}", sys.root().describe());
                }
                let p = sys.root().path(path)?;
                std::fs::write(&p, format!("{value}\n"))
                    .with_context(|| format!("writing {}", p.display()))?;
            }
            Change::Run { argv } => {
                if sys.mode().runs_programs() && crate::packages::dpkglock::needs_lock(argv) {
                    crate::packages::dpkglock::wait_free(
                        sys.root(),
                        crate::packages::dpkglock::TIMEOUT,
                    )?;
                }
                if sys.is_live() {
                    run_watched(argv)?;
                } else if sys.mode() == Mode::Chroot {
                    let mut c = vec!["chroot".to_string(), sys.root().dir().display().to_string()];
                    c.extend(argv.iter().cloned());
                    run_watched(&c)?;
                } else {
                    bail!(
                        "refusing to run {} on an {} (use --chroot to run it inside)",
                        argv.join(" "),
                        sys.root().describe()
                    );
                }
            }
            Change::RunInRoot { argv } => {
                if sys.is_live() {
                    run_watched(argv)?;
                } else if sys.mode() == Mode::Chroot {
                    run_watched(&crate::inroot::command(sys.root(), argv)?)?;
                } else {
                    bail!(
                        "refusing to run {} on an {} (use --chroot to run it inside)",
                        argv.join(" "),
                        sys.root().describe()
                    );
                }
            }
            Change::Download {
                url,
                sha256,
                path,
                retries,
                base_delay,
            } => {
                let spec = crate::packages::download::Spec::new(
                    url,
                    Some(sha256.clone()),
                    sys.root().resolve(path)?,
                    *retries,
                    *base_delay,
                );
                let f = crate::packages::download::fetch(&spec)?;
                return Ok(vec![if f.from_cache {
                    format!("{path}: cached copy has the right sha256, not downloaded")
                } else {
                    format!(
                        "downloaded {} bytes in {} attempt(s), sha256 {}",
                        f.bytes, f.attempts, f.sha256
                    )
                }]);
            }
            Change::Unit { op, name } => {
                let u = sys.units()?;
                let files = match op {
                    UnitOp::Mask => u.mask(name)?,
                    UnitOp::Unmask => u.unmask(name)?,
                    UnitOp::Enable => u.enable(name)?,
                    UnitOp::Disable => u.disable(name)?,
                    UnitOp::Reload => {
                        u.reload()?;
                        return Ok(Vec::new());
                    }
                    UnitOp::Start
                    | UnitOp::Stop
                    | UnitOp::ReloadOrTryRestart
                    | UnitOp::TryRestart => {
                        let verb = op.verb();
                        let result = match op {
                            UnitOp::Start => u.start(name)?,
                            UnitOp::Stop => u.stop(name)?,
                            UnitOp::ReloadOrTryRestart => u.reload_or_try_restart(name)?,
                            _ => u.try_restart(name)?,
                        };
                        if !matches!(result.as_str(), "done" | "skipped") {
                            bail!(
                                "the {verb} job of {name} ended with result `{result}` (see `journalctl -u {name}`)"
                            );
                        }
                        return Ok(vec![format!("{verb} job of {name}: {result}")]);
                    }
                };
                return Ok(files.iter().map(ToString::to_string).collect());
            }
        }
        Ok(Vec::new())
    }
}

/// Runs a planned command, its heartbeat saying what a DKMS build under it is doing.
fn run_watched(argv: &[String]) -> Result<String> {
    crate::exec::run_with(argv, &mut crate::packages::makelog::watch(argv))
}
