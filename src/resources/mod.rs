//! One module per kind of thing guestprep manages, and the order they run in.
//!
//! Owns turning a validated [`Policy`] into the ordered list of resources. The order matters for
//! `apply`: modules are loaded before the sysctls that need them (`net.bridge.*` exists only once
//! `br_netfilter` is loaded), GRUB's file is written before `update-grub` is judged.

pub mod chrony;
pub mod conffiles;
pub mod file;
pub mod grub;
pub mod modules;
pub mod packages;
pub mod ssh;
pub mod swap;
pub mod sysctl;
pub mod units;

use crate::engine::Resource;
use crate::policy::Policy;
use crate::root::Root;

pub use file::FileResource;

/// The resources of a policy, in apply order.
///
/// A guestprep-owned file whose section is no longer in the policy is planned for removal, so
/// dropping a section undoes it.
pub fn build(policy: &Policy, root: &Root) -> Vec<Box<dyn Resource>> {
    let mut out: Vec<Box<dyn Resource>> = Vec::new();
    // Packages first: the configuration and units below may belong to them.
    if let Some(p) = &policy.packages {
        out.extend(packages::resources(p, root));
    }
    let absent = |kind: &'static str, path: &str, out: &mut Vec<Box<dyn Resource>>| {
        if root.exists(path) {
            out.push(Box::new(FileResource::absent(kind, path)));
        }
    };
    match &policy.modules {
        Some(m) => out.extend(modules::resources(m)),
        None => {
            absent("modules", modules::LOAD_FILE, &mut out);
            absent("modules", modules::MODPROBE_FILE, &mut out);
        }
    }
    if policy.sysctl.is_empty() {
        absent("sysctl", sysctl::FILE, &mut out);
    } else {
        out.extend(sysctl::resources(&policy.sysctl));
    }
    match &policy.chrony {
        Some(c) => out.extend(chrony::resources(c)),
        None => absent("chrony", chrony::FILE, &mut out),
    }
    match &policy.ssh {
        Some(s) => out.extend(ssh::resources(s)),
        None => absent("ssh", ssh::FILE, &mut out),
    }
    if let Some(s) = &policy.swap {
        out.extend(swap::resources(s));
    }
    match &policy.grub {
        Some(g) => out.extend(grub::resources(g)),
        None => absent("grub", grub::FILE, &mut out),
    }
    for f in &policy.files {
        let mut r = FileResource::new("file", &f.path, f.content.clone());
        r.mode = f.mode;
        out.push(Box::new(r));
    }
    // Units last: a service starts with its configuration already written.
    if let Some(u) = &policy.units {
        out.extend(units::resources(u));
    }
    out
}
