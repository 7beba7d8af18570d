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
pub const FILE: &str = "/etc/chrony/conf.d/50-guestprep.conf";
const CONF: &str = "/etc/chrony/chrony.conf";
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
    s
}

pub fn resources(c: &Chrony) -> Vec<Box<dyn Resource>> {
    vec![
        Box::new(FileResource::new("chrony", FILE, render(c))),
        Box::new(ConfDir),
    ]
}

pub struct ConfDir;

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
        Vec::new() // chrony.conf belongs to the package; guestprep does not edit it
    }
}
