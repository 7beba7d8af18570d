//! Atomic file writes and their crash hygiene.
//!
//! Owns the one way guestprep writes a file: a temp file in the same directory, written, given the
//! final mode and owner, fsynced, renamed over the target, and the directory fsynced. A crash at any
//! point leaves the old file or the new one. Temp files have a recognisable name so the next run
//! removes the ones a crash left behind.
//!
//! `GUESTPREP_FAILPOINT=N` makes the process kill itself (SIGKILL) at the N-th step of any write:
//! the crash tests use it to stop `apply` at every point. It is read once and costs nothing unset.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};

use crate::root::Root;

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
pub fn write_atomic(root: &Root, abs: &str, content: &[u8], mode: Option<u32>) -> Result<Written> {
    let target = root.resolve(abs)?;
    let dir = target
        .parent()
        .context("target has no parent directory")?
        .to_path_buf();
    let name = target
        .file_name()
        .context("target has no file name")?
        .to_string_lossy()
        .into_owned();
    create_dirs(&dir)?;
    let old = match std::fs::metadata(&target) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("inspecting {}", target.display())),
    };
    let final_mode =
        mode.unwrap_or_else(|| old.as_ref().map_or(DEFAULT_MODE, |m| m.mode() & 0o7777));
    let tmp = dir.join(format!(".{name}{TMP_MARK}{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    failpoint();
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating temp file {}", tmp.display()))?;
    let result = (|| -> Result<()> {
        failpoint();
        // Write in two halves so a crash test can stop between them.
        let half = content.len() / 2;
        f.write_all(&content[..half])?;
        failpoint();
        f.write_all(&content[half..])?;
        failpoint();
        if let Some(m) = &old {
            nix::unistd::fchown(&f, Some(m.uid().into()), Some(m.gid().into()))
                .context("keeping owner")?;
        }
        f.set_permissions(std::fs::Permissions::from_mode(final_mode))?;
        f.sync_all()?;
        failpoint();
        Ok(())
    })()
    .with_context(|| format!("writing {}", tmp.display()));
    drop(f);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &target).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("renaming {} to {}", tmp.display(), target.display())
    })?;
    failpoint();
    sync_dir(&dir)?;
    Ok(if old.is_some() {
        Written::Replaced
    } else {
        Written::Created
    })
}

/// Removes a file atomically (unlink + directory fsync). Missing is fine.
pub fn remove(root: &Root, abs: &str) -> Result<bool> {
    let target = root.resolve(abs)?;
    match std::fs::remove_file(&target) {
        Ok(()) => {
            if let Some(dir) = target.parent() {
                sync_dir(dir)?;
            }
            Ok(true)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("removing {}", target.display())),
    }
}

/// Removes temp files a crashed run left beside `abs`. Returns what it removed.
pub fn clean_stale_temps(root: &Root, abs: &str) -> Result<Vec<PathBuf>> {
    let target = root.resolve(abs)?;
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
        return Ok(Vec::new());
    };
    let prefix = format!(".{}{TMP_MARK}", name.to_string_lossy());
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut removed = Vec::new();
    for ent in rd {
        let ent = ent.with_context(|| format!("listing {}", dir.display()))?;
        if ent.file_name().to_string_lossy().starts_with(&prefix) {
            std::fs::remove_file(ent.path())
                .with_context(|| format!("removing stale temp file {}", ent.path().display()))?;
            removed.push(ent.path());
        }
    }
    Ok(removed)
}

fn create_dirs(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating directory {}", dir.display()))?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

static FAILPOINT: OnceLock<Option<u64>> = OnceLock::new();
static STEPS: AtomicU64 = AtomicU64::new(0);

/// Crash-test hook: SIGKILL this process at the N-th step when `GUESTPREP_FAILPOINT=N`.
pub fn failpoint() {
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
}
