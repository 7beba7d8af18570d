//! What an initramfs holds, remembered across runs: reading one (tens of MiB decompressed) is
//! most of `verify --only initramfs`, and the image rarely changes.
//!
//! One file, `/run/guestprep/initramfs.json`, on the running system only: `/run` is a tmpfs (gone
//! at the next boot, when images may have been rebuilt) that a read-only verify and the daemon's
//! sandbox may write; an offline image never gets one, nor is one read from it. It holds:
//! - per image: its [`stat_key`] (device, inode, size, mtime, ctime) and what was asked of it
//!   (the DKMS module names, the owned modprobe.d paths), with the [`Contents`] found: the
//!   carried modules' sha256 and the files' sha256;
//! - per DKMS build on disk: its [`stat_key`] and [`kmod::Identity`].
//!
//! The verdict is not remembered: each run compares the remembered hashes with the system's, so a
//! rebuilt DKMS module or an edited modprobe.d file is judged afresh, without reading the image.
//! An entry is used only when its key matches exactly. The file is trusted only when it is a
//! regular file owned by root with mode 0600 that parses as this version; anything else (changed,
//! corrupt, foreign-owned, unreadable) is ignored and replaced on the next write. Written
//! atomically (a temp file beside it, renamed), mode 0600, by root only. A failure to read or
//! write it is a debug trace, never an error: it only saves time.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;

use anyhow::{Context, Result, bail};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};

use crate::boot::initramfs::Contents;
use crate::boot::kmod;
use crate::root::Root;

pub const DIR: &str = "/run/guestprep";
pub const NAME: &str = "initramfs.json";
const VERSION: u32 = 1;
/// Far more than any real memo (a few KiB): a larger file is not one guestprep wrote.
const LIMIT: u64 = 4 << 20;
/// Entries kept: a system has a handful of kernels.
const MAX_ENTRIES: usize = 64;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Stored {
    version: u32,
    images: BTreeMap<String, Image>,
    modules: BTreeMap<String, Module>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Image {
    key: String,
    contents: Contents,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Module {
    stat: String,
    sha256: String,
    shown: String,
}

/// The memo of one check: loaded when it starts, saved when it changed.
pub struct Memo {
    /// None offline: nothing read, nothing written.
    root: Option<Root>,
    stored: Stored,
    dirty: bool,
}

impl Memo {
    /// The memo of `root`: read on a live root, off on an offline one.
    pub fn load(sys: &crate::engine::System) -> Memo {
        // guestprep's own cache (/run/guestprep), not a reading of the managed system: the root
        // itself, not the recorded door the daemon watches.
        let root = sys.root();
        if !root.is_live() {
            tracing::debug!("initramfs memo: off (an offline root)");
            return Memo {
                root: None,
                stored: Stored::default(),
                dirty: false,
            };
        }
        let stored = match read(root) {
            Ok(Some(s)) => s,
            Ok(None) => Stored::default(),
            Err(e) => {
                tracing::debug!("initramfs memo: ignored: {e:#}");
                Stored::default()
            }
        };
        Memo {
            root: Some(root.clone()),
            stored,
            dirty: false,
        }
    }

    /// What `img` was found to hold when its key was `key`.
    pub fn image(&self, img: &str, key: &str) -> Option<Contents> {
        let found = self.stored.images.get(img);
        match found {
            Some(i) if i.key == key => {
                tracing::debug!("initramfs memo: {img} read from the memo");
                Some(i.contents.clone())
            }
            Some(_) => {
                tracing::debug!("initramfs memo: reading {img}: it changed, or other questions");
                None
            }
            None => {
                tracing::debug!("initramfs memo: reading {img}: not in the memo");
                None
            }
        }
    }

    pub fn put_image(&mut self, img: &str, key: &str, contents: &Contents) {
        if self.root.is_some() {
            let (key, contents) = (key.to_string(), contents.clone());
            bounded_insert(&mut self.stored.images, img, Image { key, contents });
            self.dirty = true;
        }
    }

    /// The identity of the module at `path` when its stat key was `stat`.
    pub fn module(&self, path: &str, stat: &str) -> Option<kmod::Identity> {
        match self.stored.modules.get(path) {
            Some(m) if m.stat == stat => Some(kmod::Identity {
                sha256: m.sha256.clone(),
                shown: m.shown.clone(),
            }),
            found => {
                let why = if found.is_some() {
                    "it changed"
                } else {
                    "not in the memo"
                };
                tracing::debug!("initramfs memo: reading the module {path}: {why}");
                None
            }
        }
    }

    pub fn put_module(&mut self, path: &str, stat: &str, id: &kmod::Identity) {
        if self.root.is_some() {
            let m = Module {
                stat: stat.to_string(),
                sha256: id.sha256.clone(),
                shown: id.shown.clone(),
            };
            bounded_insert(&mut self.stored.modules, path, m);
            self.dirty = true;
        }
    }

    /// Writes the memo if it changed (live, as root); a failure is only traced.
    pub fn save(mut self) {
        let Some(root) = self.root.take() else {
            return;
        };
        if !self.dirty {
            return;
        }
        if !nix::unistd::geteuid().is_root() {
            tracing::debug!("initramfs memo: not written: only root writes it");
            return;
        }
        self.stored.version = VERSION;
        let res = serde_json::to_vec(&self.stored)
            .context("serializing the memo")
            .and_then(|bytes| write(&root, &bytes));
        match res {
            Ok(()) => tracing::debug!("initramfs memo: written"),
            Err(e) => tracing::debug!("initramfs memo: not written: {e:#}"),
        }
    }
}

fn bounded_insert<V>(map: &mut BTreeMap<String, V>, k: &str, v: V) {
    if !map.contains_key(k) && map.len() >= MAX_ENTRIES {
        let first = map.keys().next().cloned();
        if let Some(f) = first {
            map.remove(&f);
        }
    }
    map.insert(k.to_string(), v);
}

/// The directory of the memo, opened inside the root (created if missing); refused when it is a
/// symlink, or not root's, or writable by anyone else.
fn dir(root: &Root, create: bool) -> Result<Option<OwnedFd>> {
    if let crate::root::Node::Symlink(to) = root.lstat(DIR)? {
        bail!("{DIR} is a symlink (to {})", to.display());
    }
    let Some(fd) = root.open_dir(DIR, create)? else {
        return Ok(None);
    };
    let st = nix::sys::stat::fstat(&fd).context("inspecting /run/guestprep")?;
    if st.st_uid != 0 || st.st_mode & 0o022 != 0 {
        bail!(
            "{DIR} is owned by uid {} with mode {:o}: not root's alone",
            st.st_uid,
            st.st_mode & 0o7777
        );
    }
    Ok(Some(fd))
}

/// The stored memo; None when there is none. An error when it is there but not to be trusted.
fn read(root: &Root) -> Result<Option<Stored>> {
    let Some(dir) = dir(root, false)? else {
        return Ok(None);
    };
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = match nix::fcntl::openat(&dir, NAME, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(std::io::Error::from(e)).context("opening the memo"),
    };
    let mut f = std::fs::File::from(fd);
    let what = format!("{DIR}/{NAME}");
    crate::saferead::regular(&f, &what)?;
    let m = f.metadata().context("inspecting the memo")?;
    if m.uid() != 0 || m.mode() & 0o7777 != 0o600 {
        bail!(
            "{what} is owned by uid {} with mode {:o}, not root's with 0600",
            m.uid(),
            m.mode() & 0o7777
        );
    }
    let bytes = crate::saferead::read_bounded(&mut f, &what, LIMIT)?;
    let stored: Stored =
        serde_json::from_slice(&bytes).with_context(|| format!("{what} is corrupt"))?;
    if stored.version != VERSION {
        bail!("{what} is version {}, not {VERSION}", stored.version);
    }
    Ok(Some(stored))
}

/// Replaces the memo atomically: a temp file (`O_EXCL | O_NOFOLLOW`, 0600) renamed over it.
fn write(root: &Root, bytes: &[u8]) -> Result<()> {
    let dir = dir(root, true)?.context("no /run/guestprep")?;
    let tmp = format!(".{NAME}.tmp.{}", std::process::id());
    let unlink = || {
        let _ = nix::unistd::unlinkat(&dir, tmp.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
    };
    unlink();
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = nix::fcntl::openat(&dir, tmp.as_str(), flags, Mode::from_bits_truncate(0o600))
        .map_err(std::io::Error::from)
        .context("creating the memo's temp file")?;
    let mut f = std::fs::File::from(fd);
    let res = (|| -> Result<()> {
        f.write_all(bytes)?;
        // The umask cannot have widened it, but a stale inherited mode must not either.
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        f.sync_all()?;
        nix::fcntl::renameat(&dir, tmp.as_str(), &dir, NAME).map_err(std::io::Error::from)?;
        Ok(())
    })();
    if res.is_err() {
        unlink();
    }
    res.context("writing the memo")
}
