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

/// A fragment's own `[platform]` table (`os = ["ubuntu"]`: os-release `ID`s), taken out of it:
/// whether the fragment applies on a target whose ID is `os` (every fragment applies without a
/// target). A fragment without the table applies everywhere. A malformed table is an error with
/// its file and line.
pub fn fragment_applies(t: &mut Table, os: Option<&str>) -> Result<bool, Vec<Diagnostic>> {
    let Some(e) = t.entries.remove("platform") else {
        return Ok(true);
    };
    let bad = |origin: &super::tree::Origin, key: &str, m: String| {
        vec![Diagnostic::new(origin.clone(), key.to_string(), m)]
    };
    let Value::Table(p) = &e.node.value else {
        return Err(bad(
            &e.node.origin,
            "platform",
            "`[platform]` must be a table: `os = [\"ubuntu\"]`".into(),
        ));
    };
    if let Some(k) = p.entries.keys().find(|k| *k != "os") {
        let o = &p.entries[k].key_origin;
        return Err(bad(
            o,
            &format!("platform.{k}"),
            format!("unknown key `{k}` (only `os`)"),
        ));
    }
    let Some(list) = p.get("os") else {
        return Err(bad(
            &e.node.origin,
            "platform.os",
            "missing required key `os`".into(),
        ));
    };
    let Value::Array(items) = &list.node.value else {
        return Err(bad(
            &list.node.origin,
            "platform.os",
            "a list of os-release IDs: `os = [\"debian\"]`".into(),
        ));
    };
    let mut ids = Vec::new();
    for (i, n) in items.iter().enumerate() {
        match &n.value {
            Value::String(id)
                if !id.is_empty()
                    && id.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c)
                    }) =>
            {
                ids.push(id.clone());
            }
            _ => {
                return Err(bad(
                    &n.origin,
                    &format!("platform.os[{i}]"),
                    "an os-release ID like \"debian\", \"ubuntu\" or \"flatcar\"".into(),
                ));
            }
        }
    }
    Ok(os.is_none_or(|os| ids.iter().any(|i| i == os)))
}
