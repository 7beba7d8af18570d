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

use crate::boot::{initramfs, kmod};
use crate::engine::{Change, Observation, Resource, System};
use crate::packages::dkmsconf;
use crate::policy::DkmsSpec;
use crate::report::Status;

/// A decompressed module larger than this is not read (i915 is about 10 MiB).
const MAX_MODULE: u64 = 256 << 20;

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

/// A module's identity: the sha256 of its decompressed ELF (an initramfs holds the very file
/// DKMS installed, maybe recompressed), with `.modinfo`'s srcversion, or version, or vermagic,
/// for people. In-tree modules of Debian's kernels carry no srcversion and the same vermagic as
/// a DKMS build for that kernel, so only the contents tell them apart.
fn module_identity(bytes: &[u8]) -> Result<(String, String)> {
    use sha2::Digest;
    let elf = kmod::decompress(bytes, MAX_MODULE)?;
    let info = kmod::modinfo(&elf)?;
    let shown = match (info.get("srcversion"), info.get("version")) {
        (Some(s), _) => format!("srcversion {s}"),
        (None, Some(v)) => format!("version {v}"),
        (None, None) => format!(
            "vermagic {:?}",
            info.get("vermagic").map(String::as_str).unwrap_or("")
        ),
    };
    let sum = hex::encode(sha2::Sha256::digest(&elf));
    Ok((sum.clone(), format!("{shown}, sha256 {}", &sum[..12])))
}

/// The last reading of each image, keyed by what identifies its bytes (device, inode, size,
/// mtime, ctime) and what was asked of it: the daemon verifies again after every change it sees,
/// and an initramfs is tens of MiB.
type Memo = BTreeMap<String, (String, Arc<initramfs::Contents>)>;
static MEMO: Mutex<Memo> = Mutex::new(BTreeMap::new());

fn read_image(
    sys: &System,
    img: &str,
    file: std::fs::File,
    want: &dyn Fn(&str) -> bool,
    asked: &str,
) -> Result<Arc<initramfs::Contents>> {
    use std::os::unix::fs::MetadataExt;
    let m = file.metadata()?;
    let key = format!(
        "{}:{}:{}:{}.{}:{}.{}|{asked}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    );
    let slot = format!("{}{img}", sys.root.dir().display());
    let memo = || MEMO.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((k, c)) = memo().get(&slot)
        && *k == key
    {
        return Ok(c.clone());
    }
    let c = Arc::new(initramfs::read(std::io::BufReader::new(file), want)?);
    memo().insert(slot, (key, c.clone()));
    Ok(c)
}

impl Initramfs {
    /// The DKMS-built modules installed for this kernel: module name → (path, (sha256, shown)).
    #[allow(clippy::type_complexity)]
    fn dkms_builds(&self, sys: &System) -> Result<BTreeMap<String, (String, (String, String))>> {
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
                    && let Some(b) = sys.root.read(p)?
                {
                    let id = module_identity(&b).with_context(|| format!("reading {p}"))?;
                    out.insert(n.replace('-', "_"), (p.clone(), id));
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
        let k = &self.kernel;
        let img = image_of(k);
        let builds = self.dkms_builds(sys)?;
        let expected = json!({
            "dkmsModules": builds.keys().collect::<Vec<_>>(),
            "modprobeFiles": self.modprobe,
        });
        // Listing /boot: the daemon watches it, and update-initramfs replaces the image there.
        let name = img.trim_start_matches("/boot/");
        let file = match sys.list_dir("/boot")?.iter().any(|f| f == name) {
            true => sys.root.open(&img)?,
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
        let want = |p: &str| {
            (module_dirs.iter().any(|d| p.starts_with(d.as_str()))
                && kmod::module_name(p).is_some_and(|n| builds.contains_key(&n)))
                || self.modprobe.iter().any(|m| m.trim_start_matches('/') == p)
        };
        let asked = format!(
            "{}|{}",
            builds.keys().cloned().collect::<Vec<_>>().join(","),
            self.modprobe.join(",")
        );
        let contents =
            read_image(sys, &img, file, &want, &asked).with_context(|| format!("reading {img}"))?;
        let mut problems = Vec::new();
        let mut carried = Vec::new();
        for (path, bytes) in &contents.files {
            let Some(name) = kmod::module_name(path) else {
                continue;
            };
            let Some((dkms_path, want_id)) = builds.get(&name) else {
                continue;
            };
            let (sum, shown) =
                module_identity(bytes).with_context(|| format!("reading /{path} in {img}"))?;
            carried.push(json!({"module": name, "path": format!("/{path}"), "identity": shown}));
            if sum != want_id.0 {
                problems.push(format!(
                    "it carries {name} as /{path} ({shown}), not the DKMS build {dkms_path} ({})",
                    want_id.1
                ));
            }
        }
        let has_modprobe_dir = contents
            .paths
            .iter()
            .any(|p| p == "etc/modprobe.d" || p.starts_with("etc/modprobe.d/"));
        let mut stale = Vec::new();
        if has_modprobe_dir {
            for m in &self.modprobe {
                let disk = sys.read_string(m)?;
                let inside = contents.files.get(m.trim_start_matches('/'));
                let why = match (&disk, inside) {
                    (Some(a), Some(b)) if a.as_bytes() == b.as_slice() => continue,
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
        if let Some(why) = super::packages::cannot_change(sys) {
            msg = format!("{msg}; {why}");
        }
        Ok(Observation::new(Status::Drift, expected, actual, msg))
    }

    fn plan(&self, sys: &System, obs: &Observation) -> Vec<Change> {
        if obs.status != Status::Drift || super::packages::cannot_change(sys).is_some() {
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
