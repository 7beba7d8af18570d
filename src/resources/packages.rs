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
use crate::packages::{deb, dkmsconf, download, dpkg};
use crate::policy::{DebSpec, DkmsSpec, Packages};
use crate::report::Status;
use crate::root::Root;

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
        .filter(|k| root.exists(&format!("/usr/lib/modules/{k}/build")))
        .collect()
}

/// `msg` with the reason an offline root is not changed here appended, if it is not.
fn with_offline_note(sys: &System, msg: String) -> String {
    match cannot_change(sys) {
        Some(why) => format!("{msg}; {why}"),
        None => msg,
    }
}

/// Why an offline root cannot be changed here, or None.
pub(crate) fn cannot_change(sys: &System) -> Option<String> {
    (!sys.is_live() && !sys.chroot).then(|| {
        format!(
            "package actions on an {} run only with `apply --chroot`",
            sys.describe()
        )
    })
}

pub struct AptInstall {
    pub name: String,
    /// The whole `install` list: the first missing package installs every missing one, in one call.
    pub all: Vec<String>,
}

impl Resource for AptInstall {
    fn id(&self) -> String {
        format!("package:{}", self.name)
    }

    fn kind(&self) -> &'static str {
        "packages"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let db = dpkg::read(sys)?;
        let st = db.get(&self.name);
        let actual = json!({"installed": st.is_some_and(|s| s.installed()), "version": st.and_then(|s| s.version.clone())});
        let expected = json!({"installed": true});
        if st.is_some_and(|s| s.installed()) {
            return Ok(Observation::new(Status::Compliant, expected, actual, ""));
        }
        let missing: Vec<String> = self
            .all
            .iter()
            .filter(|n| !db.get(*n).is_some_and(|s| s.installed()))
            .cloned()
            .collect();
        let msg = with_offline_note(sys, "not installed".to_string());
        let mut obs = Observation::new(Status::Drift, expected, actual, msg);
        obs.data = json!({"missing": missing, "haveLists": have_apt_lists(sys)?});
        Ok(obs)
    }

    fn plan(&self, sys: &System, obs: &Observation) -> Vec<Change> {
        if cannot_change(sys).is_some() {
            return Vec::new();
        }
        let missing: Vec<String> =
            serde_json::from_value(obs.data["missing"].clone()).unwrap_or_default();
        let mut plan = Vec::new();
        if obs.data["haveLists"] == json!(false) {
            plan.push(Change::Run {
                argv: apt_get(&["update"]),
            });
        }
        // `--`: nothing from the policy is read as an option (names are validated too).
        let mut args = vec!["install", "--"];
        args.extend(missing.iter().map(String::as_str));
        plan.push(Change::Run {
            argv: apt_get(&args),
        });
        plan
    }
}

/// `package-absent:NAME`: not installed (`remove`), or not even its configuration files left
/// (`purge`: dpkg's `config-files` state counts as present). The first one present removes every
/// present one of its list in one `apt-get` call.
pub struct AptRemove {
    pub name: String,
    pub purge: bool,
    pub all: Vec<String>,
}

impl AptRemove {
    fn present(&self, st: Option<&dpkg::PkgStatus>) -> bool {
        st.is_some_and(|s| {
            s.installed()
                || s.state == "half-installed"
                || s.state == "unpacked"
                || s.state == "half-configured"
                || (self.purge && s.state == "config-files")
        })
    }
}

impl Resource for AptRemove {
    fn id(&self) -> String {
        format!("package-absent:{}", self.name)
    }

    fn kind(&self) -> &'static str {
        "packages"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let db = dpkg::read(sys)?;
        let st = db.get(&self.name);
        let verb = if self.purge { "purged" } else { "removed" };
        let expected = json!({verb: true});
        let actual = json!({"state": st.map(|s| s.state.clone()), "version": st.and_then(|s| s.version.clone())});
        if !self.present(st) {
            return Ok(Observation::new(Status::Compliant, expected, actual, ""));
        }
        let what = match st.map(|s| s.state.as_str()) {
            Some("config-files") => "removed, but its configuration files are left".to_string(),
            Some(state) => format!(
                "{state} ({})",
                st.and_then(|s| s.version.as_deref()).unwrap_or("?")
            ),
            None => String::new(),
        };
        let present: Vec<String> = self
            .all
            .iter()
            .filter(|n| self.present(db.get(*n)))
            .cloned()
            .collect();
        let mut obs = Observation::new(
            Status::Drift,
            expected,
            actual,
            with_offline_note(sys, what),
        );
        obs.data = json!({"present": present});
        Ok(obs)
    }

    fn plan(&self, sys: &System, obs: &Observation) -> Vec<Change> {
        if cannot_change(sys).is_some() {
            return Vec::new();
        }
        let present: Vec<String> =
            serde_json::from_value(obs.data["present"].clone()).unwrap_or_default();
        let mut args = vec![if self.purge { "purge" } else { "remove" }, "--"];
        args.extend(present.iter().map(String::as_str));
        vec![Change::Run {
            argv: apt_get(&args),
        }]
    }
}

/// Whether apt has package lists (a fresh cloud image may have none: `apt-get update` first).
fn have_apt_lists(sys: &System) -> Result<bool> {
    Ok(sys
        .list_dir("/var/lib/apt/lists")?
        .iter()
        .any(|n| n.ends_with("_Packages") || n.contains("_Packages.")))
}

pub struct AptHold {
    pub name: String,
    /// A `[[packages.deb]]`'s DKMS module and the kernels it is built for: when its build failed
    /// for every one of them, the package is left installed but not held (a hold would keep a
    /// driver that works nowhere from being replaced by an upgrade that might).
    pub unless_failed: Option<(DkmsSpec, Vec<String>)>,
}

/// True when a DKMS module's source is installed, built for none of `kernels`, and its build
/// failed (a record under [`crate::paths::DKMS_FAILED_DIR`]) for at least one.
fn built_nowhere(sys: &System, k: &DkmsSpec, kernels: &[String]) -> Result<bool> {
    if kernels.is_empty()
        || !sys
            .root
            .exists(&format!("/usr/src/{}-{}/dkms.conf", k.module, k.version))
    {
        return Ok(false);
    }
    let mut failed = false;
    for kernel in kernels {
        let base = format!("/var/lib/dkms/{}/{}/{kernel}", k.module, k.version);
        for arch in sys.list_dir(&base)? {
            if sys
                .list_dir(&format!("{base}/{arch}/module"))?
                .iter()
                .any(|f| f.contains(".ko"))
            {
                return Ok(false);
            }
        }
        failed |= sys.exists(&format!(
            "{}/{}_{}_{kernel}.json",
            crate::paths::DKMS_FAILED_DIR,
            k.module,
            k.version
        ));
    }
    Ok(failed)
}

impl Resource for AptHold {
    fn id(&self) -> String {
        format!("package-hold:{}", self.name)
    }

    fn kind(&self) -> &'static str {
        "packages"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let db = dpkg::read(sys)?;
        let held = db.get(&self.name).is_some_and(|s| s.held());
        let expected = json!({"held": true});
        let actual =
            json!({"held": held, "installed": db.get(&self.name).is_some_and(|s| s.installed())});
        if let Some((k, kernels)) = &self.unless_failed
            && db.get(&self.name).is_some_and(|s| s.installed())
            && built_nowhere(sys, k, kernels)?
        {
            let version = db
                .get(&self.name)
                .and_then(|s| s.version.clone())
                .unwrap_or_default();
            let what = format!(
                "{} {version} is left installed, not held: its DKMS module {}/{} built for no installed kernel (the dkms: items say why)",
                self.name, k.module, k.version
            );
            let expected = json!({"held": false});
            if !held {
                return Ok(Observation::new(Status::Skipped, expected, actual, what));
            }
            let mut obs = Observation::new(
                Status::Drift,
                expected,
                actual,
                with_offline_note(sys, format!("{what}; apt-mark unhold")),
            );
            obs.data = json!({"unhold": self.name});
            return Ok(obs);
        }
        if held {
            return Ok(Observation::new(Status::Compliant, expected, actual, ""));
        }
        // Holding keeps an installed version; a package that is not installed (a .deb whose
        // install failed or was refused, a kernel meta package absent here) has none to keep, and
        // its install item already says why.
        if !db.get(&self.name).is_some_and(|s| s.installed()) {
            return Ok(Observation::new(
                Status::Skipped,
                expected,
                actual,
                format!("{} is not installed: nothing to hold", self.name),
            ));
        }
        let msg = with_offline_note(sys, "not held".to_string());
        let mut obs = Observation::new(Status::Drift, expected, actual, msg);
        obs.data = json!({"hold": self.name});
        Ok(obs)
    }

    fn plan(&self, sys: &System, obs: &Observation) -> Vec<Change> {
        if cannot_change(sys).is_some() {
            return Vec::new();
        }
        if let Some(name) = obs.data["unhold"].as_str() {
            return vec![Change::Run {
                argv: vec!["apt-mark".into(), "unhold".into(), "--".into(), name.into()],
            }];
        }
        // One package per item: a held package's hold never depends on another's item.
        vec![Change::Run {
            argv: vec![
                "apt-mark".into(),
                "hold".into(),
                "--".into(),
                self.name.clone(),
            ],
        }]
    }
}

pub struct DebPackage {
    pub spec: DebSpec,
}

impl DebPackage {
    fn cache_path(&self) -> String {
        format!("{CACHE_DIR}/{}_{}.deb", self.spec.name, self.spec.version)
    }

    /// Where guestprep records which .deb it installed (its sha256): a site's patched build of
    /// the same version is a different package, and only this tells them apart.
    fn receipt_path(&self) -> String {
        format!("{}/{}.json", crate::paths::DEB_RECEIPTS_DIR, self.spec.name)
    }

    /// The sha256 of the .deb guestprep installed at this version, if it did.
    fn installed_sha(&self, sys: &System, version: &str) -> Result<Option<String>> {
        let Some(text) = sys.read_string(&self.receipt_path())? else {
            return Ok(None);
        };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        Ok((v["version"] == version)
            .then(|| v["sha256"].as_str().map(str::to_string))
            .flatten())
    }
}

/// Refuses a `.deb` whose DKMS module no installed kernel may build.
pub fn preflight(info: &deb::DebInfo, spec: &DebSpec, kernels: &[String]) -> Result<()> {
    if info.package.as_deref() != Some(spec.name.as_str())
        || info.version.as_deref() != Some(spec.version.as_str())
    {
        bail!(
            "the downloaded file is {} {}, not {} {} as the policy says",
            info.package.as_deref().unwrap_or("?"),
            info.version.as_deref().unwrap_or("?"),
            spec.name,
            spec.version
        );
    }
    let Some((conf_path, conf)) = &info.dkms else {
        return Ok(());
    };
    if kernels.is_empty() {
        bail!(
            "{} {} is a DKMS package but no installed kernel has headers (install linux-headers-*)",
            spec.name,
            spec.version
        );
    }
    let mut allowed = Vec::new();
    for k in kernels {
        if dkmsconf::kernel_allowed(conf, k).map_err(anyhow::Error::msg)? {
            allowed.push(k.clone());
        }
    }
    if allowed.is_empty() {
        bail!(
            "refusing to install {} {}: its {conf_path} says BUILD_EXCLUSIVE_KERNEL=\"{}\", which none of the installed kernels \
             with headers ({}) matches, so DKMS would silently skip the build. Pin a release that supports these kernels, \
             or install a matching kernel first",
            spec.name,
            spec.version,
            conf.build_exclusive_kernel.as_deref().unwrap_or(""),
            kernels.join(", ")
        );
    }
    Ok(())
}

impl Resource for DebPackage {
    fn id(&self) -> String {
        format!("deb:{}", self.spec.name)
    }

    fn kind(&self) -> &'static str {
        "packages"
    }

    fn managed_paths(&self) -> Vec<String> {
        vec![self.cache_path()]
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let db = dpkg::read(sys)?;
        let st = db.get(&self.spec.name);
        let installed = st.filter(|s| s.installed()).and_then(|s| s.version.clone());
        let held = st.is_some_and(|s| s.held());
        let expected =
            json!({"version": self.spec.version, "sha256": self.spec.sha256, "url": self.spec.url});
        let from = match &installed {
            Some(v) => self.installed_sha(sys, v)?,
            None => None,
        };
        let actual = json!({"version": installed, "held": held, "sha256": from});
        let (status, mut msg) = match &installed {
            Some(v) if *v == self.spec.version => match &from {
                Some(sha) if *sha != self.spec.sha256 => (
                    Status::Drift,
                    format!(
                        "{v} installed from another .deb (sha256 {}…), the policy pins {}…: reinstalled from it",
                        &sha[..sha.len().min(12)],
                        &self.spec.sha256[..self.spec.sha256.len().min(12)]
                    ),
                ),
                _ => (Status::Compliant, String::new()),
            },
            Some(v) => (
                Status::Drift,
                format!("version {v} installed, want {}", self.spec.version),
            ),
            None => (Status::Drift, "not installed".to_string()),
        };
        if status == Status::Drift {
            msg = with_offline_note(sys, msg);
        }
        Ok(Observation::new(status, expected, actual, msg))
    }

    fn plan(&self, sys: &System, obs: &Observation) -> Vec<Change> {
        if obs.status != Status::Drift || cannot_change(sys).is_some() {
            return Vec::new();
        }
        let path = self.cache_path();
        vec![
            Change::Download {
                url: self.spec.url.clone(),
                sha256: self.spec.sha256.clone(),
                path: path.clone(),
                retries: self.spec.retries,
                base_delay: Duration::from_secs_f64(self.spec.retry_delay),
            },
            // --reinstall: the same version from another .deb (a site's patched build) too.
            Change::Run {
                argv: apt_get(&["install", "--allow-downgrades", "--reinstall", &path]),
            },
        ]
    }

    fn apply(&self, sys: &System, plan: &[Change]) -> Result<Vec<String>> {
        let mut details = Vec::new();
        for c in plan {
            details.extend(c.execute(sys)?);
            if matches!(c, Change::Download { .. }) {
                // Judge the package before installing it.
                let info = deb::read(&sys.root.resolve(&self.cache_path())?)?;
                preflight(&info, &self.spec, &kernels_with_headers(&sys.root))
                    .context("preflight of the downloaded package")?;
                details.push(format!(
                    "{} {} passed preflight",
                    self.spec.name, self.spec.version
                ));
            }
        }
        let receipt = json!({
            "version": self.spec.version,
            "sha256": self.spec.sha256,
            "url": self.spec.url,
            "at": crate::report::rfc3339(std::time::SystemTime::now()),
        });
        crate::fsutil::write_atomic(
            &sys.root,
            &self.receipt_path(),
            &serde_json::to_vec_pretty(&receipt)?,
            Some(0o644),
        )?;
        Ok(details)
    }
}

/// Proof that DKMS built a module for one kernel: the module is installed in DKMS's tree and
/// its `.ko` files are under `/usr/lib/modules/KVER/updates/`.
///
/// A build that failed is recorded (the first compiler errors from DKMS's make.log, and a
/// fingerprint of what the build depended on: dkms.conf, the kernel, its headers); while the
/// fingerprint is the same, the item is `error` with those errors and what to do, in `verify` and
/// `apply` alike, and the build is not redone (`apply --retry-failed` does).
pub struct DkmsBuilt {
    pub dkms: DkmsSpec,
    pub kernel: String,
    /// The package that ships the module's source (its file checksums are part of the build's
    /// inputs: a patched .deb of the same version is a different build).
    pub package: String,
}

/// A failed DKMS build, as recorded under [`crate::paths::DKMS_FAILED_DIR`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct FailedBuild {
    fingerprint: String,
    at: String,
    errors: Vec<String>,
    log: String,
}

/// The first compiler errors of a make log (`file:line:col: error: …`, and make's own `***`
/// lines when there are none), at most `n`, paths shortened to the part after the source tree.
pub fn first_errors(log: &str, n: usize) -> Vec<String> {
    let short = |l: &str| {
        let l = l.trim();
        match l.find("/build/") {
            Some(i) if l[..i].starts_with('/') => l[i + "/build/".len()..].to_string(),
            _ => l.to_string(),
        }
    };
    let mut out: Vec<String> = log
        .lines()
        .filter(|l| l.contains(": error:") || l.contains(": fatal error:"))
        .map(short)
        .collect();
    if out.is_empty() {
        out = log
            .lines()
            .filter(|l| l.contains("***") || l.contains("Error "))
            .map(short)
            .collect();
    }
    out.dedup();
    out.truncate(n);
    out
}

impl DkmsBuilt {
    fn record_path(&self) -> String {
        format!(
            "{}/{}_{}_{}.json",
            crate::paths::DKMS_FAILED_DIR,
            self.dkms.module,
            self.dkms.version,
            self.kernel
        )
    }

    fn make_log(&self) -> String {
        format!(
            "/var/lib/dkms/{}/{}/build/make.log",
            self.dkms.module, self.dkms.version
        )
    }

    /// What a build depends on: the module's dkms.conf, the source's files (dpkg's checksums of
    /// the package that ships it), the kernel, its headers (their Makefile and config change with
    /// a new headers package).
    fn fingerprint(&self, sys: &System, conf: &str) -> Result<String> {
        let mut h = sha2::Sha256::new();
        use sha2::Digest;
        h.update(conf.as_bytes());
        h.update(self.kernel.as_bytes());
        for f in [
            format!("/var/lib/dpkg/info/{}.md5sums", self.package),
            format!("/var/lib/dpkg/info/{}:amd64.md5sums", self.package),
        ] {
            if let Some(b) = sys.read(&f)? {
                h.update(&b);
            }
        }
        for f in [
            "build/Makefile",
            "build/.config",
            "build/include/generated/utsrelease.h",
        ] {
            let p = format!("/usr/lib/modules/{}/{f}", self.kernel);
            if let Some(t) = sys.modified(&p)? {
                h.update(format!("{p} {t:?}").as_bytes());
            }
        }
        Ok(hex::encode(h.finalize()))
    }

    fn failed_before(&self, sys: &System, conf: &str) -> Result<Option<FailedBuild>> {
        let Some(text) = sys.read(&self.record_path())? else {
            return Ok(None);
        };
        let Ok(rec) = serde_json::from_slice::<FailedBuild>(&text) else {
            return Ok(None);
        };
        Ok((rec.fingerprint == self.fingerprint(sys, conf)?).then_some(rec))
    }

    fn failure_message(&self, errors: &[String], log: &str, before: Option<&str>) -> String {
        let (m, v, k) = (&self.dkms.module, &self.dkms.version, &self.kernel);
        let mut s = match before {
            Some(at) => format!("the DKMS build of {m} {v} for kernel {k} failed at {at}"),
            None => format!("the DKMS build of {m} {v} for kernel {k} failed"),
        };
        if errors.is_empty() {
            // Not a compile failure (an install conflict, say): the command's own words follow.
            return s;
        }
        s.push_str(&format!(": {} (all of it in {log})", errors.join(" | ")));
        s.push_str(
            ". This release does not build on this kernel: choose a release that does (`guestprep dkms \
             try FILE.deb|URL` builds one in a throwaway tree and says, per kernel), a kernel the \
             release builds on, or serve a patched build of the .deb with its own sha256",
        );
        if before.is_some() {
            s.push_str(
                "; not built again while the package, the kernel and its headers are unchanged: \
                 `guestprep apply --retry-failed` tries anyway",
            );
        }
        s
    }
}

pub(crate) fn find_ko(
    sys: &System,
    dir: &str,
    name: &str,
    depth: usize,
    out: &mut Vec<String>,
) -> Result<()> {
    for e in sys.list_dir(dir)? {
        let p = format!("{dir}/{e}");
        let stem = e.split(".ko").next().unwrap_or("");
        if e.contains(".ko") && stem.replace('-', "_") == name.replace('-', "_") {
            out.push(p);
        } else if depth < 4 && !e.contains('.') {
            find_ko(sys, &p, name, depth + 1, out)?;
        }
    }
    Ok(())
}

impl Resource for DkmsBuilt {
    fn id(&self) -> String {
        format!(
            "dkms:{}/{}/{}",
            self.dkms.module, self.dkms.version, self.kernel
        )
    }

    fn kind(&self) -> &'static str {
        "packages"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let (m, v, k) = (&self.dkms.module, &self.dkms.version, &self.kernel);
        let expected = json!({"module": m, "version": v, "kernel": k, "installed": true});
        let src = format!("/usr/src/{m}-{v}/dkms.conf");
        let Some(conf_text) = sys.read_string(&src)? else {
            let msg = with_offline_note(
                sys,
                format!(
                    "{src} not present: the DKMS source is not installed (deb:{} installs it)",
                    self.package
                ),
            );
            return Ok(Observation::new(
                Status::Drift,
                expected,
                json!({"source": false}),
                msg,
            ));
        };
        let conf = dkmsconf::parse(&conf_text);
        if !dkmsconf::kernel_allowed(&conf, k).map_err(anyhow::Error::msg)? {
            return Ok(Observation::new(
                Status::Skipped,
                expected,
                json!({"source": true}),
                format!("dkms.conf BUILD_EXCLUSIVE_KERNEL excludes kernel {k}"),
            ));
        }
        // DKMS's tree: /var/lib/dkms/M/V/K/ARCH/module/*.ko*
        let base = format!("/var/lib/dkms/{m}/{v}/{k}");
        let arch = sys
            .list_dir(&base)?
            .into_iter()
            .find(|a| !a.starts_with('.') && a != "log");
        let built: Vec<String> = match &arch {
            Some(a) => sys
                .list_dir(&format!("{base}/{a}/module"))?
                .into_iter()
                .filter(|f| f.contains(".ko"))
                .collect(),
            None => Vec::new(),
        };
        let names = if conf.modules.is_empty() {
            vec![m.clone()]
        } else {
            conf.modules.clone()
        };
        let mut installed = Vec::new();
        let mut missing = Vec::new();
        for n in &names {
            let mut found = Vec::new();
            find_ko(
                sys,
                &format!("/usr/lib/modules/{k}/updates"),
                n,
                0,
                &mut found,
            )?;
            if found.is_empty() {
                missing.push(n.clone());
            }
            installed.extend(found);
        }
        let mut actual = json!({"source": true, "builtInTree": built, "installedKo": installed});
        // Both: DKMS built this module/version for this kernel (its tree), and the .ko is where
        // modprobe finds it. A .ko of the same name from another package does not count.
        if missing.is_empty() && !built.is_empty() {
            return Ok(Observation::new(Status::Compliant, expected, actual, ""));
        }
        if built.is_empty()
            && !sys.retry_failed
            && let Some(rec) = self.failed_before(sys, &conf_text)?
        {
            actual["failedBuild"] = json!({"at": rec.at, "errors": rec.errors, "log": rec.log});
            return Ok(Observation::new(
                Status::Error,
                expected,
                actual,
                self.failure_message(&rec.errors, &rec.log, Some(&rec.at)),
            ));
        }
        let msg = if built.is_empty() {
            format!("not built for {k}")
        } else {
            format!(
                "built but {} not installed under /usr/lib/modules/{k}/updates: an in-tree module may win; upstream's fix is to \
                 list it in /usr/share/dkms/modules_to_force_install/",
                missing.join(", ")
            )
        };
        Ok(Observation::new(
            Status::Drift,
            expected,
            actual,
            with_offline_note(sys, msg),
        ))
    }

    fn plan(&self, sys: &System, obs: &Observation) -> Vec<Change> {
        if obs.status != Status::Drift
            || cannot_change(sys).is_some()
            || obs.actual["source"] == json!(false)
        {
            return Vec::new();
        }
        vec![Change::Run {
            argv: vec![
                "dkms".into(),
                "install".into(),
                format!("{}/{}", self.dkms.module, self.dkms.version),
                "-k".into(),
                self.kernel.clone(),
            ],
        }]
    }

    /// Runs the build; a failure is recorded with its first errors (and a success clears an old
    /// record), so the next run neither redoes it blindly nor says less.
    fn apply(&self, sys: &System, plan: &[Change]) -> Result<Vec<String>> {
        let record = self.record_path();
        let mut details = Vec::new();
        for c in plan {
            match c.execute(sys) {
                Ok(d) => details.extend(d),
                Err(e) => {
                    let log = self.make_log();
                    let errors = sys
                        .root
                        .read_string(&log)?
                        .map(|t| first_errors(&t, 5))
                        .unwrap_or_default();
                    let conf = sys
                        .root
                        .read_string(&format!(
                            "/usr/src/{}-{}/dkms.conf",
                            self.dkms.module, self.dkms.version
                        ))?
                        .unwrap_or_default();
                    let rec = FailedBuild {
                        fingerprint: self.fingerprint(sys, &conf)?,
                        at: crate::report::rfc3339(std::time::SystemTime::now()),
                        errors: errors.clone(),
                        log: log.clone(),
                    };
                    // Only a build that failed to compile is recorded: nothing but a change of
                    // its inputs makes it build.
                    if errors.is_empty() {
                        return Err(e.context(self.failure_message(&errors, &log, None)));
                    }
                    if let Err(w) = crate::fsutil::write_atomic(
                        &sys.root,
                        &record,
                        &serde_json::to_vec_pretty(&rec)?,
                        Some(0o644),
                    ) {
                        tracing::warn!("could not record the failed build: {w:#}");
                    }
                    return Err(e.context(self.failure_message(&errors, &log, None)));
                }
            }
        }
        if sys.lstat(&record)? != crate::root::Node::Missing {
            crate::fsutil::remove(&sys.root, &record)?;
        }
        Ok(details)
    }
}

/// The file name a URL's path ends with (no query, no fragment, percent-decoding left alone);
/// `download.deb` when it has none or it is not a plain name.
pub fn file_name_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.split(['?', '#']).next().unwrap_or("");
    let path = path.split_once('/').map_or("", |(_, p)| p);
    match path.rsplit('/').next() {
        Some(n) if !n.is_empty() && n != "." && n != ".." && !n.starts_with('.') => n.to_string(),
        _ => "download.deb".to_string(),
    }
}

/// `guestprep prefetch`: downloads a URL, prints its sha256 and the policy snippet.
pub fn prefetch(
    url: &str,
    dest_dir: &std::path::Path,
    retries: u32,
    base_delay: Duration,
) -> Result<(download::Fetched, Option<deb::DebInfo>)> {
    let name = file_name_of(url);
    let dest = dest_dir.join(&name);
    if std::fs::symlink_metadata(&dest).is_ok() {
        anyhow::bail!(
            "{} exists: not overwriting it (remove it, or choose another --keep-in directory)",
            dest.display()
        );
    }
    let spec = download::Spec::new(url, None, dest, retries, base_delay);
    let f = download::fetch(&spec)?;
    let info = deb::read(&f.path).ok();
    Ok((f, info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_errors_of_a_kernel_build() {
        let log = "\
DKMS (dkms-3.2.0) make.log for i915-sriov-dkms/2025.07.22 for kernel 6.12.117+deb13-amd64 (x86_64)
make -C /lib/modules/6.12.117+deb13-amd64/build M=/var/lib/dkms/i915-sriov-dkms/2025.07.22/build modules
  CC [M]  /var/lib/dkms/i915-sriov-dkms/2025.07.22/build/drivers/gpu/drm/i915/i915_gem.o
/var/lib/dkms/i915-sriov-dkms/2025.07.22/build/drivers/gpu/drm/i915/i915_buddy.c:12:30: error: invalid use of undefined type 'struct drm_buddy_block'
   12 |         return block->header;
/var/lib/dkms/i915-sriov-dkms/2025.07.22/build/drivers/gpu/drm/i915/i915_buddy.c:12:30: error: invalid use of undefined type 'struct drm_buddy_block'
/var/lib/dkms/i915-sriov-dkms/2025.07.22/build/drivers/gpu/drm/i915/i915_fbdev.c:40:9: error: too few arguments to function 'drm_fb_helper_init'
make[2]: *** [scripts/Makefile.build:229: drivers/gpu/drm/i915/i915_buddy.o] Error 1
";
        assert_eq!(
            first_errors(log, 5),
            [
                "drivers/gpu/drm/i915/i915_buddy.c:12:30: error: invalid use of undefined type 'struct drm_buddy_block'",
                "drivers/gpu/drm/i915/i915_fbdev.c:40:9: error: too few arguments to function 'drm_fb_helper_init'",
            ]
        );
        assert_eq!(
            first_errors("make: *** No rule to make target 'x'.  Stop.\n", 5),
            ["make: *** No rule to make target 'x'.  Stop."]
        );
        assert_eq!(first_errors("", 5), Vec::<String>::new());
    }

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

    #[test]
    fn file_names_from_urls() {
        assert_eq!(file_name_of("https://h/a/b.deb?token=x#f"), "b.deb");
        assert_eq!(file_name_of("https://h/"), "download.deb");
        assert_eq!(file_name_of("https://h"), "download.deb");
        assert_eq!(file_name_of("https://h/a/..?x"), "download.deb");
    }
}
