//! `[time]`: the time zone. `time:timezone` checks what glibc and systemd read: `/etc/localtime`
//! links to `/usr/share/zoneinfo/ZONE` (and `/etc/timezone`, where the image still has one, names
//! it), and that tzdata has the zone. Live, apply asks systemd-timedated over D-Bus
//! (`SetTimezone`), which updates the link and the running system; offline it writes the link as
//! timedated does (`../usr/share/zoneinfo/ZONE`).

use anyhow::{Result, bail};
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

/// Carries out [`Change::Timezone`].
pub fn set(sys: &System, zone: &str) -> Result<Vec<String>> {
    if sys.is_live() {
        crate::systemd::dbus::set_timezone(zone)?;
        // Debian's older tools read /etc/timezone too; timedated does not write it.
        if sys.read_string(TIMEZONE)?.is_some_and(|f| f.trim() != zone) {
            crate::fsutil::write_atomic(&sys.root, TIMEZONE, format!("{zone}\n").as_bytes(), None)?;
        }
        return Ok(vec![format!(
            "systemd-timedated set the time zone to {zone}"
        )]);
    }
    if !sys.exists(&format!("{ZONEINFO}/{zone}")) {
        bail!("{ZONEINFO}/{zone} does not exist in the {}", sys.describe());
    }
    // A copied zone file (not a link) is replaced by the link, as timedated does.
    if matches!(sys.lstat(LOCALTIME)?, Node::File { .. }) {
        crate::fsutil::remove(&sys.root, LOCALTIME)?;
    }
    crate::fsutil::symlink_atomic(&sys.root, LOCALTIME, &format!("..{ZONEINFO}/{zone}"))?;
    if matches!(sys.lstat(TIMEZONE)?, Node::File { .. }) {
        crate::fsutil::write_atomic(&sys.root, TIMEZONE, format!("{zone}\n").as_bytes(), None)?;
    }
    Ok(vec![format!("{LOCALTIME} -> ..{ZONEINFO}/{zone}")])
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

    fn plan(&self, _sys: &System, obs: &Observation) -> Vec<Change> {
        if obs.status != Status::Drift {
            return Vec::new();
        }
        vec![Change::Timezone {
            zone: self.zone.clone(),
        }]
    }
}
