//! `[needrestart]`: `/etc/needrestart/conf.d/90-guestprep.conf` (needrestart's own Perl, an
//! `override_rc` entry of 0 per service: listed, never restarted by needrestart), and
//! `needrestart:SERVICE`, which evaluates `override_rc` as needrestart does (its main file, then
//! `conf.d/*.conf` sorted; the keys sorted as strings, the first matching regex deciding) and
//! says which entry decides.
//!
//! guestprep's own apt runs keep needrestart out regardless (`NEEDRESTART_SUSPEND`, see
//! `resources/packages`); this is for everyone else's: unattended-upgrades, an admin's apt.

use anyhow::Result;
use serde_json::json;

use super::FileResource;
use super::conffiles;
use crate::engine::{Change, Observation, Resource, System};
use crate::policy::Needrestart;
use crate::report::Status;

pub const FILE: &str = "/etc/needrestart/conf.d/90-guestprep.conf";
const CONF_D: &str = "/etc/needrestart/conf.d";
const MAIN: &str = "/etc/needrestart/needrestart.conf";

/// The Perl regex needrestart matches a unit name with: the whole name, dots literal.
fn pattern(service: &str) -> String {
    let mut p = String::from("^");
    for c in service.chars() {
        if !c.is_ascii_alphanumeric() && c != '_' && c != '-' {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('$');
    p
}

pub fn render(n: &Needrestart) -> String {
    let mut s = String::from(
        "# Written by guestprep ([needrestart] never_restart): needrestart lists these services\n\
         # after a library update and leaves their restart to the node's own orchestration.\n",
    );
    for svc in &n.never_restart {
        s.push_str(&format!(
            "$nrconf{{override_rc}}{{qr({})}} = 0;\n",
            pattern(svc)
        ));
    }
    s
}

pub fn resources(n: &Needrestart) -> Vec<Box<dyn Resource>> {
    let mut out: Vec<Box<dyn Resource>> =
        vec![Box::new(FileResource::new("needrestart", FILE, render(n)))];
    for svc in &n.never_restart {
        out.push(Box::new(NeverRestart {
            service: svc.clone(),
        }));
    }
    out
}

/// `needrestart:SERVICE`: the last `override_rc` entry of any conf.d file that matches the
/// service says 0.
pub struct NeverRestart {
    pub service: String,
}

/// needrestart's `override_rc` as it ends up after its main file and every conf.d file (sorted)
/// are evaluated: regex → (value, file:line of the assignment that set it). A whole-hash
/// assignment (`$nrconf{override_rc} = { qr(RE) => N, … };`, the main file's defaults) replaces
/// it; `$nrconf{override_rc}{qr(RE)} = N;` sets one key.
fn override_rc(sys: &System) -> Result<std::collections::BTreeMap<String, (String, String)>> {
    let mut files = vec![MAIN.to_string()];
    files.extend(conffiles::dropins(sys, &[CONF_D], ".conf")?);
    let mut map = std::collections::BTreeMap::new();
    for f in files {
        let Some(text) = sys.read_string(&f)? else {
            continue;
        };
        let mut in_hash = false;
        for (n, line) in text.lines().enumerate() {
            let l = line.split('#').next().unwrap_or("").trim();
            let at = format!("{f}:{}", n + 1);
            if l.starts_with("$nrconf{override_rc}") && l.contains('=') && l.ends_with('{') {
                map.clear();
                in_hash = true;
                continue;
            }
            if in_hash {
                if l.starts_with('}') {
                    in_hash = false;
                } else if let Some(rest) = l.strip_prefix("qr(")
                    && let Some((re, v)) = rest.split_once(")")
                {
                    let v = v
                        .trim()
                        .trim_start_matches("=>")
                        .trim()
                        .trim_end_matches(',')
                        .trim();
                    map.insert(re.to_string(), (v.to_string(), at));
                }
                continue;
            }
            let Some(rest) = l.strip_prefix("$nrconf{override_rc}{qr(") else {
                continue;
            };
            let Some((re, value)) = rest.split_once(")}") else {
                continue;
            };
            let value = value
                .trim()
                .trim_start_matches('=')
                .trim()
                .trim_end_matches(';')
                .trim();
            map.insert(re.to_string(), (value.to_string(), at));
        }
    }
    Ok(map)
}

/// The entry needrestart uses for a service: it sorts the hash's keys as strings (a `qr()` is
/// `(?^:RE)` as a string) and takes the first regex that matches.
fn decides<'a>(
    map: &'a std::collections::BTreeMap<String, (String, String)>,
    service: &str,
) -> Option<(&'a String, &'a (String, String))> {
    let mut keys: Vec<(String, &String)> =
        map.keys().map(|re| (format!("(?^:{re})"), re)).collect();
    keys.sort();
    keys.into_iter()
        .map(|(_, re)| re)
        .find(|re| matches(re, service))
        .and_then(|re| map.get_key_value(re))
}

/// Whether needrestart's regex (as guestprep writes them: `^name$` with escapes) matches.
fn matches(re: &str, service: &str) -> bool {
    let Ok(r) = regex::Regex::new(re) else {
        return false;
    };
    r.is_match(service)
}

impl Resource for NeverRestart {
    fn id(&self) -> String {
        format!("needrestart:{}", self.service)
    }

    fn kind(&self) -> &'static str {
        "needrestart"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let expected = json!({"overrideRc": "0"});
        if !sys.exists(MAIN) {
            return Ok(Observation::new(
                Status::Skipped,
                expected,
                json!({"installed": false}),
                format!(
                    "needrestart is not installed ({MAIN}): nothing restarts {} after an upgrade",
                    self.service
                ),
            ));
        }
        let map = override_rc(sys)?;
        let last =
            decides(&map, &self.service).map(|(re, (v, at))| (at.clone(), re.clone(), v.clone()));
        let actual = json!({
            "overrideRc": last.as_ref().map(|l| &l.2),
            "regex": last.as_ref().map(|l| &l.1),
            "at": last.as_ref().map(|l| &l.0),
        });
        Ok(match last {
            Some((at, _, v)) if v == "0" => Observation::new(
                Status::Compliant,
                expected,
                actual,
                format!("never restarted by needrestart ({at})"),
            ),
            Some((at, re, v)) => Observation::new(
                Status::Drift,
                expected,
                actual,
                format!(
                    "needrestart takes `qr({re})` = {v} from {at} first (the first regex in its sorted keys that matches): it may restart it after an upgrade"
                ),
            ),
            None => Observation::new(
                Status::Drift,
                expected,
                actual,
                format!(
                    "no override_rc entry of {CONF_D} matches it: needrestart restarts it after a library update"
                ),
            ),
        })
    }

    fn plan(&self, _sys: &System, _obs: &Observation) -> Vec<Change> {
        // The file item writes the entry; a later file overriding it is the admin's to remove.
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_needrestarts_perl_and_match_only_the_service() {
        let n = Needrestart {
            never_restart: vec!["containerd.service".into(), "getty@tty1.service".into()],
        };
        let r = render(&n);
        assert!(
            r.contains("$nrconf{override_rc}{qr(^containerd\\.service$)} = 0;\n"),
            "{r}"
        );
        assert!(r.contains("qr(^getty\\@tty1\\.service$)"), "{r}");
        assert!(matches(
            &pattern("containerd.service"),
            "containerd.service"
        ));
        assert!(!matches(
            &pattern("containerd.service"),
            "containerdXservice"
        ));
        assert!(!matches(
            &pattern("containerd.service"),
            "my-containerd.service"
        ));
    }
}
