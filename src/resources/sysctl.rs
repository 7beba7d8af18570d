//! `[sysctl]`: kernel parameters, in `/etc/sysctl.d/90-guestprep.conf` and, on a live system, in
//! `/proc/sys`.
//!
//! Owns rendering the file, computing the *effective* configured value of each key the way
//! systemd-sysctl does (so a later file overriding ours is reported with its name), reading the
//! live value, and setting it when it differs.

use std::collections::BTreeMap;
use std::rc::Rc;

use anyhow::Result;
use serde_json::json;

use super::FileResource;
use super::conffiles;
use crate::engine::{Change, Observation, Resource, System};

pub const FILE: &str = crate::paths::SYSCTL_FILE;

/// systemd-sysctl's directories, highest precedence first.
const DIRS: &[&str] = &[
    "/etc/sysctl.d",
    "/run/sysctl.d",
    "/usr/local/lib/sysctl.d",
    "/usr/lib/sysctl.d",
    "/lib/sysctl.d",
];

pub fn render(map: &BTreeMap<String, String>) -> String {
    let mut s = String::from(super::file::HEADER);
    for (k, v) in map {
        s.push_str(&format!("{k} = {v}\n"));
    }
    s
}

pub fn resources(map: &BTreeMap<String, String>) -> Vec<Box<dyn Resource>> {
    let mut out: Vec<Box<dyn Resource>> =
        vec![Box::new(FileResource::new("sysctl", FILE, render(map)))];
    for (k, v) in map {
        out.push(Box::new(SysctlKey {
            name: k.clone(),
            value: v.clone(),
        }));
    }
    out
}

/// The /proc/sys path of a sysctl name (`net.ipv4.ip_forward` or `net/ipv4/ip_forward`).
pub fn proc_path(name: &str) -> String {
    let slash_first = match (name.find('/'), name.find('.')) {
        (Some(s), Some(d)) => s < d,
        (Some(_), None) => true,
        _ => false,
    };
    let rel = if slash_first {
        name.to_string()
    } else {
        name.replace('.', "/")
    };
    format!("/proc/sys/{rel}")
}

fn normalize(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The effective configured value of every key: (value, file:line), last assignment wins.
/// Parsed once per pass of checks and shared by every key's item ([`System::derived`]).
pub fn effective(sys: &System) -> Result<Rc<BTreeMap<String, (String, String)>>> {
    sys.derived("sysctl.d effective settings", parse_effective)
}

fn parse_effective(sys: &System) -> Result<BTreeMap<String, (String, String)>> {
    let mut files = conffiles::dropins(sys, DIRS, ".conf")?;
    // procps reads /etc/sysctl.conf last; Debian links it in as 99-sysctl.conf.
    let conf = sys.host_path("/etc/sysctl.conf")?;
    if conf.exists()
        && !files
            .iter()
            .any(|f| sys.host_path(f).ok().as_ref() == Some(&conf))
    {
        files.push("/etc/sysctl.conf".to_string());
    }
    let mut out = BTreeMap::new();
    for f in files {
        let Some(text) = sys.read_string(&f)? else {
            continue;
        };
        for (n, line) in conffiles::lines(&text, true) {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let k = k.trim().trim_start_matches('-');
            if k.contains('*') {
                continue;
            }
            out.insert(proc_path(k), (normalize(v), format!("{f}:{n}")));
        }
    }
    Ok(out)
}

pub struct SysctlKey {
    pub name: String,
    pub value: String,
}

impl Resource for SysctlKey {
    fn id(&self) -> String {
        format!("sysctl:{}", self.name)
    }

    fn kind(&self) -> &'static str {
        "sysctl"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let path = proc_path(&self.name);
        let eff = effective(sys)?;
        let configured = eff.get(&path);
        let live = if sys.is_live() {
            sys.read_string(&path)?.map(|s| normalize(&s))
        } else {
            None
        };
        let actual = json!({
            "configured": configured.map(|c| &c.0),
            "configuredIn": configured.map(|c| &c.1),
            "live": live,
        });
        let expected = json!(self.value);
        let mut problems = Vec::new();
        match configured {
            None => problems.push("not configured in any sysctl.d file".to_string()),
            Some((v, at)) if *v != self.value => problems.push(format!("configured {v} at {at}")),
            Some((_, at)) if !at.starts_with(FILE) => {
                problems.push(format!("overridden at {at} (same value)"))
            }
            _ => {}
        }
        // Same value set later elsewhere is harmless: only a different value is drift.
        let overridden_same = problems.len() == 1 && problems[0].ends_with("(same value)");
        if overridden_same {
            problems.clear();
        }
        let mut note = String::new();
        if sys.is_live() {
            match &live {
                None => problems.push(format!(
                    "{path} does not exist (is the module providing it loaded?)"
                )),
                Some(l) if *l != self.value => {
                    problems.push(format!("live value {l}, not applied"))
                }
                _ => {}
            }
        } else {
            note = "live value not checked on an offline root".to_string();
        }
        Ok(Observation::judged(expected, actual, &problems, note))
    }

    fn plan(&self, sys: &System, obs: &Observation) -> Vec<Change> {
        // The configured value is the file resource's job; here only the live value.
        let live = obs.actual["live"].as_str();
        if sys.is_live() && live.is_some() && live != Some(self.value.as_str()) {
            vec![Change::WriteProc {
                path: proc_path(&self.name),
                value: self.value.clone(),
            }]
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_paths() {
        assert_eq!(
            proc_path("net.ipv4.ip_forward"),
            "/proc/sys/net/ipv4/ip_forward"
        );
        assert_eq!(
            proc_path("net/ipv4/conf/eth0.100/rp_filter"),
            "/proc/sys/net/ipv4/conf/eth0.100/rp_filter"
        );
    }
}
