//! `[kernel]`: the template boots one kernel, the one its DKMS modules were built and tested for.
//!
//! Items: the kernel's image and headers packages installed (`package:`), other kernels' packages
//! purged when `remove_others` (`kernel:others`), the kernel's packages and the flavour's meta
//! packages held (`package-hold:`; a hold keeps `apt upgrade` from bringing a new ABI, and a meta
//! package that is not installed is skipped), GRUB's default entry boots it (`kernel:grub-default`,
//! through `/etc/default/grub.d/99-guestprep-kernel.cfg` and `update-grub`), and it is the running
//! kernel (`kernel:running`, `pending-reboot` until it is). The DKMS items of `[packages]` include
//! this kernel (`resources/packages.rs`).

use anyhow::{Context, Result};
use serde_json::json;

use super::packages::{AptHold, AptInstall};
use crate::boot::grubcfg;
use crate::engine::{Change, Observation, Resource, System};
use crate::policy::Kernel;
use crate::report::Status;

pub const GRUB_FILE: &str = "/etc/default/grub.d/99-guestprep-kernel.cfg";
const GRUBENV: &str = "/boot/grub/grubenv";
const UPDATE_GRUB: &str = "/usr/sbin/update-grub";

pub fn resources(k: &Kernel) -> Vec<Box<dyn Resource>> {
    let pkgs = k.packages().to_vec();
    let mut out: Vec<Box<dyn Resource>> = Vec::new();
    for p in &pkgs {
        out.push(Box::new(AptInstall {
            name: p.clone(),
            all: pkgs.clone(),
        }));
    }
    if k.remove_others {
        out.push(Box::new(OtherKernels { kernel: k.clone() }));
    }
    let mut holds = pkgs;
    holds.extend(k.metas());
    for h in &holds {
        out.push(Box::new(AptHold {
            name: h.clone(),
            unless_failed: None,
        }));
    }
    out.push(Box::new(GrubDefault {
        version: k.version.clone(),
    }));
    out.push(Box::new(Running {
        version: k.version.clone(),
    }));
    out
}

/// The running kernel's release (`uname -r`), live only.
pub(crate) fn running_kernel(sys: &System) -> Result<Option<String>> {
    if !sys.is_live() {
        return Ok(None);
    }
    Ok(sys
        .read_string("/proc/sys/kernel/osrelease")?
        .map(|s| s.trim().to_string()))
}

/// `kernel:others`: no other kernel's packages are installed (the running one's are left until
/// the pinned kernel runs: removing the kernel one runs on is not done behind an admin's back).
pub struct OtherKernels {
    pub kernel: Kernel,
}

impl Resource for OtherKernels {
    fn id(&self) -> String {
        "kernel:others".to_string()
    }

    fn kind(&self) -> &'static str {
        "kernel"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let db = super::packages::dpkg_status(sys)?;
        let mut others: Vec<String> = db
            .iter()
            .filter(|(n, s)| s.installed() && self.kernel.is_other_kernel_package(n))
            .map(|(n, _)| n.clone())
            .collect();
        others.sort();
        let running = running_kernel(sys)?;
        let (kept, purge): (Vec<String>, Vec<String>) = others.iter().cloned().partition(|n| {
            running
                .as_deref()
                .is_some_and(|r| r != self.kernel.version && n.contains(r))
        });
        let expected = json!({"otherKernelPackages": []});
        let actual = json!({"otherKernelPackages": others, "running": running});
        if others.is_empty() {
            return Ok(Observation::new(Status::Compliant, expected, actual, ""));
        }
        if purge.is_empty() {
            return Ok(Observation::new(
                Status::PendingReboot,
                expected,
                actual,
                format!(
                    "{} belong to the running kernel: they are purged by an apply after booting {}",
                    kept.join(", "),
                    self.kernel.version
                ),
            ));
        }
        let mut msg = format!("other kernels' packages installed: {}", purge.join(", "));
        if let Some(why) = sys.cannot_change() {
            msg = format!("{msg}; {why}");
        }
        let mut obs = Observation::new(Status::Drift, expected, actual, msg);
        obs.data = json!({"purge": purge});
        Ok(obs)
    }

    fn plan(&self, sys: &System, obs: &Observation) -> Vec<Change> {
        if sys.cannot_change().is_some() {
            return Vec::new();
        }
        let purge: Vec<String> =
            serde_json::from_value(obs.data["purge"].clone()).unwrap_or_default();
        let mut args = vec!["purge", "--"];
        args.extend(purge.iter().map(String::as_str));
        vec![Change::Run {
            argv: super::packages::apt_get(&args),
        }]
    }
}

/// `kernel:grub-default`: the entry GRUB boots by default boots this kernel.
pub struct GrubDefault {
    pub version: String,
}

/// What the drop-in sets: GRUB_DEFAULT to the entry's path of ids.
fn render(path: &str) -> String {
    format!(
        "{}# Sourced by update-grub: boot the pinned kernel by default ([kernel] version).\nGRUB_DEFAULT=\"{}\"\n",
        super::file::HEADER,
        path.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('$', "\\$")
            .replace('`', "\\`")
    )
}

impl GrubDefault {
    /// The default entry and the path to this kernel's entry in grub.cfg.
    fn inspect(&self, sys: &System, cfg: &str) -> Result<(Option<grubcfg::Entry>, Option<String>)> {
        let entries = grubcfg::parse(cfg);
        let saved = sys
            .read_string(GRUBENV)?
            .and_then(|e| grubcfg::saved_entry(&e));
        let default = grubcfg::default_setting(cfg).unwrap_or_else(|| "0".into());
        let chosen = grubcfg::resolve(&entries, &default, saved.as_deref()).cloned();
        Ok((chosen, grubcfg::path_to_kernel(&entries, &self.version)))
    }
}

impl Resource for GrubDefault {
    fn id(&self) -> String {
        "kernel:grub-default".to_string()
    }

    fn kind(&self) -> &'static str {
        "kernel"
    }

    fn managed_paths(&self) -> Vec<String> {
        vec![GRUB_FILE.to_string()]
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let expected = json!({"defaultBoots": self.version});
        let Some(cfg) = sys.read_string(super::grub::GRUB_CFG)? else {
            return Ok(Observation::new(
                Status::Skipped,
                expected,
                json!(null),
                format!("no {}: GRUB is not installed here", super::grub::GRUB_CFG),
            ));
        };
        let (chosen, path) = self.inspect(sys, &cfg)?;
        let boots = chosen.as_ref().and_then(|e| e.kernel().map(str::to_string));
        let actual = json!({
            "defaultEntry": chosen.as_ref().map(|e| e.title.clone()),
            "defaultBoots": boots,
            "entryForKernel": path,
        });
        if boots.as_deref() == Some(self.version.as_str()) {
            return Ok(Observation::new(Status::Compliant, expected, actual, ""));
        }
        let installed = sys.exists(&format!("/boot/vmlinuz-{}", self.version));
        let mut msg = match (&chosen, &path) {
            (_, None) if !installed => format!("/boot/vmlinuz-{} is not installed", self.version),
            (_, None) => format!(
                "{} has no entry for {}: update-grub needed",
                super::grub::GRUB_CFG,
                self.version
            ),
            (Some(e), Some(_)) => format!(
                "GRUB's default entry is \"{}\" ({}), not {}",
                e.title,
                e.kernel().unwrap_or("no kernel"),
                self.version
            ),
            (None, Some(_)) => "GRUB's default names no entry of grub.cfg".to_string(),
        };
        if let Some(why) = sys.cannot_change() {
            msg = format!("{msg}; {why}");
        }
        Ok(Observation::new(Status::Drift, expected, actual, msg))
    }

    fn plan(&self, sys: &System, obs: &Observation) -> Vec<Change> {
        if sys.cannot_change().is_some()
            || obs.actual["defaultBoots"].is_null()
                && !sys.exists(&format!("/boot/vmlinuz-{}", self.version))
        {
            return Vec::new();
        }
        let path = obs.actual["entryForKernel"]
            .as_str()
            .unwrap_or("(found after update-grub)");
        let content = render(path).into_bytes();
        vec![
            Change::Write {
                path: GRUB_FILE.into(),
                old: sys.read(GRUB_FILE).ok().flatten(),
                content,
                mode: Some(0o644),
            },
            Change::RunInRoot {
                argv: vec![UPDATE_GRUB.into()],
            },
        ]
    }

    /// grub.cfg may not list the kernel yet (installed in this run with GRUB's hook failing, or
    /// an image whose grub.cfg is stale): update-grub runs first, then the entry's path is read
    /// from the new grub.cfg, written, and update-grub runs again.
    fn apply(&self, sys: &System, plan: &[Change]) -> Result<Vec<String>> {
        let mut details = Vec::new();
        let run = Change::RunInRoot {
            argv: vec![UPDATE_GRUB.into()],
        };
        let cfg = sys.read_string(super::grub::GRUB_CFG)?.unwrap_or_default();
        let path = match self.inspect(sys, &cfg)?.1 {
            Some(p) => p,
            None => {
                details.extend(run.execute(sys)?);
                let cfg = sys.read_string(super::grub::GRUB_CFG)?.unwrap_or_default();
                self.inspect(sys, &cfg)?.1.with_context(|| {
                    format!(
                        "{} has no entry for kernel {} even after update-grub",
                        super::grub::GRUB_CFG,
                        self.version
                    )
                })?
            }
        };
        for c in plan {
            let c = match c {
                Change::Write {
                    path: p, mode, old, ..
                } => Change::Write {
                    path: p.clone(),
                    content: render(&path).into_bytes(),
                    mode: *mode,
                    old: old.clone(),
                },
                other => other.clone(),
            };
            details.extend(c.execute(sys)?);
        }
        details.push(format!("GRUB_DEFAULT=\"{path}\""));
        Ok(details)
    }
}

/// `kernel:running`: the pinned kernel is the one running (live only).
pub struct Running {
    pub version: String,
}

impl Resource for Running {
    fn id(&self) -> String {
        "kernel:running".to_string()
    }

    fn kind(&self) -> &'static str {
        "kernel"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let expected = json!({"running": self.version});
        let Some(running) = running_kernel(sys)? else {
            return Ok(Observation::new(
                Status::Skipped,
                expected,
                json!(null),
                format!(
                    "the running kernel is a property of a booted machine: {}",
                    sys.describe()
                ),
            ));
        };
        let actual = json!({"running": running});
        if running == self.version {
            return Ok(Observation::new(Status::Compliant, expected, actual, ""));
        }
        Ok(Observation::new(
            Status::PendingReboot,
            expected,
            actual,
            format!(
                "kernel {running} is running; {} boots after a reboot if kernel:grub-default is compliant",
                self.version
            ),
        ))
    }

    fn plan(&self, _sys: &System, _obs: &Observation) -> Vec<Change> {
        Vec::new() // a reboot, not guestprep, changes the running kernel
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drop_in_quotes_what_grub_would_expand() {
        let r = render("gnulinux-advanced-1234>gnulinux-6.12.117+deb13-amd64-advanced-1234");
        assert!(r.ends_with(
            "GRUB_DEFAULT=\"gnulinux-advanced-1234>gnulinux-6.12.117+deb13-amd64-advanced-1234\"\n"
        ));
        assert!(render("a\"$(x)`").ends_with("GRUB_DEFAULT=\"a\\\"\\$(x)\\`\"\n"));
    }
}
