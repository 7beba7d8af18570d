//! `verify` and a no-op `apply` read files directly and spawn no subprocess: proved with strace
//! (every execve and process-creating clone of the run is recorded). CI installs strace; without it
//! this test fails rather than pass by skipping.

use crate::common;
use common::*;

fn execs_and_forks(args: &[&str]) -> (i32, Vec<String>) {
    traced(BIN, args)
}

fn traced(program: &str, args: &[&str]) -> (i32, Vec<String>) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let o = std::process::Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=execve,fork,vfork,clone,clone3",
            "-o",
        ])
        .arg(log.path())
        .arg(program)
        .args(args)
        .output()
        .expect("strace is needed for this test (apt-get install strace)");
    let text = std::fs::read_to_string(log.path()).unwrap();
    // Threads are clones too: keep only process creation (no CLONE_THREAD) and execs.
    let lines = text
        .lines()
        .filter(|l| {
            (l.contains("execve(") || l.contains("fork(") || l.contains("clone"))
                && !l.contains("CLONE_THREAD")
        })
        .map(str::to_string)
        .collect();
    (o.status.code().unwrap_or(-1), lines)
}

#[test]
fn verify_and_noop_apply_spawn_nothing() {
    let root = example_root();
    let r = root.path().to_str().unwrap();
    let p = policies();
    let p = p.to_str().unwrap();
    // Converged but for GRUB's arguments, pending offline (exit 3).
    assert_eq!(code(&guestprep(&["apply", "--root", r, "--policy", p])), 3);

    for cmd in [["verify", "--json"], ["apply", "--json"]] {
        let (c, lines) = execs_and_forks(&[cmd[0], cmd[1], "--root", r, "--policy", p]);
        assert_eq!(c, 3, "{cmd:?}");
        let execs: Vec<&String> = lines.iter().filter(|l| l.contains("execve(")).collect();
        assert_eq!(execs.len(), 1, "{cmd:?} ran more than itself: {lines:#?}");
        assert!(execs[0].contains(BIN));
        assert_eq!(lines.len(), 1, "{cmd:?} created a process: {lines:#?}");
    }

    // The same tracing does see subprocesses when there are some, so the check can fail.
    let (_, lines) = traced("/bin/sh", &["-c", "/bin/true; /bin/true"]);
    assert!(
        lines.iter().filter(|l| l.contains("execve(")).count() >= 3,
        "{lines:#?}"
    );
}
