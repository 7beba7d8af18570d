//! `[modules]`: kernel modules loaded at boot (`/etc/modules-load.d/guestprep.conf`), blacklisted
//! and given options (`/etc/modprobe.d/guestprep.conf`), and their live state.
//!
//! Owns rendering both files, reading which modules are effectively listed in any
//! modules-load.d file, loaded (`/proc/modules`, `/sys/module`, `modules.builtin`) and with which
//! parameters, and loading a missing one with `modprobe` on a live system. A blacklisted module
//! that is loaded, or a loaded module with other parameter values, is `pending-reboot`: unloading
//! a driver under a running system is not guestprep's call.

use anyhow::Result;
use serde_json::json;

use super::FileResource;
use super::conffiles;
use crate::boot::kmod::ModuleName;
use crate::engine::{Change, Observation, Resource, System};
use crate::policy::Modules;
use crate::report::Status;

pub const LOAD_FILE: &str = crate::paths::MODULES_LOAD_FILE;
pub const MODPROBE_FILE: &str = crate::paths::MODPROBE_FILE;

const LOAD_DIRS: &[&str] = &[
    "/etc/modules-load.d",
    "/run/modules-load.d",
    "/usr/local/lib/modules-load.d",
    "/usr/lib/modules-load.d",
    "/lib/modules-load.d",
];
const MODPROBE_DIRS: &[&str] = &[
    "/etc/modprobe.d",
    "/run/modprobe.d",
    "/usr/local/lib/modprobe.d",
    "/usr/lib/modprobe.d",
    "/lib/modprobe.d",
];

pub fn render_load(m: &Modules) -> String {
    let mut s = String::from(super::file::HEADER);
    for name in &m.load {
        s.push_str(name);
        s.push('\n');
    }
    s
}

pub fn render_modprobe(m: &Modules) -> String {
    let mut s = String::from(super::file::HEADER);
    for name in &m.blacklist {
        s.push_str(&format!("blacklist {name}\n"));
    }
    for (name, opts) in &m.options {
        s.push_str(&format!("options {name} {opts}\n"));
    }
    s
}

pub fn resources(m: &Modules) -> Vec<Box<dyn Resource>> {
    let mut out: Vec<Box<dyn Resource>> = Vec::new();
    if m.load.is_empty() {
        out.push(Box::new(FileResource::absent("modules", LOAD_FILE)));
    } else {
        out.push(Box::new(FileResource::new(
            "modules",
            LOAD_FILE,
            render_load(m),
        )));
    }
    if m.blacklist.is_empty() && m.options.is_empty() {
        out.push(Box::new(FileResource::absent("modules", MODPROBE_FILE)));
    } else {
        out.push(Box::new(FileResource::new(
            "modules",
            MODPROBE_FILE,
            render_modprobe(m),
        )));
    }
    for name in &m.load {
        out.push(Box::new(Load { name: name.clone() }));
    }
    for name in &m.blacklist {
        out.push(Box::new(Blacklist { name: name.clone() }));
    }
    for (name, opts) in &m.options {
        out.push(Box::new(Options {
            name: name.clone(),
            options: opts.clone(),
        }));
    }
    out
}

/// Modules listed for loading at boot in any modules-load.d file or /etc/modules: name → file.
fn configured_loads(sys: &System) -> Result<Vec<(ModuleName, String)>> {
    let mut files = conffiles::dropins(sys, LOAD_DIRS, ".conf")?;
    files.push("/etc/modules".to_string());
    let mut out = Vec::new();
    for f in files {
        let Some(text) = sys.read_string(&f)? else {
            continue;
        };
        for (n, line) in conffiles::lines(&text, true) {
            if let Some(name) = line.split_whitespace().next() {
                out.push((ModuleName::new(name), format!("{f}:{n}")));
            }
        }
    }
    Ok(out)
}

/// Every modprobe.d directive line: (words, file:line).
fn modprobe_lines(sys: &System) -> Result<Vec<(Vec<String>, String)>> {
    let mut out = Vec::new();
    for f in conffiles::dropins(sys, MODPROBE_DIRS, ".conf")? {
        let Some(text) = sys.read_string(&f)? else {
            continue;
        };
        for (n, line) in conffiles::lines(&text, false) {
            out.push((
                line.split_whitespace().map(str::to_string).collect(),
                format!("{f}:{n}"),
            ));
        }
    }
    Ok(out)
}

/// Whether a module is loaded (or built in) in the running kernel.
fn loaded(sys: &System, name: &ModuleName) -> Result<bool> {
    let c = name.canonical();
    if let Some(mods) = sys.read_string("/proc/modules")? {
        use procfs_core::FromBufRead;
        let loaded = procfs_core::KernelModules::from_buf_read(mods.as_bytes())
            .map_err(|e| anyhow::anyhow!("/proc/modules: {e}"))?;
        if loaded.0.contains_key(c.as_str()) {
            return Ok(true);
        }
    }
    // A module built into the kernel has no /proc/modules line: /sys/module/NAME without
    // `initstate` (sysfs shows built-ins that have parameters or a version).
    if !sys.list_dir(&format!("/sys/module/{c}"))?.is_empty() {
        return Ok(true);
    }
    let release = nix::sys::utsname::uname()?
        .release()
        .to_string_lossy()
        .into_owned();
    if let Some(builtin) =
        sys.read_string(&format!("/usr/lib/modules/{release}/modules.builtin"))?
    {
        if builtin
            .lines()
            .any(|l| l.ends_with(".ko") && ModuleName::of_file(l).as_ref() == Some(name))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

pub struct Load {
    pub name: String,
}

impl Resource for Load {
    fn id(&self) -> String {
        format!("module:{}", self.name)
    }

    fn kind(&self) -> &'static str {
        "modules"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let name = ModuleName::new(&self.name);
        let configured = configured_loads(sys)?
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, at)| at);
        let live = if sys.is_live() {
            Some(loaded(sys, &name)?)
        } else {
            None
        };
        let actual =
            json!({"loadAtBoot": configured.is_some(), "configuredIn": configured, "loaded": live});
        let expected = json!({"loadAtBoot": true, "loaded": true});
        let mut problems = Vec::new();
        if configured.is_none() {
            problems.push("not listed in any modules-load.d file");
        }
        if live == Some(false) {
            problems.push("not loaded");
        }
        let note = if live.is_none() {
            "loaded state not checked on an offline root"
        } else {
            ""
        };
        Ok(Observation::judged(expected, actual, &problems, note))
    }

    fn plan(&self, sys: &System, obs: &Observation) -> Vec<Change> {
        if sys.is_live() && obs.actual["loaded"] == json!(false) {
            vec![Change::Run {
                argv: vec!["modprobe".into(), "--".into(), self.name.clone()],
            }]
        } else {
            Vec::new()
        }
    }
}

pub struct Blacklist {
    pub name: String,
}

impl Resource for Blacklist {
    fn id(&self) -> String {
        format!("module-blacklist:{}", self.name)
    }

    fn kind(&self) -> &'static str {
        "modules"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let name = ModuleName::new(&self.name);
        let at = modprobe_lines(sys)?
            .into_iter()
            .find(|(w, _)| w.len() >= 2 && w[0] == "blacklist" && ModuleName::new(&w[1]) == name)
            .map(|(_, at)| at);
        let live = if sys.is_live() {
            Some(loaded(sys, &name)?)
        } else {
            None
        };
        let actual = json!({"blacklisted": at.is_some(), "configuredIn": at, "loaded": live});
        let expected = json!({"blacklisted": true, "loaded": false});
        let (status, message) = if at.is_none() {
            (
                Status::Drift,
                "not blacklisted in any modprobe.d file".to_string(),
            )
        } else if live == Some(true) {
            (
                Status::PendingReboot,
                "blacklisted, but loaded now: not loaded after the next boot".to_string(),
            )
        } else if live.is_none() {
            (
                Status::Compliant,
                "loaded state not checked on an offline root".to_string(),
            )
        } else {
            (Status::Compliant, String::new())
        };
        Ok(Observation::new(status, expected, actual, message))
    }

    fn plan(&self, _sys: &System, _obs: &Observation) -> Vec<Change> {
        Vec::new() // the modprobe.d file resource writes it; unloading is left to a reboot
    }

    fn fixed_by(&self) -> Vec<String> {
        vec![format!("file:{MODPROBE_FILE}")]
    }
}

pub struct Options {
    pub name: String,
    pub options: String,
}

fn same_param(live: &str, want: &str) -> bool {
    let b = |s: &str| match s.to_ascii_lowercase().as_str() {
        "y" | "1" | "on" | "true" => Some(true),
        "n" | "0" | "off" | "false" => Some(false),
        _ => None,
    };
    live == want || (b(live).is_some() && b(live) == b(want))
}

impl Resource for Options {
    fn id(&self) -> String {
        format!("module-options:{}", self.name)
    }

    fn kind(&self) -> &'static str {
        "modules"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let name = ModuleName::new(&self.name);
        let c = name.canonical();
        // Effective options: every `options NAME …` line in order, later parameters win.
        let mut effective: Vec<(String, String)> = Vec::new();
        for (w, _) in modprobe_lines(sys)? {
            if w.len() >= 3 && w[0] == "options" && ModuleName::new(&w[1]) == name {
                for tok in &w[2..] {
                    let (k, v) = tok.split_once('=').unwrap_or((tok, ""));
                    effective.retain(|(ek, _)| ModuleName::new(ek) != ModuleName::new(k));
                    effective.push((k.to_string(), v.to_string()));
                }
            }
        }
        let want: Vec<(String, String)> = self
            .options
            .split_whitespace()
            .map(|t| {
                let (k, v) = t.split_once('=').unwrap_or((t, ""));
                (k.to_string(), v.to_string())
            })
            .collect();
        let mut problems = Vec::new();
        for (k, v) in &want {
            match effective
                .iter()
                .find(|(ek, _)| ModuleName::new(ek) == ModuleName::new(k))
            {
                Some((_, ev)) if ev == v => {}
                Some((_, ev)) => problems.push(format!("{k}={ev} configured")),
                None => problems.push(format!("{k} not configured")),
            }
        }
        let mut live = serde_json::Map::new();
        let mut stale = Vec::new();
        if sys.is_live() && loaded(sys, &name)? {
            for (k, v) in &want {
                if let Some(lv) = sys.read_string(&format!(
                    "/sys/module/{c}/parameters/{}",
                    ModuleName::new(k).canonical()
                ))? {
                    let lv = lv.trim().to_string();
                    if !same_param(&lv, v) {
                        stale.push(format!("{k}={lv}"));
                    }
                    live.insert(k.clone(), json!(lv));
                }
            }
        }
        let configured: serde_json::Map<String, serde_json::Value> = effective
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        let actual = json!({"configured": configured, "live": if sys.is_live() { json!(live) } else { json!(null) }});
        let (status, message) = if !problems.is_empty() {
            (Status::Drift, problems.join("; "))
        } else if !stale.is_empty() {
            (
                Status::PendingReboot,
                format!(
                    "module loaded with {}: the options apply when it is next loaded",
                    stale.join(" ")
                ),
            )
        } else {
            (Status::Compliant, String::new())
        };
        Ok(Observation::new(
            status,
            json!(self.options),
            actual,
            message,
        ))
    }

    fn plan(&self, _sys: &System, _obs: &Observation) -> Vec<Change> {
        Vec::new() // written by the modprobe.d file resource
    }

    fn fixed_by(&self) -> Vec<String> {
        vec![format!("file:{MODPROBE_FILE}")]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::temproot::TempRoot;

    #[test]
    fn load_is_a_modules_load_d_line_by_either_spelling() {
        let t = TempRoot::new();
        let r = Load {
            name: "br_netfilter".into(),
        };
        let (status, message) = t.check(&r);
        assert_eq!(
            (status, message.as_str()),
            (Status::Drift, "not listed in any modules-load.d file")
        );
        t.file(
            "/usr/lib/modules-load.d/k8s.conf",
            "# comment\nbr-netfilter\n",
        );
        assert_eq!(t.check(&r).0, Status::Compliant);
        t.file("/usr/lib/modules-load.d/k8s.conf", "overlay\n");
        assert_eq!(t.check(&r).0, Status::Drift);
        t.file("/etc/modules", "br_netfilter\n");
        assert_eq!(t.check(&r).0, Status::Compliant);
    }

    #[test]
    fn blacklist_is_a_modprobe_d_line() {
        let t = TempRoot::new();
        let r = Blacklist {
            name: "snd-pcsp".into(),
        };
        assert_eq!(t.check(&r).0, Status::Drift);
        t.file("/etc/modprobe.d/site.conf", "blacklist snd_pcsp\n");
        assert_eq!(t.check(&r).0, Status::Compliant);
        t.file("/etc/modprobe.d/site.conf", "install snd_pcsp /bin/false\n");
        assert_eq!(t.check(&r).0, Status::Drift);
    }

    #[test]
    fn options_are_the_effective_ones_later_lines_winning() {
        let t = TempRoot::new();
        let r = Options {
            name: "i915".into(),
            options: "enable_guc=3 max-vfs=7".into(),
        };
        let (status, message) = t.check(&r);
        assert_eq!(status, Status::Drift);
        assert!(message.contains("enable_guc not configured"), "{message}");
        t.file(
            "/etc/modprobe.d/a.conf",
            "options i915 enable-guc=3 max_vfs=7\n",
        );
        assert_eq!(t.check(&r).0, Status::Compliant);
        // A later file overrides one parameter.
        t.file("/etc/modprobe.d/b.conf", "options i915 enable_guc=0\n");
        let (status, message) = t.check(&r);
        assert_eq!(status, Status::Drift);
        assert!(message.contains("enable_guc=0 configured"), "{message}");
    }
}
