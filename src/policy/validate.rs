//! Turns the merged tree into a typed [`Policy`], collecting every problem at once.
//!
//! This is the policy's schema: the allowed sections and keys, their types, and what a valid value
//! is (sysctl names, module names, kernel arguments, absolute paths, modes, SSH algorithms…).
//! It must never stop at the first error, and never touch the system.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::diag::Diagnostic;
use super::openssh::Context;
pub use super::timespan::{format_timespan, parse_timespan};
use super::tree::{Entry, Origin, Table, Value};
use super::{Policy, Swap};
use crate::text::closest;

const SECTIONS: &[&str] = &[
    "chrony",
    "sysctl",
    "modules",
    "grub",
    "ssh",
    "swap",
    "files",
    "units",
    "packages",
    "agent",
    "seal",
    "kernel",
    "waivers",
    "time",
    "locale",
    "apt",
    "needrestart",
    "kubernetes",
];

/// The typed policy, validated against a target: sshd names are checked at its OpenSSH release.
pub fn validate_for(tree: &Table, ctx: &Context) -> Result<Policy, Vec<Diagnostic>> {
    let mut v = V {
        ctx: ctx.clone(),
        ..V::default()
    };
    v.known_keys(tree, "", SECTIONS);
    let mut policy = Policy::default();
    if let Some(t) = v.section(tree, "chrony") {
        policy.chrony = Some(v.chrony(t));
    }
    if let Some(t) = v.section(tree, "sysctl") {
        policy.sysctl = v.sysctl(t);
    }
    if let Some(t) = v.section(tree, "modules") {
        policy.modules = Some(v.modules(t));
    }
    if let Some(t) = v.section(tree, "grub") {
        policy.grub = Some(v.grub(t));
    }
    if let Some(t) = v.section(tree, "ssh") {
        policy.ssh = Some(v.ssh(t));
    }
    if let Some(t) = v.section(tree, "swap") {
        v.known_keys(t, "swap", &["enabled"]);
        let enabled = v.bool(t, "swap", "enabled").unwrap_or(true);
        policy.swap = Some(Swap { enabled });
    }
    if let Some(e) = tree.get("files") {
        policy.files = v.files(e);
    }
    if let Some(t) = v.section(tree, "units") {
        policy.units = Some(v.units(t));
    }
    if let Some(t) = v.section(tree, "packages") {
        policy.packages = Some(v.packages(t));
    }
    if let Some(t) = v.section(tree, "apt") {
        policy.apt = Some(v.apt(t));
    }
    if let Some(t) = v.section(tree, "locale") {
        policy.locale = Some(v.locale(t, &tree.entries["locale"].node.origin));
    }
    if let Some(t) = v.section(tree, "time") {
        policy.time = Some(v.time(t, &tree.entries["time"].node.origin));
    }
    if let Some(t) = v.section(tree, "needrestart") {
        policy.needrestart = Some(v.needrestart(t, &tree.entries["needrestart"].node.origin));
    }
    if let Some(e) = tree.get("waivers") {
        policy.waivers = v.waivers(e);
    }
    if let Some(t) = v.section(tree, "kernel") {
        policy.kernel = Some(v.kernel(t, &tree.entries["kernel"].node.origin));
    }
    v.files_owned_elsewhere(tree, &policy);
    if let Some(t) = v.section(tree, "agent") {
        policy.agent = Some(v.agent(t));
    }
    policy.kubernetes = v.section(tree, "kubernetes").map(|t| v.kubernetes(t));
    if let Some(t) = v.section(tree, "seal") {
        policy.seal = Some(v.seal(t));
    }
    if v.diags.is_empty() {
        Ok(policy)
    } else {
        v.diags.sort();
        v.diags.dedup();
        Err(v.diags)
    }
}

/// The validator: every problem found, with where it was written. Each policy section's keys are
/// checked by a method of its own (`policy/kernel.rs` holds `[kernel]`'s).
#[derive(Default)]
pub(super) struct V {
    diags: Vec<Diagnostic>,
    /// What the policy is validated against (the target's OpenSSH release).
    pub(super) ctx: Context,
}

/// Where the string `value` was written in the array `e` (the array itself if not found).
pub(super) fn element_origin(e: &Entry, value: &str) -> Origin {
    match &e.node.value {
        Value::Array(a) => a
            .iter()
            .find(|x| matches!(&x.value, Value::String(s) if s == value))
            .map_or(e.node.origin.clone(), |x| x.origin.clone()),
        _ => e.node.origin.clone(),
    }
}

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else if key.contains('.') || key.contains('"') {
        format!("{path}.\"{key}\"")
    } else {
        format!("{path}.{key}")
    }
}

impl V {
    pub(super) fn err(&mut self, origin: &Origin, key: &str, msg: impl Into<String>) {
        self.diags.push(Diagnostic::new(origin.clone(), key, msg));
    }

    pub(super) fn known_keys(&mut self, t: &Table, path: &str, allowed: &[&str]) {
        for (k, e) in &t.entries {
            if !allowed.contains(&k.as_str()) {
                let mut msg = format!("unknown key `{k}`");
                if let Some(s) = closest(k, allowed) {
                    msg.push_str(&format!(" (did you mean `{s}`?)"));
                } else {
                    msg.push_str(&format!("; expected one of: {}", allowed.join(", ")));
                }
                self.err(&e.key_origin, &join(path, k), msg);
            }
        }
    }

    pub(super) fn section<'a>(&mut self, t: &'a Table, key: &str) -> Option<&'a Table> {
        let e = t.get(key)?;
        match &e.node.value {
            Value::Table(t) => Some(t),
            other => {
                let msg = format!("expected a table `[{key}]`, found {}", other.type_name());
                self.err(&e.node.origin, key, msg);
                None
            }
        }
    }

    pub(super) fn typed<'a, T>(
        &mut self,
        e: &'a Entry,
        path: &str,
        want: &str,
        f: impl Fn(&'a Value) -> Option<T>,
    ) -> Option<T> {
        let r = f(&e.node.value);
        if r.is_none() {
            let msg = format!("expected {want}, found {}", e.node.value.type_name());
            self.err(&e.node.origin, path, msg);
        }
        r
    }

    pub(super) fn string(&mut self, t: &Table, path: &str, key: &str) -> Option<String> {
        let e = t.get(key)?;
        self.typed(e, &join(path, key), "a string", |v| match v {
            Value::String(s) => Some(s.clone()),
            _ => None,
        })
    }

    pub(super) fn bool(&mut self, t: &Table, path: &str, key: &str) -> Option<bool> {
        let e = t.get(key)?;
        self.typed(
            e,
            &join(path, key),
            "a boolean (true or false)",
            |v| match v {
                Value::Bool(b) => Some(*b),
                _ => None,
            },
        )
    }

    /// A list of strings, each checked by `check`; duplicates are errors.
    pub(super) fn list(
        &mut self,
        t: &Table,
        path: &str,
        key: &str,
        check: fn(&str) -> Result<(), String>,
    ) -> Vec<String> {
        let Some(e) = t.get(key) else {
            return Vec::new();
        };
        let kp = join(path, key);
        let Some(items) = self.typed(e, &kp, "an array of strings", |v| match v {
            Value::Array(a) => Some(a),
            _ => None,
        }) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, n) in items.iter().enumerate() {
            let ip = format!("{kp}[{i}]");
            match &n.value {
                Value::String(s) => {
                    if let Err(m) = check(s) {
                        self.err(&n.origin, &ip, m);
                    } else if !seen.insert(s.clone()) {
                        self.err(&n.origin, &ip, format!("`{s}` is listed twice"));
                    } else {
                        out.push(s.clone());
                    }
                }
                other => {
                    let msg = format!("expected a string, found {}", other.type_name());
                    self.err(&n.origin, &ip, msg);
                }
            }
        }
        out
    }

    pub(super) fn makestep(&mut self, e: &Entry) -> Option<(f64, i64)> {
        let kp = "chrony.makestep";
        let want = "an array [threshold seconds, limit of updates], like [1.0, 3]";
        let a = self.typed(e, kp, want, |v| match v {
            Value::Array(a) if a.len() == 2 => Some(a),
            _ => None,
        })?;
        let threshold = match &a[0].value {
            Value::Float(f) if *f > 0.0 && f.is_finite() => Some(*f),
            Value::Integer(i) if *i > 0 => Some(*i as f64),
            _ => {
                self.err(
                    &a[0].origin,
                    "chrony.makestep[0]",
                    "threshold must be a positive number of seconds",
                );
                None
            }
        };
        let limit = match &a[1].value {
            Value::Integer(i) if *i == -1 || *i > 0 => Some(*i),
            _ => {
                self.err(
                    &a[1].origin,
                    "chrony.makestep[1]",
                    "limit must be a positive integer, or -1 for no limit",
                );
                None
            }
        };
        Some((threshold?, limit?))
    }

    fn sysctl(&mut self, t: &Table) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (k, e) in &t.entries {
            let kp = join("sysctl", k);
            if let Err(m) = check_sysctl_name(k) {
                self.err(&e.key_origin, &kp, m);
                continue;
            }
            let value = match &e.node.value {
                Value::Integer(i) => i.to_string(),
                Value::Bool(b) => u8::from(*b).to_string(),
                Value::String(s) => {
                    let norm = s.split_whitespace().collect::<Vec<_>>().join(" ");
                    if norm.is_empty() || s.contains('\n') || s.contains('#') {
                        self.err(
                            &e.node.origin,
                            &kp,
                            "value must be non-empty, one line, without `#`",
                        );
                        continue;
                    }
                    norm
                }
                other => {
                    let msg = format!(
                        "expected an integer, boolean or string, found {}",
                        other.type_name()
                    );
                    self.err(&e.node.origin, &kp, msg);
                    continue;
                }
            };
            out.insert(k.clone(), value);
        }
        out
    }

    /// A `[[files]]` path that a section writes (or a unit drop-in) would be rewritten by two items
    /// on every run: refuse it.
    fn files_owned_elsewhere(&mut self, tree: &Table, policy: &Policy) {
        let mut owned: Vec<(String, &str)> = crate::paths::SECTION_FILES
            .iter()
            .map(|(p, s)| (p.to_string(), *s))
            .collect();
        if let Some(u) = &policy.units {
            owned.extend(u.dropins.iter().map(|d| (d.path(), "[[units.dropins]]")));
        }
        let Some(Value::Array(nodes)) = tree.get("files").map(|e| &e.node.value) else {
            return;
        };
        for (i, f) in policy.files.iter().enumerate() {
            let Some((_, owner)) = owned.iter().find(|(p, _)| *p == f.path) else {
                continue;
            };
            let origin = nodes
                .iter()
                .find_map(|n| match &n.value {
                    Value::Table(t) => t
                        .get("path")
                        .filter(|e| matches!(&e.node.value, Value::String(s) if *s == f.path))
                        .map(|e| e.node.origin.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| nodes[i.min(nodes.len() - 1)].origin.clone());
            self.err(
                &origin,
                &format!("files[{i}].path"),
                format!(
                    "`{}` is written by {owner}: two items would rewrite it on every run; set it there",
                    f.path
                ),
            );
        }
    }
}

/// A host name or address for chrony: no spaces, no option syntax.
pub fn check_host(s: &str) -> Result<(), String> {
    if s.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("`{s}` is not a valid host name or IP address"))
    }
}

/// chrony `allow`: an address, a network in CIDR form, or `all`.
pub fn check_allow(s: &str) -> Result<(), String> {
    if s == "all" {
        return Ok(());
    }
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let Ok(ip) = addr.parse::<IpAddr>() else {
        return Err(format!(
            "`{s}` is not an address or a network like 10.0.0.0/8"
        ));
    };
    if let Some(p) = prefix {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        match p.parse::<u8>() {
            Ok(n) if n <= max => {}
            _ => return Err(format!("`{s}`: prefix length must be 0 to {max}")),
        }
    }
    Ok(())
}

/// A sysctl name as in `sysctl.d`: dotted (or slashed) path of `[A-Za-z0-9_-]` segments.
pub fn check_sysctl_name(s: &str) -> Result<(), String> {
    let segs: Vec<&str> = s.split(['.', '/']).collect();
    let ok = segs.len() >= 2
        && segs.iter().all(|seg| {
            !seg.is_empty()
                && seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == ':')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not a valid sysctl name (like net.ipv4.ip_forward)"
        ))
    }
}

/// A kernel module name.
pub fn check_module(s: &str) -> Result<(), String> {
    if s.starts_with('-') {
        return Err(format!(
            "`{s}` is not a kernel module name (it would reach modprobe as an option)"
        ));
    }
    if !s.is_empty()
        && s.len() <= 56
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Ok(())
    } else {
        Err(format!("`{s}` is not a valid kernel module name"))
    }
}

/// One kernel command-line argument: `flag` or `key=value`, nothing a shell or GRUB would expand.
pub fn check_kernel_arg(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("kernel argument must not be empty".into());
    }
    if let Some(c) = s
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "\"'`$\\;&|<>".contains(*c))
    {
        return Err(format!(
            "kernel argument `{s}` contains `{}`: one argument per list item, no quoting or shell characters",
            c.escape_default()
        ));
    }
    let key = s.split_once('=').map_or(s, |(k, _)| k);
    if key.is_empty() {
        return Err(format!("kernel argument `{s}` has an empty name"));
    }
    Ok(())
}

pub(super) fn check_line_value(s: &str) -> Result<(), String> {
    if s.contains(['\n', '\r', '#']) {
        Err("must be one line, without `#`".into())
    } else {
        Ok(())
    }
}

pub fn check_abs_path(s: &str) -> Result<(), String> {
    if !s.starts_with('/') {
        return Err(format!("`{s}` must be an absolute path"));
    }
    if s == "/" || s.ends_with('/') {
        return Err(format!("`{s}` must name a file, not a directory"));
    }
    if s[1..]
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!("`{s}` must be normalised: no `..`, `.` or `//`"));
    }
    if s.contains('\0') {
        return Err("path contains a NUL byte".into());
    }
    Ok(())
}

/// An octal mode string like "0644" or "640".
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if !(3..=4).contains(&digits.len()) || !digits.chars().all(|c| ('0'..='7').contains(&c)) {
        return Err(format!("`{s}` is not an octal mode like \"0644\""));
    }
    u32::from_str_radix(digits, 8).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_args() {
        assert!(check_kernel_arg("intel_iommu=on").is_ok());
        assert!(check_kernel_arg("quiet").is_ok());
        assert!(check_kernel_arg("a b").is_err());
        assert!(check_kernel_arg("x=$(reboot)").is_err());
        assert!(check_kernel_arg("=x").is_err());
    }

    #[test]
    fn paths_and_modes() {
        assert!(check_abs_path("/etc/x.conf").is_ok());
        for bad in ["etc/x", "/etc/../x", "/", "/etc/", "/a//b", "/a/./b"] {
            assert!(check_abs_path(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_mode("0644"), Ok(0o644));
        assert_eq!(parse_mode("750"), Ok(0o750));
        assert!(parse_mode("0844").is_err());
        assert!(parse_mode("64").is_err());
    }

    #[test]
    fn names() {
        assert!(check_sysctl_name("net.ipv4.ip_forward").is_ok());
        assert!(check_sysctl_name("net/ipv4/conf/eth0.100/rp_filter").is_ok());
        assert!(check_sysctl_name("ip_forward").is_err());
        assert!(check_sysctl_name("net..x").is_err());
        assert!(check_module("br_netfilter").is_ok());
        assert!(check_module("br netfilter").is_err());
        assert!(check_allow("10.0.0.0/8").is_ok());
        assert!(check_allow("fd00::/8").is_ok());
        assert!(check_allow("10.0.0.0/33").is_err());
        assert!(check_host("time.cloudflare.com").is_ok());
        assert!(check_host("bad host").is_err());
    }
}
