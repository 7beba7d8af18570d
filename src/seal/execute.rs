//! Carrying a plan out: each step re-checks what it acts on, so nothing is followed even if the
//! tree changed since planning, and nothing but a regular file or a directory is ever opened (a
//! FIFO or device that appeared since planning is refused, not opened for writing).
//!
//! Each step is a crash-test point (`GUESTPREP_FAILPOINT`, see [`crate::fsutil::failpoint`]).

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::plan::{Action, Plan};
use crate::root::Root;

/// Carries out a plan. Each step re-checks what it acts on (no symlink above it; a truncated file
/// still a regular file) so nothing is followed even if the tree changed since planning.
pub fn execute(root: &Root, plan: &Plan) -> Result<()> {
    for s in &plan.steps {
        crate::fsutil::failpoint();
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
            Action::RemoveLines => remove_lines(root, &s.path, &s.lines)
                .with_context(|| format!("taking lines out of {}", s.path))?,
        }
    }
    // The directories touched, synced: the seal survives the power-off that follows.
    let dirs: BTreeSet<&str> = plan
        .steps
        .iter()
        .filter_map(|s| Path::new(&s.path).parent().and_then(Path::to_str))
        .collect();
    for d in dirs {
        // Opened as a directory (O_DIRECTORY): a FIFO put there since is refused, never opened.
        if let Ok(Some(fd)) = root.open_dir(d, false) {
            let _ = nix::unistd::fsync(&fd);
        }
    }
    Ok(())
}

/// Cuts a regular file to zero bytes in place (one ftruncate: atomic), never through a symlink;
/// what is not a regular file (any more) is refused before it is opened, and again on the open
/// descriptor.
fn truncate(host: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::symlink_metadata(host) {
        Ok(m) if !m.is_file() => bail!(
            "a {} now, not a regular file",
            crate::saferead::kind_of(m.file_type())
        ),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        _ => {}
    }
    let f = match std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
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

/// Takes exactly `lines` out of a regular file (re-checked: a link or device is refused), keeping
/// its mode and owner, atomically.
fn remove_lines(root: &Root, abs: &str, lines: &[String]) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(root.path(abs)?)?;
    if !meta.is_file() {
        bail!("{abs} is no longer a regular file");
    }
    let Some(text) = root.read_string(abs)? else {
        return Ok(());
    };
    let mut out = String::with_capacity(text.len());
    for l in text.lines() {
        if !lines.iter().any(|x| x == l) {
            out.push_str(l);
            out.push('\n');
        }
    }
    crate::fsutil::write_atomic(root, abs, out.as_bytes(), Some(meta.mode() & 0o7777))?;
    crate::fsutil::set_attrs(root, abs, None, Some(meta.uid()), Some(meta.gid()))?;
    Ok(())
}
