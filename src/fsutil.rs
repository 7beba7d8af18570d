//! Atomic file writes and their crash hygiene.
//!
//! Owns the one way guestprep writes a file: a temp file in the same directory, written, given the
//! final mode and owner, fsynced, renamed over the target, and the directory fsynced. A crash at any
//! point leaves the old file or the new one. Temp files have a recognisable name so the next run
//! removes the ones a crash left behind.
//!
//! `GUESTPREP_FAILPOINT=N` makes the process kill itself (SIGKILL) at the N-th step of any write:
//! the crash tests use it to stop `apply` at every point. Only with the `failpoints` cargo feature,
//! which the tests turn on (Cargo.toml's dev-dependency on guestprep itself) and release builds
//! never have: a production binary cannot be made to kill itself by its environment.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
#[cfg(feature = "failpoints")]
use std::sync::OnceLock;
#[cfg(feature = "failpoints")]
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::root::{Node, Root, SymlinkAtOwnedPath, node_at};

pub const TMP_MARK: &str = ".guestprep-tmp.";

/// Mode of a file guestprep creates when the policy does not say.
pub const DEFAULT_MODE: u32 = 0o644;

/// What a write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    Created,
    Replaced,
}

/// Writes `content` to `abs` in `root` atomically. `mode` overrides the mode; otherwise an
/// existing file keeps its mode, a new one gets 0644. An existing file keeps its owner and group.
///
/// Every step goes through the parent directory's descriptor, opened inside the root (a symlink
/// on the way resolves inside it): the temp file is created with `O_NOFOLLOW | O_EXCL`, renamed
/// with `renameat`. A symlink at `abs` itself is a [`SymlinkAtOwnedPath`] error: guestprep never
/// writes through a link.
pub fn write_atomic(root: &Root, abs: &str, content: &[u8], mode: Option<u32>) -> Result<Written> {
    let (dir, name) = root
        .parent_of(abs, true)?
        .with_context(|| format!("no directory for {abs}"))?;
    let old = match node_at(&dir, &name)? {
        Node::Missing => None,
        Node::File { mode, uid, gid } => Some((mode, uid, gid)),
        Node::Symlink(target) => {
            return Err(SymlinkAtOwnedPath {
                path: abs.to_string(),
                target,
            }
            .into());
        }
        Node::Other(kind) => {
            return Err(crate::saferead::NotRegular {
                path: abs.to_string(),
                kind,
            }
            .into());
        }
        Node::Dir { .. } => {
            return Err(crate::saferead::NotRegular {
                path: abs.to_string(),
                kind: "directory",
            }
            .into());
        }
    };
    let final_mode = mode.unwrap_or_else(|| old.map_or(DEFAULT_MODE, |(m, _, _)| m));
    let tmp = format!(".{name}{TMP_MARK}{}", std::process::id());
    let _ = unlinkat(&dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
    failpoint();
    let fd = nix::fcntl::openat(
        &dir,
        tmp.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(std::io::Error::from)
    .with_context(|| format!("creating a temp file beside {abs}"))?;
    let mut f = File::from(fd);
    let result = (|| -> Result<()> {
        failpoint();
        // Write in two halves so a crash test can stop between them.
        let half = content.len() / 2;
        f.write_all(&content[..half])?;
        failpoint();
        f.write_all(&content[half..])?;
        failpoint();
        if let Some((_, uid, gid)) = old {
            nix::unistd::fchown(&f, Some(uid.into()), Some(gid.into())).context("keeping owner")?;
        }
        f.set_permissions(std::fs::Permissions::from_mode(final_mode))?;
        f.sync_all()?;
        failpoint();
        Ok(())
    })()
    .with_context(|| format!("writing {abs}"));
    drop(f);
    if let Err(e) = result {
        let _ = unlinkat(&dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        return Err(e);
    }
    if let Err(e) = nix::fcntl::renameat(&dir, tmp.as_str(), &dir, name.as_str()) {
        let _ = unlinkat(&dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        return Err(std::io::Error::from(e))
            .with_context(|| format!("renaming the temp file to {abs}"));
    }
    failpoint();
    nix::unistd::fsync(&dir)
        .map_err(std::io::Error::from)
        .with_context(|| format!("syncing the directory of {abs}"))?;
    Ok(if old.is_some() {
        Written::Replaced
    } else {
        Written::Created
    })
}

/// Creates the symlink `abs -> target` atomically (made under a temp name, renamed over), through
/// the parent's descriptor. An existing identical link is left alone (`false`); anything at `abs`
/// that is not a symlink is refused.
pub fn symlink_atomic(root: &Root, abs: &str, target: &str) -> Result<bool> {
    let (dir, name) = root
        .parent_of(abs, true)?
        .with_context(|| format!("no directory for {abs}"))?;
    match node_at(&dir, &name)? {
        Node::Symlink(t) if t == Path::new(target) => return Ok(false),
        Node::Symlink(_) | Node::Missing => {}
        _ => bail!("{abs} exists and is not a symlink: refusing to replace it"),
    }
    let tmp = format!(".{name}{TMP_MARK}{}", std::process::id());
    let _ = unlinkat(&dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
    failpoint();
    nix::unistd::symlinkat(target, &dir, tmp.as_str())
        .map_err(std::io::Error::from)
        .with_context(|| format!("creating a symlink beside {abs}"))?;
    failpoint();
    if let Err(e) = nix::fcntl::renameat(&dir, tmp.as_str(), &dir, name.as_str()) {
        let _ = unlinkat(&dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        return Err(std::io::Error::from(e))
            .with_context(|| format!("renaming a symlink to {abs}"));
    }
    failpoint();
    let _ = nix::unistd::fsync(&dir);
    Ok(true)
}

/// Removes the file at `abs` (unlink + directory fsync) through its parent's descriptor: a
/// symlink is removed itself, never its target. Missing is fine.
pub fn remove(root: &Root, abs: &str) -> Result<bool> {
    let Some((dir, name)) = root.parent_of(abs, false)? else {
        return Ok(false);
    };
    match node_at(&dir, &name)? {
        Node::Missing => return Ok(false),
        Node::Dir { .. } => bail!("{abs} is a directory: not removing it"),
        _ => {}
    }
    match unlinkat(&dir, name.as_str(), UnlinkatFlags::NoRemoveDir) {
        Ok(()) => {
            nix::unistd::fsync(&dir)
                .map_err(std::io::Error::from)
                .with_context(|| format!("syncing the directory of {abs}"))?;
            Ok(true)
        }
        Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(std::io::Error::from(e)).with_context(|| format!("removing {abs}")),
    }
}

/// Removes temp files a crashed run left beside `abs`. Returns what it removed (as paths of the
/// managed system).
pub fn clean_stale_temps(root: &Root, abs: &str) -> Result<Vec<PathBuf>> {
    Sweep::default().clean(root, abs)
}

/// [`clean_stale_temps`] for many paths: each directory is listed once, however many of the
/// paths are in it (an apply of 10,000 files in one directory lists it once, not 10,000 times).
/// The temps a directory held when it was listed are kept until a path takes them: a crashed
/// run's temps are all there before this run writes, and this run's own are renamed away as they
/// are made, so nothing a later listing would find is missed.
#[derive(Default)]
pub struct Sweep {
    /// Per directory (device, inode): the names in it that are guestprep temps, not yet removed.
    temps: HashMap<(u64, u64), Vec<String>>,
}

impl Sweep {
    /// Removes the temps beside `abs`; returns what it removed (as paths of the managed system).
    pub fn clean(&mut self, root: &Root, abs: &str) -> Result<Vec<PathBuf>> {
        let Some((dir, name)) = root.parent_of(abs, false)? else {
            return Ok(Vec::new());
        };
        let st = nix::sys::stat::fstat(&dir)
            .map_err(std::io::Error::from)
            .with_context(|| format!("inspecting the directory of {abs}"))?;
        let key = (st.st_dev, st.st_ino);
        let temps = match self.temps.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(temps_in(&dir, abs)?),
        };
        let prefix = format!(".{name}{TMP_MARK}");
        let (mut stale, rest): (Vec<String>, Vec<String>) = std::mem::take(temps)
            .into_iter()
            .partition(|n| n.starts_with(&prefix));
        *temps = rest;
        let parent = Path::new(abs).parent().unwrap_or(Path::new("/"));
        let mut removed = Vec::new();
        for i in 0..stale.len() {
            if let Err(e) = unlinkat(&dir, stale[i].as_str(), UnlinkatFlags::NoRemoveDir) {
                let failed = stale[i].clone();
                // Left for the next try, as a new listing would find them.
                temps.extend(stale.drain(i..));
                return Err(std::io::Error::from(e))
                    .with_context(|| format!("removing stale temp file {failed} beside {abs}"));
            }
            removed.push(parent.join(&stale[i]));
        }
        Ok(removed)
    }
}

/// The names in a directory that carry guestprep's temp mark.
fn temps_in(dir: &std::os::fd::OwnedFd, abs: &str) -> Result<Vec<String>> {
    let listing = nix::dir::Dir::from_fd(
        nix::unistd::dup(dir)
            .map_err(std::io::Error::from)
            .context("duplicating a directory descriptor")?,
    )
    .map_err(std::io::Error::from)
    .with_context(|| format!("listing the directory of {abs}"))?;
    Ok(listing
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_bytes();
            n.windows(TMP_MARK.len()).any(|w| w == TMP_MARK.as_bytes())
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect())
}

#[cfg(feature = "failpoints")]
static FAILPOINT: OnceLock<Option<u64>> = OnceLock::new();
#[cfg(feature = "failpoints")]
static STEPS: AtomicU64 = AtomicU64::new(0);

/// Crash-test hook: SIGKILL this process at the N-th step when `GUESTPREP_FAILPOINT=N`.
pub fn failpoint() {
    #[cfg(feature = "failpoints")]
    {
        let target = FAILPOINT.get_or_init(|| {
            std::env::var("GUESTPREP_FAILPOINT")
                .ok()
                .and_then(|v| v.parse().ok())
        });
        if let Some(n) = target
            && STEPS.fetch_add(1, Ordering::SeqCst) + 1 == *n
        {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Sets the mode and/or owner of the file or directory at `abs` through a descriptor opened
/// without following a symlink (a symlink there is a [`SymlinkAtOwnedPath`] error).
pub fn set_attrs(
    root: &Root,
    abs: &str,
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
) -> Result<()> {
    let Some((dir, name)) = root.parent_of(abs, false)? else {
        bail!("{abs}: its directory does not exist");
    };
    let fd = match nix::fcntl::openat(
        &dir,
        name.as_str(),
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ELOOP) => {
            return Err(SymlinkAtOwnedPath {
                path: abs.to_string(),
                target: root.read_link(abs)?.unwrap_or_default(),
            }
            .into());
        }
        Err(e) => {
            return Err(std::io::Error::from(e)).with_context(|| format!("opening {abs}"));
        }
    };
    if uid.is_some() || gid.is_some() {
        nix::unistd::fchown(
            &fd,
            uid.map(nix::unistd::Uid::from_raw),
            gid.map(nix::unistd::Gid::from_raw),
        )
        .map_err(std::io::Error::from)
        .with_context(|| format!("changing the owner of {abs}"))?;
    }
    if let Some(m) = mode {
        nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(m))
            .map_err(std::io::Error::from)
            .with_context(|| format!("changing the mode of {abs}"))?;
    }
    Ok(())
}

/// Creates the directory `abs` (and missing parents, inside the root) with exactly `mode`.
pub fn make_dir(root: &Root, abs: &str, mode: u32) -> Result<()> {
    let Some((dir, name)) = root.parent_of(abs, true)? else {
        bail!("{abs}: cannot create its parent directory");
    };
    match nix::sys::stat::mkdirat(&dir, name.as_str(), Mode::from_bits_truncate(mode)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => {
            return Err(std::io::Error::from(e)).with_context(|| format!("creating {abs}"));
        }
    }
    // mkdir's mode went through the umask: set it exactly.
    set_attrs(root, abs, Some(mode), None, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn writes_keep_mode_and_replace_atomically() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path()).unwrap();
        assert_eq!(
            write_atomic(&root, "/etc/a/b.conf", b"one\n", None).unwrap(),
            Written::Created
        );
        let p = t.path().join("etc/a/b.conf");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o7777, 0o644);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            write_atomic(&root, "/etc/a/b.conf", b"two\n", None).unwrap(),
            Written::Replaced
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"two\n");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o7777, 0o600);
        write_atomic(&root, "/etc/a/b.conf", b"three\n", Some(0o640)).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o7777, 0o640);
        let names: Vec<_> = std::fs::read_dir(t.path().join("etc/a"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temp file left: {names:?}");
    }

    #[test]
    fn stale_temps_are_cleaned() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path()).unwrap();
        std::fs::create_dir_all(t.path().join("etc")).unwrap();
        std::fs::write(t.path().join("etc/.x.conf.guestprep-tmp.123"), "half").unwrap();
        std::fs::write(t.path().join("etc/.other"), "keep").unwrap();
        let removed = clean_stale_temps(&root, "/etc/x.conf").unwrap();
        assert_eq!(removed.len(), 1);
        assert!(t.path().join("etc/.other").exists());
    }

    #[test]
    fn a_sweep_lists_each_directory_once_and_removes_what_each_path_left() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path()).unwrap();
        let etc = t.path().join("etc");
        std::fs::create_dir_all(etc.join("d")).unwrap();
        for n in [
            ".a.conf.guestprep-tmp.1",
            ".a.conf.guestprep-tmp.2",
            ".b.conf.guestprep-tmp.3",
            ".c.conf.guestprep-tmp.4",
            ".a.conf.keep",
            "d/.a.conf.guestprep-tmp.5",
        ] {
            std::fs::write(etc.join(n), "half").unwrap();
        }
        let mut sweep = Sweep::default();
        let mut a = sweep.clean(&root, "/etc/a.conf").unwrap();
        a.sort();
        assert_eq!(
            a,
            [
                PathBuf::from("/etc/.a.conf.guestprep-tmp.1"),
                PathBuf::from("/etc/.a.conf.guestprep-tmp.2")
            ]
        );
        assert_eq!(
            sweep.clean(&root, "/etc/b.conf").unwrap(),
            [PathBuf::from("/etc/.b.conf.guestprep-tmp.3")]
        );
        // Another directory is listed on its own; a path asked for twice finds nothing more.
        assert_eq!(
            sweep.clean(&root, "/etc/d/a.conf").unwrap(),
            [PathBuf::from("/etc/d/.a.conf.guestprep-tmp.5")]
        );
        assert!(sweep.clean(&root, "/etc/a.conf").unwrap().is_empty());
        assert!(sweep.clean(&root, "/nowhere/a.conf").unwrap().is_empty());
        // What no path asked for stays, and so does a name without the mark.
        assert!(etc.join(".c.conf.guestprep-tmp.4").exists());
        assert!(etc.join(".a.conf.keep").exists());
        assert!(!etc.join(".a.conf.guestprep-tmp.1").exists());
    }
}
