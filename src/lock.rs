//! One `apply` at a time per root: an exclusive `flock` on `/run/guestprep/apply.lock` on the
//! running system, and on the root directory itself for an offline image (an offline run writes
//! nothing into the image but what the policy asks: no lock file, no host PID in a sealed image).
//!
//! A second apply waits (saying so, and for whom) up to a timeout, then fails clearly. The lock
//! goes with the process, so a killed apply never leaves a stale lock behind.

use std::fs::OpenOptions;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::fcntl::{Flock, FlockArg};

use crate::root::Root;

pub const LOCK_FILE: &str = crate::paths::APPLY_LOCK;

fn libc_flags() -> i32 {
    (nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NOCTTY)
        .bits()
}

pub struct ApplyLock {
    _lock: Flock<std::fs::File>,
}

pub fn acquire(root: &Root, timeout: Duration) -> Result<ApplyLock> {
    let (path, mut file) = if root.is_live() {
        let path = root.resolve(LOCK_FILE)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            // A FIFO or a link planted there is refused, never blocked on or followed.
            .custom_flags(libc_flags())
            .open(&path)
            .with_context(|| format!("opening lock file {}", path.display()))?;
        crate::saferead::regular(&file, &path.display().to_string())?;
        (path, file)
    } else {
        let path = root.dir().to_path_buf();
        let file = std::fs::File::open(&path)
            .with_context(|| format!("opening {} to lock it", path.display()))?;
        (path, file)
    };
    let live = root.is_live();
    let start = Instant::now();
    let mut said = false;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                if live {
                    lock.set_len(0).ok();
                    lock.rewind().ok();
                    let _ = writeln!(lock, "{}", std::process::id());
                }
                return Ok(ApplyLock { _lock: lock });
            }
            Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
                file = f;
                if start.elapsed() >= timeout {
                    bail!(
                        "another guestprep apply{} holds {} since more than {}s; not waiting longer (see --lock-timeout)",
                        holder(&mut file),
                        path.display(),
                        timeout.as_secs()
                    );
                }
                if !said {
                    eprintln!(
                        "guestprep: waiting for another guestprep apply{} to finish ({})",
                        holder(&mut file),
                        path.display()
                    );
                    said = true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err((_, e)) => return Err(e).with_context(|| format!("locking {}", path.display())),
        }
    }
}

fn holder(f: &mut std::fs::File) -> String {
    if f.metadata().is_ok_and(|m| m.is_dir()) {
        return " (on the same image)".to_string();
    }
    let mut s = String::new();
    let _ = f.rewind();
    let _ = f.read_to_string(&mut s);
    match s.trim() {
        "" => String::new(),
        pid => format!(" (pid {pid})"),
    }
}
