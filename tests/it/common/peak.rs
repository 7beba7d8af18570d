//! Peak memory of one command, its own: the command runs under GNU time (`/usr/bin/time -f %M`),
//! which reports `wait4`'s rusage of that child alone. `getrusage(RUSAGE_CHILDREN)` would not do:
//! in one test process it covers every other test's children too (a DKMS build's compiler), and a
//! child forked straight from the test process starts with the test process's high-water mark.

use std::path::Path;
use std::process::Command;

/// `c`, to be run under GNU time writing the peak RSS (KiB) to `out`.
pub fn measured(c: &Command, out: &Path) -> Command {
    assert!(
        Path::new("/usr/bin/time").exists(),
        "/usr/bin/time (Debian package time; tests/run installs it)"
    );
    let mut w = Command::new("/usr/bin/time");
    w.arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(out)
        .arg(c.get_program());
    w.args(c.get_args());
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => w.env(k, v),
            None => w.env_remove(k),
        };
    }
    if let Some(d) = c.get_current_dir() {
        w.current_dir(d);
    }
    w
}

/// The peak RSS in KiB that GNU time wrote to `out`.
pub fn peak_kib(out: &Path) -> u64 {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    text.lines()
        .rev()
        .find_map(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS from /usr/bin/time: {text:?}"))
}
