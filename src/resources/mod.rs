//! One module per kind of thing guestprep manages, and the order they run in.
//!
//! Owns turning a validated [`Policy`] into the ordered list of resources. The order matters for
//! `apply`: modules are loaded before the sysctls that need them (`net.bridge.*` exists only once
//! `br_netfilter` is loaded), GRUB's file is written before `update-grub` is judged.

pub mod apt;
pub mod aptsources;
pub mod chrony;
pub mod conffiles;
pub mod file;
pub mod grub;
pub mod initramfs;
pub mod initramfs_memo;
pub mod kernel;
pub mod kernel_config;
pub mod kubernetes;
pub mod locale;
pub mod modules;
pub mod needrestart;
pub mod packages;
pub mod platform;
pub mod secureboot;
pub mod services;
pub mod ssh;
pub mod sshd_config;
pub mod sshd_glob;
pub mod sshsocket;
pub mod swap;
pub mod sysctl;
pub mod time;
pub mod units;

use crate::engine::Resource;
use crate::policy::Policy;
use crate::root::Root;
use services::{Action, Feed};

pub use file::FileResource;

/// The resources of a policy, in apply order.
///
/// A guestprep-owned file whose section is no longer in the policy is planned for removal, so
/// dropping a section undoes it.
pub fn build(policy: &Policy, root: &Root) -> Vec<Box<dyn Resource>> {
    let mut out: Vec<Box<dyn Resource>> = Vec::new();
    let absent = |kind: &'static str, path: &str, out: &mut Vec<Box<dyn Resource>>| {
        if root.exists(path) {
            out.push(Box::new(FileResource::absent(kind, path)));
        }
    };
    // What the root is, when it cannot be told: said first (fragments for a platform were left
    // out of the policy).
    if crate::platform::Platform::detect(root).problem.is_some() {
        out.push(Box::new(platform::Unknown));
    }
    // The kernel first: DKMS builds for it, and its headers must be there before a .deb's
    // preflight judges which kernels it builds for.
    match &policy.kernel {
        Some(k) => out.extend(kernel::resources(k, root)),
        None => absent("kernel", kernel::GRUB_FILE, &mut out),
    }
    // Whether each kernel can carry the DKMS modules at all (after [kernel] installs its own).
    out.extend(kernel_config::resources(policy, root));
    // apt's options and sources before the packages apt installs.
    match &policy.apt {
        Some(a) => out.extend(apt::resources(a, root)),
        None => absent("apt", apt::OPTIONS_FILE, &mut out),
    }
    // Packages next: the configuration and units below may belong to them.
    if let Some(p) = &policy.packages {
        let pinned = policy.kernel.as_ref().map(|k| k.version.as_str());
        out.extend(packages::resources(p, root, pinned));
    }
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
    // Which running unit reads which managed file: one `service:` item per unit, last.
    let mut feeds: Vec<Feed> = Vec::new();
    let feed = |unit: &str, action, path: &str, allowed: bool, section: &str| Feed {
        unit: unit.to_string(),
        action,
        path: path.to_string(),
        allowed,
        section: section.to_string(),
    };
    match &policy.chrony {
        Some(c) => {
            out.extend(chrony::resources(c));
            let f = feed(
                chrony::UNIT,
                Action::Restart,
                chrony::FILE,
                c.restart,
                "[chrony]",
            );
            feeds.push(f);
            if c.exclusive {
                let f = feed(
                    chrony::UNIT,
                    Action::Restart,
                    chrony::CONF,
                    c.restart,
                    "[chrony]",
                );
                feeds.push(f);
            }
        }
        None if root.exists(chrony::FILE) => {
            absent("chrony", chrony::FILE, &mut out);
            feeds.push(feed(
                chrony::UNIT,
                Action::Restart,
                chrony::FILE,
                true,
                "[chrony]",
            ));
        }
        None => {}
    }
    // sshd's drop-in, and where a socket starts sshd, the socket's addresses: which units then
    // reload or restart depends on how this root starts sshd (`sshsocket.rs`).
    let sshd = crate::platform::Platform::detect(root).sshd;
    if let Some(s) = &policy.ssh {
        out.extend(ssh::resources(s));
    } else if root.exists(ssh::FILE) {
        absent("ssh", ssh::FILE, &mut out);
    }
    let socket = sshsocket::plan(policy.ssh.as_ref(), &sshd, root);
    out.extend(socket.items);
    feeds.extend(socket.feeds);
    let listen = socket.listen;
    if let Some(s) = &policy.swap {
        out.extend(swap::resources(s));
    }
    if let Some(t) = &policy.time {
        out.extend(time::resources(t));
    }
    match &policy.needrestart {
        Some(n) => out.extend(needrestart::resources(n)),
        None => absent("needrestart", needrestart::FILE, &mut out),
    }
    if let Some(l) = &policy.locale {
        out.extend(locale::resources(l));
    }
    match &policy.grub {
        Some(g) => out.extend(grub::resources(g)),
        None => absent("grub", grub::FILE, &mut out),
    }
    for (i, f) in policy.files.iter().enumerate() {
        use crate::policy::{FileKind, FileState};
        match (f.state, f.kind, &f.content) {
            (FileState::Absent, ..) => out.push(Box::new(FileResource::absent("file", &f.path))),
            (FileState::Present, FileKind::Directory, _) => out.push(Box::new(file::DirResource {
                path: f.path.clone(),
                mode: f.mode,
                owner: f.owner.clone(),
                group: f.group.clone(),
            })),
            (FileState::Present, FileKind::File, content) => {
                let mut r = FileResource::new("file", &f.path, content.clone().unwrap_or_default());
                r.mode = f.mode;
                r.owner = f.owner.clone();
                r.group = f.group.clone();
                out.push(Box::new(r));
            }
        }
        let section = format!("files[{i}]");
        for u in &f.restart {
            feeds.push(feed(u, Action::Restart, &f.path, true, &section));
        }
        for u in &f.reload {
            feeds.push(feed(u, Action::Reload, &f.path, true, &section));
        }
    }
    // The initramfs after the DKMS builds and modprobe.d files it must carry.
    let mut modprobe = vec![modules::MODPROBE_FILE.to_string()];
    modprobe.extend(
        policy
            .files
            .iter()
            .filter(|f| f.path.starts_with("/etc/modprobe.d/"))
            .map(|f| f.path.clone()),
    );
    let dkms: Vec<_> = policy
        .packages
        .iter()
        .flat_map(|p| p.deb.iter().filter_map(|d| d.dkms.clone()))
        .collect();
    if !dkms.is_empty() || policy.modules.is_some() || modprobe.iter().any(|m| root.exists(m)) {
        let mut kernels = crate::report::installed_kernels(root);
        if let Some(k) = &policy.kernel
            && !kernels.contains(&k.version)
        {
            kernels.push(k.version.clone());
        }
        for kernel in kernels {
            out.push(Box::new(initramfs::Initramfs {
                kernel,
                dkms: dkms.clone(),
                modprobe: modprobe.clone(),
            }));
        }
    }
    // Units last: a service starts with its configuration already written.
    if let Some(u) = &policy.units {
        out.extend(units::dropin_resources(u));
        out.extend(units::resources(u));
        feeds.extend(units::feeds(u));
    }
    // Then the services that must re-read what changed above: once each.
    out.extend(services::resources(&feeds));
    // Where the socket listens, once it was restarted.
    out.extend(listen);
    // Kubernetes readiness last: it reads what everything above configures and starts.
    if let Some(k) = &policy.kubernetes {
        out.extend(kubernetes::resources(k, policy, root));
    }
    out
}
