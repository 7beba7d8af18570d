//! `guestprep seal`: what makes a machine an individual, removed before it becomes a template.
//!
//! Owns the named operations (virt-sysprep's names where the meaning is the same), choosing them
//! (`defaults,-logfiles,+user-ssh-keys`), planning (every path and size, found without following
//! a symlink), carrying the plan out, and the seal manifest every clone's report carries. Safety
//! rules, all enforced here: a path is touched only if no directory above it in the root is a
//! symlink; a symlink is removed, never followed; a file is truncated only if it is a regular
//! file; a directory a package owns (dpkg's lists) is emptied, never removed.

use std::collections::{BTreeSet, HashSet};
use std::io::ErrorKind;
use std::path::Path;

use anyhow::{Context, Result, bail};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::root::Root;

/// Where the seal manifest is kept; every report of the template and its clones carries it.
pub const MANIFEST: &str = "/var/lib/guestprep/seal.json";

/// One named operation.
pub struct Operation {
    pub name: &'static str,
    /// In `defaults`.
    pub default: bool,
    pub about: &'static str,
}

/// Every operation, in the order they run.
pub const OPERATIONS: &[Operation] = &[
    Operation {
        name: "ssh-hostkeys",
        default: true,
        about: "SSH host keys (/etc/ssh/ssh_host_*); guestprep-ssh-keygen.service makes new ones before sshd",
    },
    Operation {
        name: "machine-id",
        default: true,
        about: "/etc/machine-id emptied (or `uninitialized`, [seal] machine_id) and /var/lib/dbus/machine-id removed: systemd makes a new ID at boot",
    },
    Operation {
        name: "cloud-init",
        default: true,
        about: "cloud-init's state and seed (/var/lib/cloud/*, as `cloud-init clean --logs --seed`), its logs, and the network configs it wrote (netplan, ifupdown, networkd, NetworkManager)",
    },
    Operation {
        name: "logfiles",
        default: true,
        about: "the journal's files, rotated logs under /var/log removed, the other files under /var/log (wtmp, btmp, lastlog too) truncated",
    },
    Operation {
        name: "bash-history",
        default: true,
        about: "~/.bash_history of root and every user in /etc/passwd",
    },
    Operation {
        name: "tmp-files",
        default: true,
        about: "what is in /tmp and /var/tmp (on a live system, not the systemd-private-* directories of running services)",
    },
    Operation {
        name: "package-manager-cache",
        default: true,
        about: "apt's downloaded packages (/var/cache/apt/archives) and its binary caches (/var/cache/apt/*.bin)",
    },
    Operation {
        name: "package-manager-lists",
        default: false,
        about: "apt's package lists (/var/lib/apt/lists): smaller template, but clones need `apt update` before installing",
    },
    Operation {
        name: "dhcp-client-state",
        default: true,
        about: "DHCP leases (dhclient, dhcpcd, NetworkManager)",
    },
    Operation {
        name: "random-seed",
        default: true,
        about: "the saved random seed (/var/lib/systemd/random-seed, /var/lib/urandom/random-seed): clones must not share it",
    },
    Operation {
        name: "crash-data",
        default: true,
        about: "crash dumps and core files (/var/crash, /var/lib/systemd/coredump)",
    },
    Operation {
        name: "guestprep-state",
        default: true,
        about: "guestprep's report, apply stamp and Prometheus textfile (the clone's daemon writes its own)",
    },
    Operation {
        name: "net-hostname",
        default: false,
        about: "/etc/hostname emptied: the clone takes its name from DHCP or cloud-init",
    },
    Operation {
        name: "user-ssh-keys",
        default: false,
        about: "~/.ssh/authorized_keys of the users named in [seal] user_ssh_keys (a temporary master key)",
    },
];

/// The `after_help` of `guestprep seal`: every operation, with its default (the man page's
/// OPERATIONS section).
pub fn operations_help() -> String {
    let mut s = String::from("Operations:\n");
    for op in OPERATIONS {
        s.push_str(&format!(
            "  {} ({})  {}\n",
            op.name,
            if op.default { "default" } else { "off" },
            op.about
        ));
    }
    s
}

/// Checks one entry of an operation list (`defaults`, `all`, `NAME`, `+NAME`, `-NAME`).
pub fn check_spec(entry: &str) -> Result<(), String> {
    let name = entry.trim_start_matches(['+', '-']);
    if (entry == name && matches!(name, "defaults" | "default" | "all"))
        || OPERATIONS.iter().any(|o| o.name == name)
    {
        return Ok(());
    }
    let names: Vec<&str> = OPERATIONS.iter().map(|o| o.name).collect();
    let mut m = format!("unknown seal operation `{name}`");
    if let Some(c) = crate::policy::closest(name, &names) {
        m.push_str(&format!(" (did you mean `{c}`?)"));
    }
    m.push_str("; `guestprep seal --list` shows them");
    Err(m)
}

/// The operations a list selects, applied left to right from nothing (as virt-sysprep's
/// `--operations`); an empty list means `defaults`.
pub fn select(spec: &[String]) -> Result<BTreeSet<&'static str>, String> {
    let mut on = BTreeSet::new();
    if spec.is_empty() {
        on.extend(OPERATIONS.iter().filter(|o| o.default).map(|o| o.name));
    }
    for entry in spec {
        check_spec(entry)?;
        match entry.as_str() {
            "defaults" | "default" => {
                on.extend(OPERATIONS.iter().filter(|o| o.default).map(|o| o.name))
            }
            "all" => on.extend(OPERATIONS.iter().map(|o| o.name)),
            e => {
                let name = e.trim_start_matches(['+', '-']);
                let op = OPERATIONS.iter().find(|o| o.name == name).expect("checked");
                if e.starts_with('-') {
                    on.remove(op.name);
                } else {
                    on.insert(op.name);
                }
            }
        }
    }
    Ok(on)
}

/// The chosen operations in the order they run (the order of [`OPERATIONS`]).
pub fn ordered(ops: &BTreeSet<&'static str>) -> Vec<&'static str> {
    OPERATIONS
        .iter()
        .map(|o| o.name)
        .filter(|n| ops.contains(n))
        .collect()
}

/// Splits `--operations a,b,-c` into entries.
pub fn split_spec(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(String::from)
        .collect()
}

/// What is done to one path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// A file or a symlink, unlinked.
    Remove,
    /// A directory and everything in it (none of it a package's directory).
    RemoveTree,
    /// A regular file cut to zero bytes (owner and mode kept).
    Truncate,
    /// /etc/machine-id set to `uninitialized`.
    Uninitialize,
}

/// One path of the plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Step {
    pub operation: String,
    pub path: String,
    pub action: Action,
    /// Bytes freed (for a tree, its regular files').
    pub bytes: u64,
}

/// Everything one seal would do, and what it leaves alone.
#[derive(Debug, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Paths left alone, and why (a symlinked directory above them, a package's directory).
    pub skipped: Vec<(String, String)>,
}

/// `[seal]` settings the operations need.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    pub user_ssh_keys: Vec<String>,
    pub uninitialized_machine_id: bool,
    pub prometheus_textfile: Option<String>,
}

/// The seal manifest, `/var/lib/guestprep/seal.json`, also the report's `seal` field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Random, one per seal: the template a clone came from.
    pub seal_id: String,
    pub sealed_at: String,
    pub guestprep_version: String,
    /// The policy the template was compliant with when sealed.
    pub policy_digest: String,
    /// The template's host name before the seal.
    pub template_hostname: String,
    /// The template's machine-id as guestprep's application-specific ID (HMAC-SHA256 keyed by
    /// the machine-id, as `sd_id128_get_machine_app_specific()` makes it): the same template
    /// always gives the same value, which does not reveal the machine-id (machine-id(5) says not
    /// to expose it). Empty when the template had none.
    pub template_machine_id: String,
    pub operations: Vec<String>,
    /// True when sealed with `--force` although not compliant.
    pub forced: bool,
    pub removed: Vec<Step>,
}

/// guestprep's application ID for `sd_id128_get_machine_app_specific()`.
const APP_ID: [u8; 16] = [
    0x6f, 0x4c, 0x2a, 0x1e, 0x9b, 0x7d, 0x4e, 0x3f, 0x8a, 0x5c, 0x0d, 0x2b, 0x1e, 0x7f, 0x9a, 0x43,
];

/// The application-specific ID of a machine-id (32 hex digits), as systemd computes it:
/// HMAC-SHA256 with the machine-id's 16 bytes as key over the application ID, the first 16 bytes
/// made a version-4 UUID. Empty for an empty or malformed machine-id.
pub fn app_specific_machine_id(machine_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let Ok(key) = hex::decode(machine_id) else {
        return String::new();
    };
    if key.len() != 16 {
        return String::new();
    }
    // HMAC (RFC 2104) with SHA-256's 64-byte block.
    let mut k = [0u8; 64];
    k[..16].copy_from_slice(&key);
    let pad = |b: u8| k.map(|x| x ^ b);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(APP_ID)
        .finalize();
    let mac = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&mac[..16]);
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    hex::encode(id)
}

impl Manifest {
    pub fn load(root: &Root) -> Option<Manifest> {
        let text = root.read(MANIFEST).ok()??;
        match serde_json::from_slice(&text) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!("{MANIFEST} is not a seal manifest: {e}");
                None
            }
        }
    }
}

/// The directories dpkg's file lists name: never removed, only emptied.
fn package_dirs(root: &Root) -> HashSet<String> {
    let mut dirs = HashSet::new();
    for name in root.list_dir("/var/lib/dpkg/info").unwrap_or_default() {
        if !name.ends_with(".list") {
            continue;
        }
        if let Ok(Some(text)) = root.read_string(&format!("/var/lib/dpkg/info/{name}")) {
            dirs.extend(text.lines().map(|l| l.trim_end_matches('/').to_string()));
        }
    }
    dirs
}

/// The planner: finds the paths of each operation.
struct Planner<'a> {
    root: &'a Root,
    owned: HashSet<String>,
    plan: Plan,
    op: &'static str,
}

impl Planner<'_> {
    /// Whether no directory above `abs` is a symlink (so acting on `abs` stays where it says).
    fn parents_plain(&self, abs: &str) -> Result<bool> {
        let parent = Path::new(abs).parent().unwrap_or(Path::new("/"));
        let parent = parent.to_str().unwrap_or("/");
        Ok(self.root.resolve(parent)? == self.root.path(parent)?)
    }

    fn lstat(&self, abs: &str) -> Result<Option<std::fs::Metadata>> {
        match std::fs::symlink_metadata(self.root.path(abs)?) {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::NotADirectory => {
                Ok(None)
            }
            Err(e) => Err(e).with_context(|| format!("inspecting {abs}")),
        }
    }

    fn step(&mut self, abs: &str, action: Action, bytes: u64) {
        self.plan.steps.push(Step {
            operation: self.op.to_string(),
            path: abs.to_string(),
            action,
            bytes,
        });
    }

    fn skip(&mut self, abs: &str, why: &str) {
        self.plan.skipped.push((abs.to_string(), why.to_string()));
    }

    /// Removes `abs` whatever it is: a file or symlink is unlinked, a directory removed whole
    /// (or, if a package owns it, emptied).
    fn remove(&mut self, abs: &str) -> Result<()> {
        if !self.parents_plain(abs)? {
            self.skip(abs, "a directory above it is a symlink");
            return Ok(());
        }
        let Some(m) = self.lstat(abs)? else {
            return Ok(());
        };
        if m.is_dir() {
            if self.owned.contains(abs) {
                return self.empty(abs);
            }
            let bytes = self.tree_bytes(abs)?;
            self.step(abs, Action::RemoveTree, bytes);
        } else {
            let bytes = if m.is_file() { m.len() } else { 0 };
            self.step(abs, Action::Remove, bytes);
        }
        Ok(())
    }

    /// Removes what is in a directory, keeping the directory.
    fn empty(&mut self, dir: &str) -> Result<()> {
        self.children(dir, |p, child| p.remove(child))
    }

    /// Calls `f` on each entry of `dir` (if `dir` is a real directory, not a symlink to one).
    fn children(
        &mut self,
        dir: &str,
        mut f: impl FnMut(&mut Self, &str) -> Result<()>,
    ) -> Result<()> {
        if !self.parents_plain(&format!("{}/x", dir.trim_end_matches('/')))? {
            self.skip(dir, "it or a directory above it is a symlink");
            return Ok(());
        }
        if !self.lstat(dir)?.is_some_and(|m| m.is_dir()) {
            return Ok(());
        }
        for name in self.root.list_dir(dir)? {
            f(self, &format!("{}/{name}", dir.trim_end_matches('/')))?;
        }
        Ok(())
    }

    /// Removes the entries of `dir` whose names `keep` accepts.
    fn remove_matching(&mut self, dir: &str, keep: impl Fn(&str) -> bool) -> Result<()> {
        self.children(dir, |p, child| {
            let name = child.rsplit('/').next().unwrap_or("");
            if keep(name) { p.remove(child) } else { Ok(()) }
        })
    }

    /// Truncates a regular file that is not already empty.
    fn truncate(&mut self, abs: &str) -> Result<()> {
        if !self.parents_plain(abs)? {
            self.skip(abs, "a directory above it is a symlink");
            return Ok(());
        }
        match self.lstat(abs)? {
            Some(m) if m.is_file() && m.len() > 0 => self.step(abs, Action::Truncate, m.len()),
            Some(m) if m.file_type().is_symlink() => {
                self.skip(abs, "a symlink: not followed, not truncated")
            }
            _ => {}
        }
        Ok(())
    }

    fn tree_bytes(&self, abs: &str) -> Result<u64> {
        let mut total = 0;
        let mut todo = vec![self.root.path(abs)?];
        while let Some(p) = todo.pop() {
            let m = std::fs::symlink_metadata(&p)
                .with_context(|| format!("inspecting {}", p.display()))?;
            if m.is_dir() {
                for e in
                    std::fs::read_dir(&p).with_context(|| format!("listing {}", p.display()))?
                {
                    todo.push(e?.path());
                }
            } else if m.is_file() {
                total += m.len();
            }
        }
        Ok(total)
    }

    /// /var/log, recursively: journal files and rotated logs removed, other files truncated.
    fn logs(&mut self, dir: &str) -> Result<()> {
        self.children(dir, |p, child| {
            let Some(m) = p.lstat(child)? else {
                return Ok(());
            };
            let name = child.rsplit('/').next().unwrap_or("");
            if m.is_dir() {
                p.logs(child)
            } else if rotated(name) || name.ends_with(".journal") || name.ends_with(".journal~") {
                p.remove(child)
            } else if m.file_type().is_symlink() {
                p.skip(child, "a symlink: not followed, not truncated");
                Ok(())
            } else {
                p.truncate(child)
            }
        })
    }

    /// Home directories from /etc/passwd (and /root), for users with a real one.
    fn homes(&self, only: Option<&[String]>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let passwd = self.root.read_string("/etc/passwd").ok().flatten();
        for line in passwd.as_deref().unwrap_or("").lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 || !f[5].starts_with('/') || f[5] == "/" {
                continue;
            }
            if only.is_some_and(|users| !users.iter().any(|u| u == f[0])) {
                continue;
            }
            out.push((f[0].to_string(), f[5].trim_end_matches('/').to_string()));
        }
        if only.is_none() && !out.iter().any(|(_, h)| h == "/root") {
            out.push(("root".into(), "/root".into()));
        }
        out
    }
}

/// `syslog.1`, `dpkg.log.2.gz`, `messages-20260101`, `auth.log.old`: rotated copies.
fn rotated(name: &str) -> bool {
    let ext = name.rsplit('.').next().unwrap_or("");
    ["gz", "xz", "bz2", "zst", "old"].contains(&ext)
        || (name.contains('.') && !ext.is_empty() && ext.chars().all(|c| c.is_ascii_digit()))
        || name
            .rsplit_once('-')
            .is_some_and(|(_, d)| d.len() == 8 && d.chars().all(|c| c.is_ascii_digit()))
}

/// Plans the chosen operations: every path and size, nothing changed.
pub fn plan(root: &Root, ops: &BTreeSet<&'static str>, s: &Settings) -> Result<Plan> {
    if ops.contains("user-ssh-keys") && s.user_ssh_keys.is_empty() {
        bail!(
            "the user-ssh-keys operation removes the authorized_keys of named users only: name them in [seal] user_ssh_keys"
        );
    }
    let mut p = Planner {
        root,
        owned: package_dirs(root),
        plan: Plan::default(),
        op: "",
    };
    for op in OPERATIONS.iter().filter(|o| ops.contains(o.name)) {
        p.op = op.name;
        match op.name {
            "ssh-hostkeys" => p.remove_matching("/etc/ssh", |n| n.starts_with("ssh_host_"))?,
            "machine-id" => {
                if s.uninitialized_machine_id {
                    let cur = root.read_string("/etc/machine-id")?.unwrap_or_default();
                    if cur != "uninitialized\n" && p.parents_plain("/etc/machine-id")? {
                        p.step("/etc/machine-id", Action::Uninitialize, cur.len() as u64);
                    }
                } else {
                    p.truncate("/etc/machine-id")?;
                }
                // Debian links it to /etc/machine-id: only a copy of its own is removed.
                if p.lstat("/var/lib/dbus/machine-id")?
                    .is_some_and(|m| m.is_file())
                {
                    p.remove("/var/lib/dbus/machine-id")?;
                }
            }
            "cloud-init" => {
                p.empty("/var/lib/cloud")?;
                for f in ["/var/log/cloud-init.log", "/var/log/cloud-init-output.log"] {
                    p.remove(f)?;
                }
                p.remove("/etc/netplan/50-cloud-init.yaml")?;
                p.remove_matching("/etc/network/interfaces.d", |n| {
                    n.starts_with("50-cloud-init")
                })?;
                p.remove_matching("/etc/systemd/network", |n| n.starts_with("10-cloud-init-"))?;
                p.remove_matching("/etc/NetworkManager/system-connections", |n| {
                    n.starts_with("cloud-init-")
                })?;
            }
            "logfiles" => p.logs("/var/log")?,
            "bash-history" => {
                for (_, home) in p.homes(None) {
                    p.remove(&format!("{home}/.bash_history"))?;
                }
            }
            "tmp-files" => {
                let live = root.is_live();
                for dir in ["/tmp", "/var/tmp"] {
                    p.remove_matching(dir, |n| !(live && n.starts_with("systemd-private-")))?;
                }
            }
            "package-manager-cache" => {
                p.remove_matching("/var/cache/apt/archives", |n| n.ends_with(".deb"))?;
                p.empty("/var/cache/apt/archives/partial")?;
                p.remove_matching("/var/cache/apt", |n| n.ends_with(".bin"))?;
            }
            "package-manager-lists" => {
                p.remove_matching("/var/lib/apt/lists", |n| n != "lock" && n != "partial")?;
                p.empty("/var/lib/apt/lists/partial")?;
            }
            "dhcp-client-state" => {
                p.remove_matching("/var/lib/dhcp", |n| n.contains(".lease"))?;
                p.remove_matching("/var/lib/dhclient", |n| n.contains(".lease"))?;
                p.remove_matching("/var/lib/dhcpcd", |n| n.contains(".lease"))?;
                p.remove_matching("/var/lib/NetworkManager", |n| n.contains(".lease"))?;
            }
            "random-seed" => {
                p.remove("/var/lib/systemd/random-seed")?;
                p.remove("/var/lib/urandom/random-seed")?;
            }
            "crash-data" => {
                p.empty("/var/crash")?;
                p.empty("/var/lib/systemd/coredump")?;
            }
            "guestprep-state" => {
                p.remove(crate::agent::REPORT_PATH)?;
                p.remove(crate::agent::APPLIED_STAMP)?;
                if let Some(t) = &s.prometheus_textfile {
                    p.remove(t)?;
                }
            }
            "net-hostname" => p.truncate("/etc/hostname")?,
            "user-ssh-keys" => {
                for u in &s.user_ssh_keys {
                    if p.homes(Some(std::slice::from_ref(u))).is_empty() {
                        bail!(
                            "[seal] user_ssh_keys names `{u}`, who has no home directory in /etc/passwd"
                        );
                    }
                }
                for (_, home) in p.homes(Some(&s.user_ssh_keys)) {
                    p.remove(&format!("{home}/.ssh/authorized_keys"))?;
                    p.remove(&format!("{home}/.ssh/authorized_keys2"))?;
                }
            }
            other => unreachable!("operation {other} has no planner"),
        }
    }
    Ok(p.plan)
}

/// Carries out a plan. Each step re-checks what it acts on (no symlink above it; a truncated file
/// still a regular file) so nothing is followed even if the tree changed since planning.
pub fn execute(root: &Root, plan: &Plan) -> Result<()> {
    for s in &plan.steps {
        let host = root.path(&s.path)?;
        let parent = Path::new(&s.path)
            .parent()
            .and_then(Path::to_str)
            .unwrap_or("/");
        if root.resolve(parent)? != root.path(parent)? {
            bail!("{}: a directory above it became a symlink; stopped", s.path);
        }
        let gone = |e: &std::io::Error| e.kind() == ErrorKind::NotFound;
        match s.action {
            Action::Remove => match std::fs::remove_file(&host) {
                Err(e) if !gone(&e) => {
                    return Err(e).with_context(|| format!("removing {}", s.path));
                }
                _ => {}
            },
            Action::RemoveTree => match std::fs::remove_dir_all(&host) {
                Err(e) if !gone(&e) => {
                    return Err(e).with_context(|| format!("removing {}", s.path));
                }
                _ => {}
            },
            Action::Truncate => {
                truncate(&host).with_context(|| format!("truncating {}", s.path))?
            }
            Action::Uninitialize => {
                crate::fsutil::write_atomic(root, &s.path, b"uninitialized\n", Some(0o444))?;
            }
        }
    }
    // The directories touched, synced: the seal survives the power-off that follows.
    let dirs: BTreeSet<&str> = plan
        .steps
        .iter()
        .filter_map(|s| Path::new(&s.path).parent().and_then(Path::to_str))
        .collect();
    for d in dirs {
        if let Ok(f) = std::fs::File::open(root.path(d)?) {
            let _ = f.sync_all();
        }
    }
    Ok(())
}

/// Cuts a regular file to zero bytes in place (one ftruncate: atomic), never through a symlink.
fn truncate(host: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = match std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(host)
    {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let m = f.metadata()?;
    if !m.is_file() {
        bail!("not a regular file any more");
    }
    f.set_len(0)?;
    f.sync_all()?;
    Ok(())
}

/// A random id for a seal (128 bits from the kernel, hex).
pub fn new_seal_id() -> Result<String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("reading /dev/urandom")?;
    Ok(hex::encode(b))
}

/// Human size: `2.6 kB`, `14 MB`.
pub fn size(bytes: u64) -> String {
    match bytes {
        b if b < 1000 => format!("{b} B"),
        b if b < 1_000_000 => format!("{:.1} kB", b as f64 / 1e3),
        b if b < 1_000_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        b => format!("{:.1} GB", b as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_id_is_hashed_like_systemd() {
        // The expected value comes from an independent HMAC (Python's hmac module): key the
        // machine-id's 16 bytes, message the application ID, version and variant bits set.
        let id = app_specific_machine_id("0123456789abcdef0123456789abcdef");
        assert_eq!(id.len(), 32);
        assert!(!id.contains("0123456789abcdef"));
        assert_eq!(&id[12..13], "4", "UUID version 4");
        assert!("89ab".contains(&id[16..17]), "RFC 4122 variant");
        assert_eq!(id, "76b56bea78ec43faafb1c3ad97d5dd4b");
        assert_eq!(app_specific_machine_id(""), "");
        assert_eq!(app_specific_machine_id("uninitialized"), "");
    }

    #[test]
    fn selection_reads_left_to_right_like_virt_sysprep() {
        let d = select(&[]).unwrap();
        assert!(d.contains("ssh-hostkeys") && !d.contains("user-ssh-keys"));
        let s = select(&split_spec("defaults,-logfiles,+user-ssh-keys")).unwrap();
        assert!(!s.contains("logfiles") && s.contains("user-ssh-keys"));
        assert!(s.contains("machine-id"));
        let only = select(&split_spec("ssh-hostkeys")).unwrap();
        assert_eq!(only.into_iter().collect::<Vec<_>>(), ["ssh-hostkeys"]);
        assert_eq!(select(&split_spec("all")).unwrap().len(), OPERATIONS.len());
        let e = select(&split_spec("defaults,-logfile")).unwrap_err();
        assert!(e.contains("did you mean `logfiles`"), "{e}");
        assert!(select(&split_spec("+defaults")).is_err());
    }

    #[test]
    fn rotated_names() {
        for n in [
            "syslog.1",
            "dpkg.log.2.gz",
            "messages-20260101",
            "auth.log.old",
            "x.xz",
        ] {
            assert!(rotated(n), "{n}");
        }
        for n in ["syslog", "wtmp", "dpkg.log", "lastlog", "alternatives.log"] {
            assert!(!rotated(n), "{n}");
        }
    }

    #[test]
    fn help_lists_every_operation_with_its_default() {
        let h = operations_help();
        for op in OPERATIONS {
            let d = if op.default { "default" } else { "off" };
            assert!(h.contains(&format!("  {} ({d})  ", op.name)), "{}", op.name);
        }
    }
}
