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
#[cfg(test)]
#[path = "temproot_tests.rs"]
pub(crate) mod temproot;
pub mod time;
pub mod units;

use crate::engine::Resource;
use crate::policy::Policy;
use crate::root::Root;
use services::{Action, Feed};

pub use file::FileResource;

/// What the sections have built so far.
#[derive(Default)]
struct Build {
    out: Vec<Box<dyn Resource>>,
    /// Which running unit reads which managed file: one `service:` item per unit, late.
    feeds: Vec<Feed>,
    /// `ssh:listen`, held until the socket was restarted.
    listen: Option<Box<dyn Resource>>,
}

impl Build {
    fn extend(&mut self, items: impl IntoIterator<Item = Box<dyn Resource>>) {
        self.out.extend(items);
    }

    /// Removes a guestprep-owned file whose section is no longer in the policy.
    fn absent(&mut self, root: &Root, kind: &'static str, path: &str) {
        if root.exists(path) {
            self.out.push(Box::new(FileResource::absent(kind, path)));
        }
    }

    fn feed(&mut self, unit: &str, action: Action, path: &str, allowed: bool, section: &str) {
        self.feeds.push(Feed {
            unit: unit.to_string(),
            action,
            path: path.to_string(),
            allowed,
            section: section.to_string(),
        });
    }
}

/// One section's resources.
type Section = fn(&Policy, &Root, &mut Build);

/// The sections in apply order, each with what it waits for.
const SECTIONS: &[(&str, Section)] = &[
    // What the root is, when it cannot be told: said first (fragments for a platform were left
    // out of the policy).
    ("platform", |_, r, b| {
        if crate::platform::Platform::detect(r).problem.is_some() {
            b.extend([Box::new(platform::Unknown) as Box<dyn Resource>]);
        }
    }),
    // The kernel first: DKMS builds for it, and its headers must be there before a .deb's
    // preflight judges which kernels it builds for.
    ("kernel", kernel_section),
    // Whether each kernel can carry the DKMS modules at all (after [kernel] installs its own).
    ("kernel_config", |p, r, b| {
        b.extend(kernel_config::resources(p, r))
    }),
    // apt's options and sources before the packages apt installs.
    ("apt", apt_section),
    // Packages next: the configuration and units below may belong to them.
    ("packages", packages_section),
    ("modules", modules_section),
    ("sysctl", sysctl_section),
    ("chrony", chrony_section),
    ("ssh", ssh_section),
    ("swap", |p, _, b| {
        b.extend(p.swap.iter().flat_map(swap::resources))
    }),
    ("time", |p, _, b| {
        b.extend(p.time.iter().flat_map(time::resources))
    }),
    ("needrestart", needrestart_section),
    ("locale", |p, _, b| {
        b.extend(p.locale.iter().flat_map(locale::resources))
    }),
    ("grub", grub_section),
    ("files", files_section),
    // The initramfs after the DKMS builds and modprobe.d files it must carry.
    ("initramfs", initramfs_section),
    // Units last: a service starts with its configuration already written.
    ("units", units_section),
    // Then the services that must re-read what changed above: once each.
    ("services", |_, _, b| {
        let items = services::resources(&b.feeds);
        b.extend(items);
    }),
    // Where the socket listens, once it was restarted.
    ("listen", |_, _, b| {
        let listen = b.listen.take();
        b.extend(listen);
    }),
    // Kubernetes readiness last: it reads what everything above configures and starts.
    ("kubernetes", |p, r, b| {
        b.extend(
            p.kubernetes
                .iter()
                .flat_map(|k| kubernetes::resources(k, p, r)),
        )
    }),
];

/// The resources of a policy, in apply order.
///
/// A guestprep-owned file whose section is no longer in the policy is planned for removal, so
/// dropping a section undoes it.
pub fn build(policy: &Policy, root: &Root) -> Vec<Box<dyn Resource>> {
    let mut b = Build::default();
    for (name, section) in SECTIONS {
        let before = b.out.len();
        section(policy, root, &mut b);
        tracing::trace!(
            section = name,
            items = b.out.len() - before,
            "resources built"
        );
    }
    b.out
}

fn kernel_section(policy: &Policy, root: &Root, b: &mut Build) {
    match &policy.kernel {
        Some(k) => b.extend(kernel::resources(k, root)),
        None => b.absent(root, "kernel", kernel::GRUB_FILE),
    }
}

fn apt_section(policy: &Policy, root: &Root, b: &mut Build) {
    match &policy.apt {
        Some(a) => b.extend(apt::resources(a, root)),
        None => b.absent(root, "apt", apt::OPTIONS_FILE),
    }
}

fn packages_section(policy: &Policy, root: &Root, b: &mut Build) {
    if let Some(p) = &policy.packages {
        let pinned = policy.kernel.as_ref().map(|k| k.version.as_str());
        b.extend(packages::resources(p, root, pinned));
    }
}

fn modules_section(policy: &Policy, root: &Root, b: &mut Build) {
    match &policy.modules {
        Some(m) => b.extend(modules::resources(m)),
        None => {
            b.absent(root, "modules", modules::LOAD_FILE);
            b.absent(root, "modules", modules::MODPROBE_FILE);
        }
    }
}

fn sysctl_section(policy: &Policy, root: &Root, b: &mut Build) {
    if policy.sysctl.is_empty() {
        b.absent(root, "sysctl", sysctl::FILE);
    } else {
        b.extend(sysctl::resources(&policy.sysctl));
    }
}

fn chrony_section(policy: &Policy, root: &Root, b: &mut Build) {
    match &policy.chrony {
        Some(c) => {
            b.extend(chrony::resources(c));
            b.feed(
                chrony::UNIT,
                Action::Restart,
                chrony::FILE,
                c.restart,
                "[chrony]",
            );
            if c.exclusive {
                b.feed(
                    chrony::UNIT,
                    Action::Restart,
                    chrony::CONF,
                    c.restart,
                    "[chrony]",
                );
            }
        }
        None if root.exists(chrony::FILE) => {
            b.absent(root, "chrony", chrony::FILE);
            b.feed(
                chrony::UNIT,
                Action::Restart,
                chrony::FILE,
                true,
                "[chrony]",
            );
        }
        None => {}
    }
}

/// sshd's drop-in, and where a socket starts sshd, the socket's addresses: which units then
/// reload or restart depends on how this root starts sshd (`sshsocket.rs`).
fn ssh_section(policy: &Policy, root: &Root, b: &mut Build) {
    let sshd = crate::platform::Platform::detect(root).sshd;
    match &policy.ssh {
        Some(s) => b.extend(ssh::resources(s)),
        None => b.absent(root, "ssh", ssh::FILE),
    }
    let socket = sshsocket::plan(policy.ssh.as_ref(), &sshd, root);
    b.extend(socket.items);
    b.feeds.extend(socket.feeds);
    b.listen = socket.listen;
}

fn needrestart_section(policy: &Policy, root: &Root, b: &mut Build) {
    match &policy.needrestart {
        Some(n) => b.extend(needrestart::resources(n)),
        None => b.absent(root, "needrestart", needrestart::FILE),
    }
}

fn grub_section(policy: &Policy, root: &Root, b: &mut Build) {
    match &policy.grub {
        Some(g) => b.extend(grub::resources(g)),
        None => b.absent(root, "grub", grub::FILE),
    }
}

fn files_section(policy: &Policy, _: &Root, b: &mut Build) {
    use crate::policy::{FileKind, FileState};
    for (i, f) in policy.files.iter().enumerate() {
        let item: Box<dyn Resource> = match (f.state, f.kind, &f.content) {
            (FileState::Absent, ..) => Box::new(FileResource::absent("file", &f.path)),
            (FileState::Present, FileKind::Directory, _) => Box::new(file::DirResource {
                path: f.path.clone(),
                mode: f.mode,
                owner: f.owner.clone(),
                group: f.group.clone(),
            }),
            (FileState::Present, FileKind::File, content) => {
                let mut r = FileResource::new("file", &f.path, content.clone().unwrap_or_default());
                r.mode = f.mode;
                r.owner = f.owner.clone();
                r.group = f.group.clone();
                Box::new(r)
            }
        };
        b.out.push(item);
        let section = format!("files[{i}]");
        for u in &f.restart {
            b.feed(u, Action::Restart, &f.path, true, &section);
        }
        for u in &f.reload {
            b.feed(u, Action::Reload, &f.path, true, &section);
        }
    }
}

fn initramfs_section(policy: &Policy, root: &Root, b: &mut Build) {
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
    if dkms.is_empty() && policy.modules.is_none() && !modprobe.iter().any(|m| root.exists(m)) {
        return;
    }
    let mut kernels = crate::report::installed_kernels(root);
    if let Some(k) = &policy.kernel
        && !kernels.contains(&k.version)
    {
        kernels.push(k.version.clone());
    }
    for kernel in kernels {
        b.out.push(Box::new(initramfs::Initramfs {
            kernel,
            dkms: dkms.clone(),
            modprobe: modprobe.clone(),
        }));
    }
}

fn units_section(policy: &Policy, _: &Root, b: &mut Build) {
    if let Some(u) = &policy.units {
        b.extend(units::dropin_resources(u));
        b.extend(units::resources(u));
        b.feeds.extend(units::feeds(u));
    }
}
