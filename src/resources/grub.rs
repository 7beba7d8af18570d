//! `[grub]`: kernel command-line arguments through `/etc/default/grub.d/99-guestprep.cfg`.
//!
//! Owns three items: the drop-in file; whether the generated `/boot/grub/grub.cfg` carries the
//! arguments (if not, `update-grub` runs: so it runs when the drop-in changed or a run was
//! interrupted before it, never otherwise); and whether the running kernel was booted with them
//! (`/proc/cmdline`; configured but not running is `pending-reboot`).
//!
//! `update-grub` runs on a live root, and on an offline one with `apply --chroot` (inside the
//! image, with /proc, /sys and /dev mounted for it: [`crate::inroot`]). An offline root without
//! `--chroot` is never reported compliant while grub.cfg lacks an argument: `pending-reboot`
//! (exit 3), the item naming the step that makes it true.

use anyhow::Result;
use serde_json::json;

use super::FileResource;
use crate::engine::{Change, Observation, Resource, System};
use crate::policy::{Entries, Grub};
use crate::report::Status;

pub const FILE: &str = crate::paths::GRUB_FILE;
pub const GRUB_CFG: &str = "/boot/grub/grub.cfg";
const UPDATE_GRUB: &str = "/usr/sbin/update-grub";

pub fn render(g: &Grub) -> String {
    let (var, which) = match g.entries {
        Entries::All => (g.entries.variable(), "every entry, recovery mode too"),
        Entries::Default => (
            g.entries.variable(),
            "the normal entries, not recovery mode",
        ),
    };
    format!(
        "{}# Sourced by update-grub after /etc/default/grub: appends to the arguments of {which}.\n{var}=\"${{{var}:+${var} }}{}\"\n",
        super::file::HEADER,
        g.cmdline.join(" ")
    )
}

pub fn resources(g: &Grub) -> Vec<Box<dyn Resource>> {
    vec![
        Box::new(FileResource::new("grub", FILE, render(g))),
        Box::new(GrubCfg {
            args: g.cmdline.clone(),
            dropin: render(g),
        }),
        Box::new(Cmdline {
            args: g.cmdline.clone(),
        }),
    ]
}

/// The arguments of the first `linux` line of grub.cfg (the default entry).
fn first_linux_args(cfg: &str) -> Option<Vec<String>> {
    cfg.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        match w.next() {
            Some("linux") | Some("linuxefi") => Some(w.skip(1).map(str::to_string).collect()),
            _ => None,
        }
    })
}

fn missing<'a>(want: &'a [String], have: &[String]) -> Vec<&'a String> {
    want.iter().filter(|a| !have.contains(a)).collect()
}

pub struct GrubCfg {
    pub args: Vec<String>,
    /// What [`FILE`] holds when it is as the policy says.
    pub dropin: String,
}

impl Resource for GrubCfg {
    fn id(&self) -> String {
        "grub:grub.cfg".to_string()
    }

    fn kind(&self) -> &'static str {
        "grub"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let expected = json!(self.args);
        let Some(cfg) = sys.read_string(GRUB_CFG)? else {
            return Ok(Observation::new(
                Status::Skipped,
                expected,
                json!(null),
                format!("no {GRUB_CFG}: GRUB is not installed here"),
            ));
        };
        let Some(have) = first_linux_args(&cfg) else {
            return Ok(Observation::new(
                Status::Error,
                expected,
                json!(null),
                format!("no `linux` line in {GRUB_CFG}"),
            ));
        };
        let miss = missing(&self.args, &have);
        let actual = json!({"defaultEntryArgs": have});
        if miss.is_empty() {
            return Ok(Observation::new(Status::Compliant, expected, actual, ""));
        }
        let what = format!(
            "{GRUB_CFG} lacks {}",
            miss.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        );
        if sys.mode().runs_programs() {
            let how = if sys.is_live() {
                "update-grub needed"
            } else {
                "update-grub needed (apply --chroot runs it inside the image)"
            };
            return Ok(Observation::new(
                Status::Drift,
                expected,
                actual,
                format!("{what}: {how}"),
            ));
        }
        Ok(offline_verdict(
            sys,
            expected,
            actual,
            &what,
            sys.read_string(FILE)?.as_deref() == Some(self.dropin.as_str()),
        ))
    }

    fn plan(&self, sys: &System, obs: &Observation) -> Vec<Change> {
        if sys.mode().runs_programs() && obs.status == Status::Drift {
            vec![Change::RunInRoot {
                argv: vec![UPDATE_GRUB.into()],
            }]
        } else {
            Vec::new()
        }
    }
}

/// grub.cfg lacks the arguments on an offline root where update-grub cannot run: never a
/// success. With the drop-in in place the arguments are configured and pending (exit 3): the
/// item says which step makes them true. Without it nothing would add them: drift.
fn offline_verdict(
    sys: &System,
    expected: serde_json::Value,
    actual: serde_json::Value,
    what: &str,
    dropin_in_place: bool,
) -> Observation {
    let dir = sys.dir().display();
    if !dropin_in_place {
        return Observation::new(
            Status::Drift,
            expected,
            actual,
            format!("{what}, and {FILE} is not as the policy says"),
        );
    }
    let mut obs = Observation::new(
        Status::PendingReboot,
        expected,
        actual,
        format!(
            "{what}: {FILE} has them, but update-grub does not run on an {} without --chroot; \
             the image boots without them until it runs",
            sys.describe()
        ),
    );
    obs.remediation = Some(format!(
        "run update-grub in the image: `guestprep apply --root {dir} --chroot` now, or \
         `guestprep apply` at its first boot (the arguments then take effect at the next boot)"
    ));
    obs
}

/// The verdict on arguments missing from the running command line: each is either in the
/// generated grub.cfg (effective after a reboot) or not configured at all; the message says which
/// is which.
fn cmdline_verdict(miss: &[&String], cfg_args: &[String]) -> (Status, String) {
    let (pending, absent): (Vec<&String>, Vec<&String>) =
        miss.iter().partition(|a| cfg_args.contains(a));
    let join = |v: &[&String]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ");
    if absent.is_empty() {
        return (
            Status::PendingReboot,
            format!("{} configured; effective after a reboot", join(&pending)),
        );
    }
    let mut msg = format!(
        "{} not on the running kernel's command line nor in {GRUB_CFG}",
        join(&absent)
    );
    if !pending.is_empty() {
        msg.push_str(&format!(
            "; {} configured, effective after a reboot",
            join(&pending)
        ));
    }
    (Status::Drift, msg)
}

pub struct Cmdline {
    pub args: Vec<String>,
}

impl Resource for Cmdline {
    fn id(&self) -> String {
        "grub:cmdline".to_string()
    }

    fn kind(&self) -> &'static str {
        "grub"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let expected = json!(self.args);
        if let Some(why) = sys.offline_reason() {
            return Ok(Observation::new(
                Status::Skipped,
                expected,
                json!(null),
                format!("running kernel command line not checked: {why}"),
            ));
        }
        let cmdline = sys.read_string("/proc/cmdline")?.unwrap_or_default();
        // procfs-core's parser splits on spaces only: the trailing newline is trimmed first.
        let have: Vec<String> = {
            use procfs_core::FromRead;
            procfs_core::KernelCmdline::from_read(cmdline.trim().as_bytes())
                .map(|k| k.0)
                .unwrap_or_default()
        };
        let miss = missing(&self.args, &have);
        let actual = json!({"running": cmdline.trim(), "missing": miss});
        if miss.is_empty() {
            return Ok(Observation::new(Status::Compliant, expected, actual, ""));
        }
        let cfg_args = sys
            .read_string(GRUB_CFG)?
            .and_then(|c| first_linux_args(&c))
            .unwrap_or_default();
        let (status, msg) = cmdline_verdict(&miss, &cfg_args);
        Ok(Observation::new(status, expected, actual, msg))
    }

    fn plan(&self, _sys: &System, _obs: &Observation) -> Vec<Change> {
        Vec::new() // a reboot, not guestprep, changes the running command line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_names_only_what_is_missing() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let want = s(&["intel_iommu=on", "i915.enable_guc=3", "i915.max_vfs=7"]);
        let miss: Vec<&String> = want.iter().collect(); // none on the running command line
        // grub.cfg has two of the three: one is missing, two are pending.
        let (st, msg) = cmdline_verdict(&miss, &s(&["ro", "intel_iommu=on", "i915.enable_guc=3"]));
        assert_eq!(st, Status::Drift);
        assert!(
            msg.starts_with("i915.max_vfs=7 not on the running kernel's command line nor in"),
            "{msg}"
        );
        assert!(
            msg.ends_with(
                "; intel_iommu=on i915.enable_guc=3 configured, effective after a reboot"
            ),
            "{msg}"
        );
        let (st, msg) = cmdline_verdict(&miss[..1], &s(&["intel_iommu=on"]));
        assert_eq!(st, Status::PendingReboot);
        assert_eq!(msg, "intel_iommu=on configured; effective after a reboot");
    }

    #[test]
    fn entries_choose_the_variable() {
        let mut g = Grub {
            cmdline: vec!["intel_iommu=on".into(), "i915.enable_guc=3".into()],
            entries: Entries::All,
        };
        assert!(render(&g).ends_with(
            "GRUB_CMDLINE_LINUX=\"${GRUB_CMDLINE_LINUX:+$GRUB_CMDLINE_LINUX }intel_iommu=on i915.enable_guc=3\"\n"
        ));
        g.entries = Entries::Default;
        assert!(render(&g).ends_with(
            "GRUB_CMDLINE_LINUX_DEFAULT=\"${GRUB_CMDLINE_LINUX_DEFAULT:+$GRUB_CMDLINE_LINUX_DEFAULT }intel_iommu=on i915.enable_guc=3\"\n"
        ));
    }

    #[test]
    fn reads_default_entry() {
        let cfg = "menuentry 'Debian' {\n\tlinux\t/boot/vmlinuz-6.12 root=UUID=x ro quiet intel_iommu=on\n}\nmenuentry 'b' {\n linux /x other\n}\n";
        assert_eq!(
            first_linux_args(cfg).unwrap(),
            ["root=UUID=x", "ro", "quiet", "intel_iommu=on"]
        );
    }
}
