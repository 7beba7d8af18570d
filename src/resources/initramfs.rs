//! `initramfs:KVER`: each installed kernel's initramfs carries what guestprep changed. A module
//! the initramfs carries is loaded from it before the root filesystem is mounted, with the
//! initramfs's own copy of modprobe.d: a DKMS build that replaces such a module, or a blacklist
//! or options line guestprep writes, takes effect at boot only once the initramfs is rebuilt.
//!
//! Checked without a subprocess: the image is read ([`crate::boot::initramfs`]) and each DKMS
//! module in it compared with the DKMS build installed under `/usr/lib/modules/KVER/updates`
//! (the decompressed contents; `.modinfo`'s srcversion or version is shown), and each guestprep-owned
//! modprobe.d file compared byte for byte. Apply runs `update-initramfs -u -k KVER` (live, or
//! in a chroot with `apply --chroot`). A module the initramfs does not carry is loaded from the
//! root filesystem, where DKMS put it: nothing to do.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use serde_json::json;

use super::initramfs_memo::Memo;
use crate::boot::initramfs::{self, Contents, Query, Want};
use crate::boot::kmod;
use crate::boot::limits::{Budget, Limits};
use crate::engine::{Change, Observation, Resource, System};
use crate::packages::dkmsconf;
use crate::policy::DkmsSpec;
use crate::report::Status;

pub struct Initramfs {
    pub kernel: String,
    /// The DKMS modules the policy installs (their built modules are looked up per kernel).
    pub dkms: Vec<DkmsSpec>,
    /// modprobe.d files guestprep owns, present or not on disk.
    pub modprobe: Vec<String>,
}

pub fn image_of(kernel: &str) -> String {
    format!("/boot/initrd.img-{kernel}")
}

/// What identifies a file's bytes without reading them: device, inode, size, mtime and ctime
/// (a rewrite or a replacement changes the ctime, which no one sets at will).
pub fn stat_key(file: &std::fs::File) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let m = file.metadata().context("inspecting an open file")?;
    Ok(format!(
        "{}:{}:{}:{}.{}:{}.{}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    ))
}

/// The last reading of each image, keyed by its [`stat_key`] and what was asked of it: the
/// daemon verifies again after every change it sees, and an initramfs is tens of MiB.
type InProcess = BTreeMap<String, (String, Arc<Contents>)>;
static MEMO: Mutex<InProcess> = Mutex::new(BTreeMap::new());

/// What `img` holds: from this process's memo, the persistent one, or read.
fn read_image(
    sys: &System,
    img: &str,
    file: std::fs::File,
    q: &Query,
    asked: &str,
    persistent: &mut Memo,
) -> Result<Arc<Contents>> {
    let key = format!("{}|{asked}", stat_key(&file)?);
    let slot = format!("{}{img}", sys.dir().display());
    let memo = || MEMO.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((k, c)) = memo().get(&slot)
        && *k == key
    {
        return Ok(c.clone());
    }
    let c = match persistent.image(img, &key) {
        Some(c) => Arc::new(c),
        None => {
            let c = initramfs::read(file, q, &Limits::DEFAULT)?;
            persistent.put_image(img, &key, &c);
            Arc::new(c)
        }
    };
    memo().insert(slot, (key, c.clone()));
    Ok(c)
}

/// A DKMS build on disk: its path and identity.
struct Build {
    path: String,
    id: kmod::Identity,
}

impl Initramfs {
    /// The DKMS-built modules installed for this kernel, by module name.
    fn dkms_builds(&self, sys: &System, memo: &mut Memo) -> Result<BTreeMap<String, Build>> {
        let mut out = BTreeMap::new();
        for spec in &self.dkms {
            let conf = sys
                .read_string(&format!(
                    "/usr/src/{}-{}/dkms.conf",
                    spec.module, spec.version
                ))?
                .map(|t| dkmsconf::parse(&t));
            let names = match conf {
                Some(c) if !c.modules.is_empty() => c.modules,
                _ => vec![spec.module.clone()],
            };
            for n in names {
                let mut found = Vec::new();
                super::packages::find_ko(
                    sys,
                    &format!("/usr/lib/modules/{}/updates", self.kernel),
                    &n,
                    0,
                    &mut found,
                )?;
                if let Some(p) = found.first()
                    && let Some(f) = sys.open(p)?
                {
                    let stat = stat_key(&f)?;
                    let id = match memo.module(p, &stat) {
                        Some(id) => id,
                        None => {
                            let l = &Limits::DEFAULT;
                            let id = kmod::identity(f, l, &Budget::new(l.max_output))
                                .with_context(|| format!("reading {}", sys.what(p)))?;
                            memo.put_module(p, &stat, &id);
                            id
                        }
                    };
                    let path = p.clone();
                    out.insert(kmod::ModuleName::new(&n).canonical(), Build { path, id });
                }
            }
        }
        Ok(out)
    }
}

impl Resource for Initramfs {
    fn id(&self) -> String {
        format!("initramfs:{}", self.kernel)
    }

    fn kind(&self) -> &'static str {
        "initramfs"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let mut memo = Memo::load(sys);
        let obs = self.check_with(sys, &mut memo);
        memo.save();
        obs
    }

    fn plan(&self, sys: &System, obs: &Observation) -> Vec<Change> {
        if obs.status != Status::Drift || sys.cannot_change().is_some() {
            return Vec::new();
        }
        vec![Change::Run {
            argv: vec![
                "update-initramfs".into(),
                "-u".into(),
                "-k".into(),
                self.kernel.clone(),
            ],
        }]
    }
}

impl Initramfs {
    fn check_with(&self, sys: &System, memo: &mut Memo) -> Result<Observation> {
        let k = &self.kernel;
        let img = image_of(k);
        let builds = self.dkms_builds(sys, memo)?;
        let expected = json!({
            "dkmsModules": builds.keys().collect::<Vec<_>>(),
            "modprobeFiles": self.modprobe,
        });
        // Listing /boot: the daemon watches it, and update-initramfs replaces the image there.
        let name = img.trim_start_matches("/boot/");
        let file = match sys.list_dir("/boot")?.iter().any(|f| f == name) {
            true => sys.open(&img)?,
            false => None,
        };
        let Some(file) = file else {
            return Ok(Observation::new(
                Status::Skipped,
                expected,
                json!(null),
                format!("no {img}: no initramfs to check for kernel {k}"),
            ));
        };
        let module_dirs = [format!("lib/modules/{k}/"), format!("usr/lib/modules/{k}/")];
        let owned = |p: &str| self.modprobe.iter().any(|m| m.trim_start_matches('/') == p);
        let want = |p: &str| {
            if module_dirs.iter().any(|d| p.starts_with(d.as_str()))
                && kmod::module_name(p).is_some_and(|n| builds.contains_key(&n))
            {
                Some(Want::Module)
            } else if owned(p) {
                Some(Want::File)
            } else {
                None
            }
        };
        // Every DKMS module and owned file found: the rest of the image cannot change the answer
        // (a second copy of a module is not looked for: initramfs-tools copies the one modprobe
        // resolves). Otherwise, to know a file is absent, the image is read to its end.
        let enough = |c: &Contents| {
            builds.keys().all(|n| {
                c.modules
                    .iter()
                    .any(|m| kmod::module_name(&m.path).as_ref() == Some(n))
            }) && self
                .modprobe
                .iter()
                .all(|m| c.files.contains_key(m.trim_start_matches('/')))
        };
        let q = Query {
            want: &want,
            enough: &enough,
        };
        let asked = format!(
            "{}|{}",
            builds.keys().cloned().collect::<Vec<_>>().join(","),
            self.modprobe.join(",")
        );
        let contents = read_image(sys, &img, file, &q, &asked, memo)
            .with_context(|| format!("reading {img}"))?;
        let (problems, carried, stale) = self.compare(sys, &builds, &contents)?;
        let actual = json!({
            "image": img,
            "compression": contents.compression,
            "dkmsModulesCarried": carried,
            "staleModprobeFiles": stale,
        });
        if problems.is_empty() {
            let msg = if carried.is_empty() {
                format!(
                    "{img} carries none of the DKMS modules (they load from the root filesystem)"
                )
            } else {
                String::new()
            };
            return Ok(Observation::new(Status::Compliant, expected, actual, msg));
        }
        let mut msg = format!(
            "{img}: {}; update-initramfs -u -k {k} rebuilds it",
            problems.join("; ")
        );
        if let Some(why) = sys.cannot_change() {
            msg = format!("{msg}; {why}");
        }
        Ok(Observation::new(Status::Drift, expected, actual, msg))
    }

    /// The image's contents against the DKMS builds and the owned modprobe.d files: the problems,
    /// the DKMS modules it carries, and the stale files.
    #[allow(clippy::type_complexity)]
    fn compare(
        &self,
        sys: &System,
        builds: &BTreeMap<String, Build>,
        contents: &Contents,
    ) -> Result<(Vec<String>, Vec<serde_json::Value>, Vec<String>)> {
        let mut problems = Vec::new();
        let mut carried = Vec::new();
        for m in &contents.modules {
            let Some(name) = kmod::module_name(&m.path) else {
                continue;
            };
            let Some(build) = builds.get(&name) else {
                continue;
            };
            let path = &m.path;
            carried.push(json!({"module": name, "path": format!("/{path}"), "identity": m.shown}));
            if m.sha256 != build.id.sha256 {
                problems.push(format!(
                    "it carries {name} as /{path} ({}), not the DKMS build {} ({})",
                    m.shown, build.path, build.id.shown
                ));
            }
        }
        let mut stale = Vec::new();
        if contents.modprobe_dir {
            for m in &self.modprobe {
                use sha2::Digest;
                let disk = sys
                    .read_string(m)?
                    .map(|t| hex::encode(sha2::Sha256::digest(t.as_bytes())));
                let inside = contents.files.get(m.trim_start_matches('/'));
                let why = match (&disk, inside) {
                    (Some(a), Some(b)) if a == b => continue,
                    (None, None) => continue,
                    (Some(_), None) => format!("it lacks {m}"),
                    (None, Some(_)) => {
                        format!("it still carries {m}, which is gone from the system")
                    }
                    (Some(_), Some(_)) => format!("its copy of {m} is older than the system's"),
                };
                stale.push(m.clone());
                problems.push(why);
            }
        }
        Ok((problems, carried, stale))
    }
}
