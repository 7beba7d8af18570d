//! `[packages]`: apt packages installed and held, release `.deb`s downloaded, verified, installed
//! and held, and the DKMS modules they carry proven built for every installed kernel.
//!
//! Checks read dpkg's status database and DKMS's tree directly (no subprocess when compliant).
//! Changes are `apt-get`, `apt-mark` and `dkms` runs: on a live root, or in a chroot of an offline
//! root with `apply --chroot`; otherwise offline items are checked and reported, not changed.
//! A `.deb` is inspected before it is installed: a `BUILD_EXCLUSIVE_KERNEL` that no installed
//! kernel matches refuses the install (it would install a module that is never built).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::engine::{Change, Observation, Resource, System};
use crate::packages::kconfig::{self, KernelConfig, Need};
use crate::packages::{deb, dkmsconf, dpkg};
use crate::policy::{DebSpec, DkmsSpec, Packages};
use crate::report::Status;
use crate::root::Root;

mod apt;
mod dkms;
mod hold;
mod release;

pub use apt::{AptInstall, AptRemove};
pub use dkms::DkmsBuilt;
pub(crate) use dkms::find_ko;
pub use hold::AptHold;
pub use release::{ConfigOf, DebPackage, preflight};

/// Where downloaded `.deb`s are kept.
pub const CACHE_DIR: &str = crate::paths::CACHE_DIR;

/// The environment of guestprep's own apt runs. needrestart (run by apt's hook after every
/// install on Ubuntu, and on Debian where it is installed) must not restart services behind the
/// plan's back (a libc update would restart containerd on every node): `NEEDRESTART_SUSPEND`
/// keeps its apt hook from running at all, and `NEEDRESTART_MODE=l` (list only) holds where an
/// older needrestart ignores the first. What needs a restart is the `service:` items' to say.
pub(crate) const APT_ENV: &[&str] = &[
    "env",
    "DEBIAN_FRONTEND=noninteractive",
    "NEEDRESTART_SUSPEND=1",
    "NEEDRESTART_MODE=l",
];

pub(crate) fn apt_get(args: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = APT_ENV.iter().map(|s| s.to_string()).collect();
    v.extend(
        [
            "apt-get",
            "-y",
            "-q",
            "-o",
            "Dpkg::Options::=--force-confdef",
            "-o",
            "Dpkg::Options::=--force-confold",
        ]
        .map(String::from),
    );
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

/// The items of `[packages]`. `pinned`: `[kernel] version`, whose DKMS builds are checked
/// although its headers may be installed only by this run.
pub fn resources(p: &Packages, root: &Root, pinned: Option<&str>) -> Vec<Box<dyn Resource>> {
    let mut kernels = kernels_with_headers(root);
    if let Some(k) = pinned
        && !kernels.iter().any(|x| x == k)
    {
        kernels.push(k.to_string());
    }
    let mut out: Vec<Box<dyn Resource>> = Vec::new();
    for name in &p.install {
        out.push(Box::new(AptInstall {
            name: name.clone(),
            all: p.install.clone(),
        }));
    }
    for d in &p.deb {
        out.push(Box::new(DebPackage { spec: d.clone() }));
        if let Some(k) = &d.dkms {
            for kernel in kernels.iter().cloned() {
                out.push(Box::new(DkmsBuilt {
                    dkms: k.clone(),
                    kernel,
                    package: d.name.clone(),
                }));
            }
        }
    }
    if p.deb.iter().any(|d| d.dkms.is_some()) {
        out.push(Box::new(super::secureboot::SecureBootKey));
    }
    for name in &p.remove {
        out.push(Box::new(AptRemove {
            name: name.clone(),
            purge: false,
            all: p.remove.clone(),
        }));
    }
    for name in &p.purge {
        out.push(Box::new(AptRemove {
            name: name.clone(),
            purge: true,
            all: p.purge.clone(),
        }));
    }
    let mut holds: Vec<String> = p.hold.clone();
    holds.extend(p.deb.iter().filter(|d| d.hold).map(|d| d.name.clone()));
    for name in &holds {
        // A .deb's own `hold` keeps a driver that works; `[packages] hold` says so regardless.
        let unless_failed = p
            .deb
            .iter()
            .find(|d| &d.name == name && !p.hold.contains(name))
            .and_then(|d| d.dkms.clone())
            .map(|k| (k, kernels.clone()));
        out.push(Box::new(AptHold {
            name: name.clone(),
            unless_failed,
        }));
    }
    out
}

/// Kernels installed in the root that have headers (`/usr/lib/modules/KVER/build`), oldest first:
/// the kernels DKMS can build for, whatever kernel runs this process.
pub fn kernels_with_headers(root: &Root) -> Vec<String> {
    crate::report::installed_kernels(root)
        .into_iter()
        .filter(|k| root.exists(&crate::platform::headers_dir(k)))
        .collect()
}

/// `msg` with the reason an offline root is not changed here appended, if it is not.
fn with_offline_note(sys: &System, msg: String) -> String {
    match sys.cannot_change() {
        Some(why) => format!("{msg}; {why}"),
        None => msg,
    }
}

/// Whether apt has package lists (a fresh cloud image may have none: `apt-get update` first).
fn have_apt_lists(sys: &System) -> Result<bool> {
    Ok(sys
        .list_dir("/var/lib/apt/lists")?
        .iter()
        .any(|n| n.ends_with("_Packages") || n.contains("_Packages.")))
}

/// The status database of the managed system, parsed once per pass of checks and shared by
/// every package item ([`System::derived`]): a real status file is megabytes.
pub fn dpkg_status(
    sys: &System,
) -> Result<std::rc::Rc<std::collections::HashMap<String, dpkg::PkgStatus>>> {
    sys.derived("dpkg status", |sys| {
        Ok(dpkg::parse(
            &sys.read_string(dpkg::STATUS)?.unwrap_or_default(),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_runs_keep_needrestart_from_restarting_services() {
        // needrestart's apt hook (/usr/lib/needrestart/apt-pinvoke) exits when NEEDRESTART_SUSPEND
        // is non-empty; needrestart itself reads NEEDRESTART_MODE (`l`: list, never restart).
        let argv = apt_get(&["install", "x"]);
        assert!(
            argv.contains(&"NEEDRESTART_SUSPEND=1".to_string()),
            "{argv:?}"
        );
        assert!(argv.contains(&"NEEDRESTART_MODE=l".to_string()), "{argv:?}");
        assert!(!argv.iter().any(|a| a == "NEEDRESTART_MODE=a"), "{argv:?}");
        let apt = argv.iter().position(|a| a == "apt-get").unwrap();
        assert!(
            argv[..apt].iter().skip(1).all(|a| a.contains('=')),
            "{argv:?}"
        );
    }
}
