//! The policy against the platform it is for: a section that cannot apply on the root's system
//! (Flatcar has no package manager and a read-only `/usr`) is an error naming its file and line
//! and why, refused by `policy check` and every verb before anything runs, never a list of
//! `skipped` items.

use super::diag::Diagnostic;
use super::tree::{Table, Value};
use crate::platform::{Family, Platform};

/// Why each section cannot apply on a system without a package manager and with a read-only
/// `/usr` (Flatcar), and what to do instead.
const NO_PACKAGES: &[(&str, &str)] = &[
    (
        "packages",
        "there is no package manager (no dpkg or apt; /usr is read-only and A/B-updated): ship programs as a systemd-sysext image or under /opt",
    ),
    (
        "apt",
        "there is no apt (no package manager): drop the section for this platform",
    ),
    (
        "kernel",
        "the kernel comes with the /usr image and its A/B updates (update_engine), not from packages: choose the release with Flatcar's update channel",
    ),
    (
        "needrestart",
        "there is no needrestart (no package manager runs it): drop the section for this platform",
    ),
    (
        "grub",
        "GRUB's configuration is not edited here (no update-grub): set kernel arguments with Ignition's `kernel_arguments` (or the OEM partition's grub.cfg)",
    ),
];

/// The errors of a policy on `platform`: none on Debian, Ubuntu or an unknown system (which the
/// report's host facts name).
pub fn refusals(tree: &Table, platform: &Platform) -> Vec<Diagnostic> {
    if platform.family != Family::Flatcar {
        return Vec::new();
    }
    let on = platform.describe();
    let mut out = Vec::new();
    for (section, why) in NO_PACKAGES {
        if let Some(e) = tree.get(section) {
            out.push(Diagnostic::new(
                e.key_origin.clone(),
                *section,
                format!("[{section}] cannot apply on {on}: {why}"),
            ));
        }
    }
    if let Some(e) = tree.get("locale")
        && let Value::Table(t) = &e.node.value
        && let Some(g) = t.get("generate")
    {
        out.push(Diagnostic::new(
            g.key_origin.clone(),
            "locale.generate",
            format!(
                "cannot apply on {on}: generating locales writes /usr/lib/locale, which is read-only; `lang` alone works (the image's locales are C.UTF-8 and the ones it ships)"
            ),
        ));
    }
    if !platform.usr_writable
        && let Some(e) = tree.get("files")
        && let Value::Array(nodes) = &e.node.value
    {
        for (i, n) in nodes.iter().enumerate() {
            let Value::Table(t) = &n.value else { continue };
            let Some(p) = t.get("path") else { continue };
            if let Value::String(path) = &p.node.value
                && (path == "/usr" || path.starts_with("/usr/"))
            {
                out.push(Diagnostic::new(
                    p.node.origin.clone(),
                    format!("files[{i}].path"),
                    format!(
                        "`{path}` cannot be written on {on}: /usr is read-only (files belong under /etc, /opt or /var; programs in a systemd-sysext image)"
                    ),
                ));
            }
        }
    }
    out.sort();
    out
}
