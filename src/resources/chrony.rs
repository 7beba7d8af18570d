//! `[chrony]`: time sources and time serving, as a drop-in `/etc/chrony/conf.d/50-guestprep.conf`.
//!
//! Debian and Ubuntu's chrony.conf read `confdir /etc/chrony/conf.d`; the `chrony:confdir` item
//! checks that the installed chrony.conf still does, so the drop-in is really used. Restarting
//! chronyd after a change belongs to the units resource.

use anyhow::Result;
use serde_json::json;

use super::FileResource;
use super::conffiles;
use crate::engine::{Change, Observation, Resource, System};
use crate::policy::Chrony;
use crate::report::Status;

/// The unit that reads the file (restarted or reloaded after it changed).
pub const UNIT: &str = "chrony.service";
pub const FILE: &str = crate::paths::CHRONY_FILE;
pub const CONF: &str = "/etc/chrony/chrony.conf";
const CONFDIR: &str = "/etc/chrony/conf.d";

pub fn render(c: &Chrony) -> String {
    let mut s = String::from(super::file::HEADER);
    let opts = if c.source_options.is_empty() {
        String::new()
    } else {
        format!(" {}", c.source_options)
    };
    for h in &c.servers {
        s.push_str(&format!("server {h}{opts}\n"));
    }
    for h in &c.pools {
        s.push_str(&format!("pool {h}{opts}\n"));
    }
    for a in &c.allow {
        s.push_str(&format!("allow {a}\n"));
    }
    if let Some((threshold, limit)) = c.makestep {
        s.push_str(&format!("makestep {threshold} {limit}\n"));
    }
    if c.rtcsync {
        s.push_str("rtcsync\n");
    }
    for d in &c.directives {
        s.push_str(d);
        s.push('\n');
    }
    s
}

pub fn resources(c: &Chrony) -> Vec<Box<dyn Resource>> {
    let mut out: Vec<Box<dyn Resource>> =
        vec![Box::new(FileResource::new("chrony", FILE, render(c)))];
    if c.exclusive {
        out.push(Box::new(Exclusive));
    }
    out.push(Box::new(ConfDir {
        exclusive: c.exclusive,
    }));
    out
}

/// Where dpkg keeps the package's chrony.conf once guestprep's is in place.
pub const DISTRIB: &str = "/etc/chrony/chrony.conf.distrib";
const DIVERSIONS: &str = "/var/lib/dpkg/diversions";
/// Directives that add time sources: left out of chrony.conf when the policy's are the only ones.
const SOURCE_DIRECTIVES: &[&str] = &["pool", "server", "peer", "sourcedir", "refclock"];

/// chrony.conf with only the policy's sources: the package's file, its source lines commented
/// out (so its other settings, driftfile, keyfile, leapseclist…, stay as Debian ships them), and
/// `confdir` kept so the drop-in is read.
pub fn exclusive_conf(package_conf: &str) -> String {
    let mut out = String::from(super::file::HEADER);
    out.push_str(&format!(
        "# [chrony] exclusive: the package's {CONF} (kept by dpkg as {DISTRIB}) without its time sources;\n# the policy's are in {FILE}.\n"
    ));
    let mut confdir = false;
    for line in package_conf.lines() {
        let word = line
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        if SOURCE_DIRECTIVES.contains(&word.as_str()) {
            out.push_str(&format!("#guestprep# {line}\n"));
        } else {
            confdir |= word == "confdir";
            out.push_str(line);
            out.push('\n');
        }
    }
    if !confdir {
        out.push_str(&format!("confdir {CONFDIR}\n"));
    }
    out
}

/// Whether dpkg's diversions divert chrony.conf to [`DISTRIB`].
fn diverted(sys: &System) -> Result<bool> {
    let text = sys.read_string(DIVERSIONS)?.unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    Ok(lines
        .chunks(3)
        .any(|c| c.len() == 3 && c[0] == CONF && c[1] == DISTRIB))
}

/// `chrony:exclusive`: chronyd uses only the policy's sources. Debian's chrony.conf (a conffile)
/// carries `pool 2.debian.pool.ntp.org` and reads DHCP's servers (`sourcedir`), and no drop-in can
/// take a source away: chrony.conf is diverted with `dpkg-divert --local --rename` (the package's
/// file, and its upgrades, go to chrony.conf.distrib) and guestprep writes chrony.conf as that file
/// without its source lines.
pub struct Exclusive;

impl Resource for Exclusive {
    fn id(&self) -> String {
        "chrony:exclusive".to_string()
    }

    fn kind(&self) -> &'static str {
        "chrony"
    }

    fn managed_paths(&self) -> Vec<String> {
        vec![CONF.to_string()]
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let expected = json!({"diverted": DISTRIB, "sources": "the policy's only"});
        let is_diverted = diverted(sys)?;
        let base = if is_diverted {
            sys.read_string(DISTRIB)?
        } else {
            sys.read_string(CONF)?
        };
        let Some(base) = base else {
            return Ok(Observation::new(
                Status::Skipped,
                expected,
                json!(null),
                format!("{CONF} not present (chrony not installed)"),
            ));
        };
        let want = exclusive_conf(&base);
        let current = sys.read_string(CONF)?.unwrap_or_default();
        let others: Vec<String> = conffiles::lines(&current, false)
            .filter(|(_, l)| {
                let w = l
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_ascii_lowercase();
                SOURCE_DIRECTIVES.contains(&w.as_str())
            })
            .map(|(n, l)| format!("{CONF}:{n}: {l}"))
            .collect();
        let actual = json!({"diverted": is_diverted, "otherSources": others});
        let mut problems = Vec::new();
        if !is_diverted {
            problems.push(not_diverted(sys, &current)?);
        }
        if current != want {
            if others.is_empty() {
                problems.push(format!(
                    "{CONF} is not the package's file without its sources"
                ));
            } else {
                problems.push(format!("chronyd also uses {}", others.join("; ")));
            }
        }
        let mut obs = Observation::judged(expected, actual, &problems, "");
        if obs.status == Status::Drift {
            if let Some(why) = sys.cannot_change()
                && !is_diverted
            {
                obs.message = format!("{}; {why}", obs.message);
            }
            obs.data = json!({"divert": !is_diverted, "content": want});
            obs.current = Some(current.into_bytes());
        }
        Ok(obs)
    }

    fn plan(&self, sys: &System, obs: &Observation) -> Vec<Change> {
        if obs.status != Status::Drift {
            return Vec::new();
        }
        let mut plan = Vec::new();
        if obs.data["divert"] == json!(true) {
            if sys.cannot_change().is_some() {
                return Vec::new();
            }
            plan.push(Change::Run {
                argv: [
                    "dpkg-divert",
                    "--local",
                    "--rename",
                    "--divert",
                    DISTRIB,
                    "--add",
                    CONF,
                ]
                .map(String::from)
                .to_vec(),
            });
        }
        plan.push(Change::Write {
            path: CONF.to_string(),
            content: obs.data["content"]
                .as_str()
                .unwrap_or_default()
                .as_bytes()
                .to_vec(),
            mode: Some(0o644),
            old: obs.current.clone(),
        });
        plan
    }
}

/// What an undiverted chrony.conf is: the package's own file (dpkg's checksum of it), or one
/// written here (a script's, an admin's), which dpkg still owns.
fn not_diverted(sys: &System, current: &str) -> Result<String> {
    use md5::Digest;
    let status = sys
        .read_string(crate::packages::dpkg::STATUS)?
        .unwrap_or_default();
    Ok(match crate::packages::dpkg::conffile(&status, CONF) {
        Some((pkg, sum)) if hex::encode(md5::Md5::digest(current.as_bytes())) == sum => {
            format!("{CONF} is the {pkg} package's (not diverted)")
        }
        Some((pkg, _)) => format!(
            "{CONF} is not diverted: written here, not the {pkg} package's file (dpkg still owns it)"
        ),
        None => format!("{CONF} is not diverted"),
    })
}

/// `chrony:confdir`: chrony.conf reads the drop-in directory. With `exclusive`, chrony.conf is
/// guestprep's (`chrony:exclusive` writes it, with `confdir`).
pub struct ConfDir {
    pub exclusive: bool,
}

impl Resource for ConfDir {
    fn id(&self) -> String {
        "chrony:confdir".to_string()
    }

    fn kind(&self) -> &'static str {
        "chrony"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let expected = json!(format!("confdir {CONFDIR}"));
        let Some(conf) = sys.read_string(CONF)? else {
            return Ok(Observation::new(
                Status::Skipped,
                expected,
                json!(null),
                format!("{CONF} not present (chrony not installed): the drop-in is ready for it"),
            ));
        };
        let found = conffiles::lines(&conf, false).find(|(_, l)| {
            let mut w = l.split_whitespace();
            w.next() == Some("confdir") && w.any(|d| d.trim_end_matches('/') == CONFDIR)
        });
        match found {
            Some((n, _)) => Ok(Observation::new(
                Status::Compliant,
                expected,
                json!(format!("{CONF}:{n}")),
                "",
            )),
            None if self.exclusive => Ok(Observation::new(
                Status::Drift,
                expected,
                json!(null),
                format!(
                    "{CONF} does not read {CONFDIR}, so chronyd ignores {FILE}: chrony:exclusive writes \
                     {CONF} with `confdir {CONFDIR}`"
                ),
            )),
            None => Ok(Observation::new(
                Status::Drift,
                expected,
                json!(null),
                format!(
                    "{CONF} does not read {CONFDIR}, so chronyd ignores {FILE}: add the line `confdir {CONFDIR}` \
                     to {CONF} (it belongs to the chrony package; guestprep does not edit it)"
                ),
            )),
        }
    }

    fn plan(&self, _sys: &System, _obs: &Observation) -> Vec<Change> {
        Vec::new() // chrony.conf is the package's, or chrony:exclusive's
    }

    fn fixed_by(&self) -> Vec<String> {
        vec!["chrony:exclusive".to_string()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::temproot::TempRoot;

    /// Debian's chrony.conf, shortened.
    const PACKAGE: &str = "pool 2.debian.pool.ntp.org iburst\nsourcedir /run/chrony-dhcp\n\
                           driftfile /var/lib/chrony/chrony.drift\nconfdir /etc/chrony/conf.d\n";

    #[test]
    fn confdir_is_read_or_the_drop_in_is_ignored() {
        let t = TempRoot::new();
        let r = ConfDir { exclusive: false };
        assert_eq!(t.check(&r).0, Status::Skipped);
        t.file(CONF, PACKAGE);
        assert_eq!(t.check(&r).0, Status::Compliant);
        t.file(
            CONF,
            "pool 2.debian.pool.ntp.org iburst\nconfdir /etc/chrony/other/\n",
        );
        let (status, message) = t.check(&r);
        assert_eq!(status, Status::Drift);
        assert!(
            message.contains("does not read /etc/chrony/conf.d"),
            "{message}"
        );
        t.file(CONF, "confdir /etc/chrony/conf.d/\n");
        assert_eq!(t.check(&r).0, Status::Compliant);
    }

    #[test]
    fn exclusive_means_diverted_and_without_the_package_sources() {
        let t = TempRoot::new();
        assert_eq!(t.check(&Exclusive).0, Status::Skipped);
        t.file(CONF, PACKAGE);
        let (status, message) = t.check(&Exclusive);
        assert_eq!(status, Status::Drift);
        assert!(message.contains("is not diverted"), "{message}");
        assert!(message.contains("chronyd also uses"), "{message}");
        t.file(DIVERSIONS, &format!("{CONF}\n{DISTRIB}\n:\n"))
            .file(DISTRIB, PACKAGE)
            .file(CONF, &exclusive_conf(PACKAGE));
        assert_eq!(t.check(&Exclusive).0, Status::Compliant);
        t.file(
            CONF,
            &format!("{}server 192.0.2.1\n", exclusive_conf(PACKAGE)),
        );
        let (status, message) = t.check(&Exclusive);
        assert_eq!(status, Status::Drift);
        assert!(message.contains("server 192.0.2.1"), "{message}");
    }
}
