//! Waiting for dpkg's lock. On a fresh cloud image `apt-daily`, `unattended-upgrades` or
//! cloud-init's own package module often hold it exactly when cloud-init's runcmd runs guestprep:
//! apt-get would fail at once. guestprep waits, bounded, saying who holds it, and never breaks it.
//!
//! dpkg and apt lock with `fcntl` record locks on `/var/lib/dpkg/lock-frontend` (apt, first) and
//! `/var/lib/dpkg/lock` (dpkg); `F_GETLK` tells whether one is held and by which process.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::root::Root;

/// The lock files, in the order apt takes them.
pub const LOCKS: &[&str] = &["/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock"];

/// How long to wait for another package manager before giving up.
pub const TIMEOUT: Duration = Duration::from_secs(600);

/// Whether a command takes dpkg's lock (apt-get, apt-mark, dpkg), `env VAR=…` prefixes skipped.
pub fn needs_lock(argv: &[String]) -> bool {
    let prog = crate::exec::command_of(argv)
        .first()
        .map(|p| p.rsplit('/').next().unwrap_or(p));
    matches!(prog, Some("apt-get" | "apt" | "apt-mark" | "dpkg"))
}

/// The PID holding a write lock on the file, if one is held (0 when the holder is in another
/// PID namespace).
fn holder(file: &std::fs::File) -> Result<Option<i32>> {
    let mut fl = nix::libc::flock {
        l_type: nix::libc::F_WRLCK as i16,
        l_whence: nix::libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    nix::fcntl::fcntl(file, nix::fcntl::FcntlArg::F_GETLK(&mut fl))
        .context("asking who holds dpkg's lock (F_GETLK)")?;
    Ok((fl.l_type != nix::libc::F_UNLCK as i16).then_some(fl.l_pid))
}

fn who(pid: i32) -> String {
    if pid <= 0 {
        return "a process outside this PID namespace".to_string();
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    match comm.trim() {
        "" => format!("PID {pid}"),
        c => format!("{c} (PID {pid})"),
    }
}

/// Waits until no process holds dpkg's locks in `root`, up to `timeout`, printing once whom it
/// waits for and then every 30 s. Never takes or breaks the lock: apt-get takes it itself.
pub fn wait_free(root: &Root, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    let mut said: Option<Instant> = None;
    'outer: loop {
        for lock in LOCKS {
            // Opened read-only (resolved inside the root): a lock file is never created or changed.
            let path = root.resolve(lock)?;
            let file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
            };
            if let Some(pid) = holder(&file)? {
                let waited = start.elapsed();
                if waited >= timeout {
                    bail!(
                        "{lock} is still held by {} after {}s: another package manager is running \
                         (apt-daily, unattended-upgrades, cloud-init?); not breaking its lock. Run apply again when it is done",
                        who(pid),
                        waited.as_secs()
                    );
                }
                if said.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
                    eprintln!(
                        "guestprep: waiting for dpkg's lock {lock}, held by {} ({}s so far, up to {}s)",
                        who(pid),
                        waited.as_secs(),
                        timeout.as_secs()
                    );
                    said = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(500));
                continue 'outer;
            }
        }
        if said.is_some() {
            eprintln!(
                "guestprep: dpkg's lock is free after {:.1}s",
                start.elapsed().as_secs_f64()
            );
        }
        return Ok(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_commands_take_the_lock() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(needs_lock(&v(&[
            "env",
            "DEBIAN_FRONTEND=noninteractive",
            "apt-get",
            "install"
        ])));
        assert!(needs_lock(&v(&["apt-mark", "hold", "--", "x"])));
        assert!(needs_lock(&v(&["/usr/bin/dpkg", "-i"])));
        assert!(!needs_lock(&v(&["dkms", "install"])));
        assert!(!needs_lock(&v(&["modprobe", "--", "x"])));
    }

    #[test]
    fn a_free_lock_costs_no_wait() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("var/lib/dpkg")).unwrap();
        std::fs::write(t.path().join("var/lib/dpkg/lock-frontend"), "").unwrap();
        let root = Root::new(t.path()).unwrap();
        let start = Instant::now();
        wait_free(&root, Duration::from_secs(5)).unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "nothing held: no wait"
        );
    }
}
