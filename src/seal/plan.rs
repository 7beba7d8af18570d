//! The planner: every path each operation would touch and its size, found without following a
//! symlink; what is left alone and why. Nothing is changed here, and nothing is opened but small
//! regular files (dpkg's lists, /etc/passwd, /etc/machine-id) through [`Root`]'s safe reads: a
//! FIFO, device or socket is inspected with `lstat` only.

use std::collections::{BTreeSet, HashSet};
use std::io::ErrorKind;
use std::path::Path;

use anyhow::{Context, Result};

use super::ops::OPERATIONS;
use crate::root::Root;

pub use crate::report::seal::{Action, Step};

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
    pub build_ssh_keys: Vec<String>,
    pub uninitialized_machine_id: bool,
    pub prometheus_textfile: Option<String>,
}

/// A `[seal]` setting or operation list that cannot be planned: a usage error (exit 2), unlike
/// an image the planner cannot read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

/// The directories dpkg's file lists name: never removed, only emptied. A list that cannot be
/// read (a FIFO, a device, too large) is an error: without it a package's directory could be
/// removed.
fn package_dirs(root: &Root) -> Result<HashSet<String>> {
    let mut dirs = HashSet::new();
    for name in root.list_dir("/var/lib/dpkg/info")? {
        if !name.ends_with(".list") {
            continue;
        }
        let abs = format!("/var/lib/dpkg/info/{name}");
        let text = root.read_string(&abs).with_context(|| {
            format!("reading dpkg's file list {abs} (seal needs it to know which directories packages own)")
        })?;
        if let Some(text) = text {
            dirs.extend(text.lines().map(|l| l.trim_end_matches('/').to_string()));
        }
    }
    Ok(dirs)
}

/// A FIFO, device or socket: never opened, never truncated.
fn special(m: &std::fs::Metadata) -> Option<&'static str> {
    let ft = m.file_type();
    (!ft.is_file() && !ft.is_dir() && !ft.is_symlink()).then(|| crate::saferead::kind_of(ft))
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
        // Several users may share a home (`/bin` of daemon, bin, sys): one step per path.
        if self.plan.steps.iter().any(|s| s.path == abs) {
            return;
        }
        // The seal's own record is never part of a seal (a textfile path could name it).
        if [super::MANIFEST, super::JOURNAL]
            .iter()
            .any(|r| Path::new(r).starts_with(abs))
        {
            self.skip(abs, "guestprep's seal record: kept");
            return;
        }
        self.plan.steps.push(Step {
            operation: self.op.to_string(),
            path: abs.to_string(),
            action,
            bytes,
            lines: Vec::new(),
        });
    }

    fn skip(&mut self, abs: &str, why: &str) {
        if self.plan.skipped.iter().any(|(p, _)| p == abs) {
            return;
        }
        self.plan.skipped.push((abs.to_string(), why.to_string()));
    }

    /// Removes `abs` whatever it is: a file or symlink is unlinked, a directory removed whole
    /// (or, if a package owns it, emptied).
    /// A step that takes the lines `which` selects out of the regular file `abs` (nothing when
    /// none does, or it is not a regular file: a link or a device is never edited).
    fn remove_lines(&mut self, abs: &str, which: impl Fn(&str) -> bool) -> Result<()> {
        if !self.parents_plain(abs)? {
            self.skip(abs, "a directory above it is a symlink");
            return Ok(());
        }
        let Some(m) = self.lstat(abs)? else {
            return Ok(());
        };
        if !m.is_file() {
            return Ok(());
        }
        let text = self.root.read_string(abs)?.unwrap_or_default();
        let lines: Vec<String> = text
            .lines()
            .filter(|l| which(l))
            .map(str::to_string)
            .collect();
        if lines.is_empty() {
            return Ok(());
        }
        let bytes = lines.iter().map(|l| l.len() as u64 + 1).sum();
        self.step(abs, Action::RemoveLines, bytes);
        if let Some(last) = self.plan.steps.last_mut()
            && last.path == abs
        {
            last.lines = lines;
        }
        Ok(())
    }

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
            Some(m) if m.is_dir() => self.skip(abs, "a directory, not a file: not truncated"),
            Some(m) => {
                if let Some(kind) = special(&m) {
                    self.skip(abs, &format!("a {kind}: not a regular file, not truncated"));
                }
            }
            None => {}
        }
        Ok(())
    }

    /// /etc/machine-id: emptied (or set to `uninitialized`) if it is a regular file; a FIFO,
    /// device or socket there is machine state that would hang the clone's boot, removed (unlinked,
    /// never opened): the clone then makes its machine-id at first boot, as for a missing file.
    /// /var/lib/dbus/machine-id is removed unless it is a symlink (Debian links it to
    /// /etc/machine-id) or a directory.
    fn machine_id(&mut self, uninitialized: bool) -> Result<()> {
        const ETC: &str = "/etc/machine-id";
        const DBUS: &str = "/var/lib/dbus/machine-id";
        match self.lstat(ETC)? {
            None => {}
            Some(m) if special(&m).is_some() => self.remove(ETC)?,
            Some(m) if uninitialized && m.is_file() => {
                let cur = self.root.read_limited(ETC, 64).ok().flatten();
                if !self.parents_plain(ETC)? {
                    self.skip(ETC, "a directory above it is a symlink");
                } else if cur.as_deref() != Some(b"uninitialized\n") {
                    self.step(ETC, Action::Uninitialize, m.len());
                }
            }
            // A symlink or a directory is reported there; a regular file emptied.
            Some(_) => self.truncate(ETC)?,
        }
        match self.lstat(DBUS)? {
            Some(m) if m.is_dir() => self.skip(DBUS, "a directory, not a machine-id file"),
            Some(m) if !m.file_type().is_symlink() => self.remove(DBUS)?,
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
    fn homes(&self, only: Option<&[String]>) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        let passwd = self
            .root
            .read_string("/etc/passwd")
            .context("reading /etc/passwd for the users' home directories")?;
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
        Ok(out)
    }
}

/// `syslog.1`, `dpkg.log.2.gz`, `messages-20260101`, `auth.log.old`: rotated copies.
pub(super) fn rotated(name: &str) -> bool {
    let ext = name.rsplit('.').next().unwrap_or("");
    ["gz", "xz", "bz2", "zst", "old"].contains(&ext)
        || (name.contains('.') && !ext.is_empty() && ext.chars().all(|c| c.is_ascii_digit()))
        || name
            .rsplit_once('-')
            .is_some_and(|(_, d)| d.len() == 8 && d.chars().all(|c| c.is_ascii_digit()))
}

/// Plans the chosen operations: every path and size, nothing changed.
pub fn plan(root: &Root, ops: &BTreeSet<&'static str>, s: &Settings) -> Result<Plan> {
    if ops.contains("build-ssh-keys") && s.build_ssh_keys.is_empty() {
        return Err(SettingsError(
            "the build-ssh-keys operation removes named keys only: name them (comment or SHA256: fingerprint) in [seal] build_ssh_keys".into(),
        ).into());
    }
    if ops.contains("user-ssh-keys") && s.user_ssh_keys.is_empty() {
        return Err(SettingsError(
            "the user-ssh-keys operation removes the authorized_keys of named users only: name them in [seal] user_ssh_keys".into(),
        ).into());
    }
    let mut p = Planner {
        root,
        owned: package_dirs(root)?,
        plan: Plan::default(),
        op: "",
    };
    for op in OPERATIONS.iter().filter(|o| ops.contains(o.name)) {
        p.op = op.name;
        match op.name {
            "ssh-hostkeys" => p.remove_matching("/etc/ssh", |n| n.starts_with("ssh_host_"))?,
            "machine-id" => p.machine_id(s.uninitialized_machine_id)?,
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
                // cloud-init clean --configs (GEN_NET_CONFIG_FILES, GEN_SSH_CONFIG_FILES, fstab):
                // a template's `ssh_pwauth` in 50-cloud-init.conf would survive into every clone.
                p.remove("/etc/NetworkManager/conf.d/99-cloud-init.conf")?;
                p.remove("/etc/NetworkManager/conf.d/30-cloud-init-ip6-addr-gen-mode.conf")?;
                p.remove("/etc/ssh/sshd_config.d/50-cloud-init.conf")?;
                p.remove_lines("/etc/fstab", |l| {
                    l.split_whitespace()
                        .nth(3)
                        .is_some_and(|o| o.split(',').any(|o| o == "comment=cloudconfig"))
                })?;
                // Its clean.d hooks are programs of the image: `cloud-init clean` runs them,
                // guestprep does not (offline they would run on the host). Said, not skipped
                // silently.
                for hook in root.list_dir("/etc/cloud/clean.d").unwrap_or_default() {
                    p.skip(
                        &format!("/etc/cloud/clean.d/{hook}"),
                        "a clean.d hook: run by `cloud-init clean`, not by guestprep",
                    );
                }
            }
            "logfiles" => p.logs("/var/log")?,
            "bash-history" => {
                for (_, home) in p.homes(None)? {
                    p.remove(&format!("{home}/.bash_history"))?;
                }
                // As virt-sysprep: every /home/*/.bash_history, of users /etc/passwd lists or not.
                p.children("/home", |p, child| {
                    // A home that is a symlink or a file is not followed.
                    if p.lstat(child)?.is_some_and(|m| m.is_dir()) {
                        p.remove(&format!("{child}/.bash_history"))?;
                    }
                    Ok(())
                })?;
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
                p.remove(crate::paths::REPORT)?;
                p.remove(crate::paths::APPLIED_STAMP)?;
                if let Some(t) = &s.prometheus_textfile {
                    p.remove(t)?;
                }
            }
            "net-hostname" => p.truncate("/etc/hostname")?,
            "kubernetes" => {
                for abs in crate::paths::KUBE_IDENTITY {
                    p.remove(abs)?;
                }
                for dir in crate::paths::KUBE_MANIFEST_DIRS {
                    p.remove_matching(dir, crate::paths::is_manifest)?;
                }
            }
            "user-ssh-keys" => {
                for u in &s.user_ssh_keys {
                    if p.homes(Some(std::slice::from_ref(u)))?.is_empty() {
                        return Err(SettingsError(format!(
                            "[seal] user_ssh_keys names `{u}`, who has no home directory in /etc/passwd"
                        ))
                        .into());
                    }
                }
                for (_, home) in p.homes(Some(&s.user_ssh_keys))? {
                    p.remove(&format!("{home}/.ssh/authorized_keys"))?;
                    p.remove(&format!("{home}/.ssh/authorized_keys2"))?;
                }
            }
            "build-ssh-keys" => {
                let mut homes: Vec<String> = p.homes(None)?.into_iter().map(|(_, h)| h).collect();
                homes.push("/root".to_string());
                homes.sort();
                homes.dedup();
                for home in homes {
                    for f in ["authorized_keys", "authorized_keys2"] {
                        p.remove_lines(&format!("{home}/.ssh/{f}"), |l| {
                            build_key(l, &s.build_ssh_keys)
                        })?;
                    }
                }
            }
            other => unreachable!("operation {other} has no planner"),
        }
    }
    Ok(p.plan)
}

/// Whether an authorized_keys line is one of the build's keys: its comment (the field after the
/// key) or its SHA256 fingerprint (of the decoded key, as `ssh-keygen -l` prints it) is named.
fn build_key(line: &str, names: &[String]) -> bool {
    use base64::Engine;
    use sha2::Digest;
    let l = line.trim();
    if l.is_empty() || l.starts_with('#') {
        return false;
    }
    let f: Vec<&str> = l.split_whitespace().collect();
    // [options] type base64 [comment]: the key is the first field that decodes after a type.
    let Some(i) = f
        .iter()
        .position(|w| w.starts_with("ssh-") || w.starts_with("ecdsa-") || w.starts_with("sk-"))
    else {
        return false;
    };
    let comment = f.get(i + 2..).map(|c| c.join(" ")).unwrap_or_default();
    if names.contains(&comment) {
        return true;
    }
    let Some(blob) = f
        .get(i + 1)
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
    else {
        return false;
    };
    let fp = format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(sha2::Sha256::digest(&blob))
    );
    names.contains(&fp)
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
