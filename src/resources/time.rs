//! `[time]`: the time zone. `time:timezone` checks what glibc and systemd read: `/etc/localtime`
//! links to `/usr/share/zoneinfo/ZONE` (and `/etc/timezone`, where the image still has one, names
//! it), and that tzdata has the zone. Live, apply asks systemd-timedated over D-Bus
//! (`SetTimezone`), which updates the link and the running system; offline it writes the link as
//! timedated does (`../usr/share/zoneinfo/ZONE`).

use anyhow::Result;
use serde_json::json;

use crate::engine::{Change, Observation, Resource, System};
use crate::policy::Time;
use crate::report::Status;
use crate::root::Node;

const LOCALTIME: &str = "/etc/localtime";
const TIMEZONE: &str = "/etc/timezone";
const ZONEINFO: &str = "/usr/share/zoneinfo";

pub fn resources(t: &Time) -> Vec<Box<dyn Resource>> {
    vec![Box::new(Timezone {
        zone: t.timezone.clone(),
    })]
}

/// The zone /etc/localtime names: its link target after `zoneinfo/`.
fn linked_zone(sys: &System) -> Result<Option<String>> {
    Ok(match sys.lstat(LOCALTIME)? {
        Node::Symlink(target) => {
            let t = target.to_string_lossy().into_owned();
            t.split_once("zoneinfo/").map(|(_, z)| z.to_string())
        }
        _ => None,
    })
}

pub struct Timezone {
    pub zone: String,
}

impl Resource for Timezone {
    fn id(&self) -> String {
        "time:timezone".to_string()
    }

    fn kind(&self) -> &'static str {
        "time"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let expected = json!({"timezone": self.zone});
        let linked = linked_zone(sys)?;
        let file = sys.read_string(TIMEZONE)?.map(|s| s.trim().to_string());
        let actual = json!({"localtime": linked, "timezoneFile": file});
        if !sys.exists(&format!("{ZONEINFO}/{}", self.zone)) {
            return Ok(Observation::new(
                Status::Error,
                expected,
                actual,
                format!(
                    "{ZONEINFO}/{} does not exist: not a zone tzdata knows (is tzdata installed?)",
                    self.zone
                ),
            ));
        }
        let mut problems = Vec::new();
        match &linked {
            Some(z) if *z == self.zone => {}
            Some(z) => problems.push(format!("{LOCALTIME} is {z}")),
            None => problems.push(format!("{LOCALTIME} is not a link into {ZONEINFO}")),
        }
        if let Some(f) = &file
            && *f != self.zone
        {
            problems.push(format!("{TIMEZONE} says {f}"));
        }
        Ok(Observation::judged(expected, actual, &problems, ""))
    }

    fn plan(&self, sys: &System, obs: &Observation) -> Vec<Change> {
        if obs.status != Status::Drift {
            return Vec::new();
        }
        let zone = &self.zone;
        let mut plan = Vec::new();
        if sys.is_live() {
            // timedated updates the link and tells the running system; it does not write
            // /etc/timezone, which Debian's older tools still read.
            plan.push(Change::Timezone { zone: zone.clone() });
        } else {
            // A copied zone file (not a link) is replaced by the link, as timedated does.
            if let Ok(Node::File { .. }) = sys.lstat(LOCALTIME) {
                plan.push(Change::Remove {
                    path: LOCALTIME.to_string(),
                    old: sys.read(LOCALTIME).ok().flatten().unwrap_or_default(),
                });
            }
            plan.push(Change::Symlink {
                path: LOCALTIME.to_string(),
                target: format!("..{ZONEINFO}/{zone}"),
            });
        }
        if let Ok(Node::File { .. }) = sys.lstat(TIMEZONE) {
            let old = sys.read(TIMEZONE).ok().flatten();
            if old
                .as_deref()
                .map(|o| String::from_utf8_lossy(o).trim().to_string())
                != Some(zone.clone())
            {
                plan.push(Change::Write {
                    path: TIMEZONE.to_string(),
                    content: format!("{zone}\n").into_bytes(),
                    mode: None,
                    old,
                });
            }
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::temproot::TempRoot;

    #[test]
    fn the_zone_is_the_localtime_link_and_the_timezone_file() {
        let t = TempRoot::new();
        t.file("/usr/share/zoneinfo/Europe/Berlin", "TZif")
            .file("/usr/share/zoneinfo/UTC", "TZif");
        let r = Timezone {
            zone: "Europe/Berlin".into(),
        };
        let (status, message) = t.check(&r);
        assert_eq!(status, Status::Drift);
        assert_eq!(
            message,
            "/etc/localtime is not a link into /usr/share/zoneinfo"
        );
        t.link("/etc/localtime", "../usr/share/zoneinfo/UTC");
        assert_eq!(t.check(&r), (Status::Drift, "/etc/localtime is UTC".into()));
        t.link("/etc/localtime", "/usr/share/zoneinfo/Europe/Berlin");
        assert_eq!(t.check(&r).0, Status::Compliant);
        t.file("/etc/timezone", "Etc/UTC\n");
        assert_eq!(
            t.check(&r),
            (Status::Drift, "/etc/timezone says Etc/UTC".into())
        );
        t.file("/etc/timezone", "Europe/Berlin\n");
        assert_eq!(t.check(&r).0, Status::Compliant);
        // A zone tzdata does not have is an error, not drift.
        let unknown = Timezone {
            zone: "Mars/Olympus".into(),
        };
        assert_eq!(t.check(&unknown).0, Status::Error);
    }
}
