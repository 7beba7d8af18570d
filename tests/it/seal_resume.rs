//! `guestprep seal`, interrupted and hostile: killed (SIGKILL through `GUESTPREP_FAILPOINT`) at
//! every step of a seal, the next run finishes it with the manifest an uninterrupted seal writes
//! (the template's machine-id and host name although the first run removed them, every path of
//! both runs, the first run's seal id), no temp file or journal is left, and a third run changes
//! nothing; a sealed template sealed again keeps its first facts; FIFOs and devices where seal
//! expects files are removed or reported, never read, and every run ends in time.

use crate::common;
use common::seal::*;
use common::*;

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const MANIFEST: &str = "var/lib/guestprep/seal.json";
const JOURNAL: &str = "var/lib/guestprep/seal.journal.json";

/// `guestprep seal --yes --root ROOT --policy policies/ [--policy EXTRA] ARGS`, killed by itself
/// at write step `failpoint`; fails the test if it runs longer than 60 s (a read that blocks).
fn run_seal(
    root: &Path,
    extra_policy: Option<&Path>,
    args: &[&str],
    failpoint: Option<u64>,
) -> Output {
    let mut c = Command::new(BIN);
    c.args(["seal", "--yes", "--root"])
        .arg(root)
        .arg("--policy")
        .arg(policies());
    if let Some(p) = extra_policy {
        c.arg("--policy").arg(p);
    }
    c.args(args)
        .env_remove("GUESTPREP_ROOT")
        .env("NO_COLOR", "1");
    if let Some(n) = failpoint {
        c.env("GUESTPREP_FAILPOINT", n.to_string());
    }
    in_time(c)
}

/// Runs `c` with no input, its output in files (no pipe to fill), failing if it outlives 60 s.
fn in_time(mut c: Command) -> Output {
    let out = tempfile::tempdir().unwrap();
    let (o, e) = (out.path().join("out"), out.path().join("err"));
    let mut child = c
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&o).unwrap())
        .stderr(std::fs::File::create(&e).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{c:?} still running after 60 s (blocked on a read?): {}",
                std::fs::read_to_string(&e).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: std::fs::read(&o).unwrap(),
        stderr: std::fs::read(&e).unwrap(),
    }
}

/// Every entry under `dir`: kind, content (regular files and link targets only: a FIFO is never
/// opened) and mode; with `exact`, inode and mtime too (to prove nothing was rewritten).
fn tree(dir: &Path, exact: bool) -> BTreeMap<String, (char, Vec<u8>, u32, u64, i64)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let (kind, data) = if ft.is_dir() {
                todo.push(p.clone());
                ('d', Vec::new())
            } else if ft.is_symlink() {
                (
                    'l',
                    std::fs::read_link(&p)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                )
            } else if ft.is_file() {
                ('f', std::fs::read(&p).unwrap())
            } else if ft.is_fifo() {
                ('p', Vec::new())
            } else {
                ('c', m.rdev().to_le_bytes().to_vec())
            };
            let (ino, mtime) = if exact && !ft.is_dir() {
                (m.ino(), m.mtime_nsec() + m.mtime() * 1_000_000_000)
            } else {
                (0, 0)
            };
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            out.insert(rel, (kind, data, m.mode(), ino, mtime));
        }
    }
    out
}

fn read_json(root: &Path, rel: &str) -> Option<serde_json::Value> {
    let text = std::fs::read(root.join(rel)).ok()?;
    Some(serde_json::from_slice(&text).unwrap())
}

/// A manifest without what differs between two seals of two copies (its id and time).
fn facts(m: &serde_json::Value) -> serde_json::Value {
    let mut m = m.clone();
    let o = m.as_object_mut().unwrap();
    o.remove("sealId");
    o.remove("sealedAt");
    m
}

/// Kills a seal of a copy of `base` at every write step in turn (`GUESTPREP_FAILPOINT=1, 2, …`
/// until a run is not killed) and checks the run after each kill finishes it exactly as an
/// uninterrupted seal does. Returns the number of kill points.
fn killed_at_every_step(base: &Path, pol: Option<&Path>, args: &[&str]) -> (usize, usize) {
    let copy = || {
        let t = tempfile::tempdir().unwrap();
        copy_tree(base, t.path());
        t
    };
    let reference = copy();
    let o = run_seal(reference.path(), pol, args, None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let want = read_json(reference.path(), MANIFEST).unwrap();
    let mut want_tree = tree(reference.path(), false);
    want_tree.remove(MANIFEST);
    let steps = want["removed"].as_array().unwrap().len();
    let mut kills = 0;
    for n in 1.. {
        let t = copy();
        let r = t.path();
        let o = run_seal(r, pol, args, Some(n));
        if code(&o) == 0 {
            break;
        }
        assert_eq!(o.status.signal(), Some(9), "step {n}: {}", stderr(&o));
        kills += 1;
        // What the killed run left: the journal (or a finished manifest) names the seal to finish.
        let left = read_json(r, JOURNAL).or_else(|| read_json(r, MANIFEST));
        if let Some(j) = read_json(r, JOURNAL) {
            let before = tree(r, true);
            let mut dry = args.to_vec();
            dry.push("--dry-run");
            let o = run_seal(r, pol, &dry, None);
            let want = format!(
                "would finish seal {} of {}",
                j["sealId"].as_str().unwrap(),
                j["sealedAt"].as_str().unwrap()
            );
            assert!(stderr(&o).contains(&want), "step {n}: {}", stderr(&o));
            assert_eq!(
                tree(r, true),
                before,
                "step {n}: the dry run changed the image"
            );
        }
        let o = run_seal(r, pol, args, None);
        assert_eq!(code(&o), 0, "step {n}: the re-run failed: {}", stderr(&o));
        let got = read_json(r, MANIFEST).unwrap();
        assert_eq!(
            facts(&got),
            facts(&want),
            "step {n}: not the uninterrupted seal's manifest"
        );
        if let Some(left) = left {
            assert_eq!(
                got["sealId"], left["sealId"],
                "step {n}: the first run's seal id"
            );
            assert_eq!(
                got["sealedAt"], left["sealedAt"],
                "step {n}: the first run's time"
            );
        }
        let mut now = tree(r, false);
        let temps: Vec<&String> = now
            .keys()
            .filter(|k| k.contains(".guestprep-tmp.") || k.as_str() == JOURNAL)
            .collect();
        assert!(temps.is_empty(), "step {n}: left behind: {temps:?}");
        now.remove(MANIFEST);
        assert_eq!(
            now, want_tree,
            "step {n}: the image differs from an uninterrupted seal's"
        );
        // A third run changes nothing: no file rewritten, not even the manifest.
        let before = tree(r, true);
        let o = run_seal(r, pol, args, None);
        assert_eq!(code(&o), 0, "step {n}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("is sealed already"),
            "step {n}: {}",
            stderr(&o)
        );
        assert_eq!(
            tree(r, true),
            before,
            "step {n}: the third run changed the image"
        );
    }
    (kills, steps)
}

#[test]
fn a_default_seal_killed_at_any_step_is_finished_by_the_next() {
    let outside = tempfile::tempdir().unwrap();
    let base = stateful_root(outside.path());
    let outside_before = snapshot(outside.path());
    let (kills, steps) = killed_at_every_step(base.path(), None, &[]);
    // Six steps of the journal's write, one before each path, six of the manifest's.
    assert!(steps > 30, "{steps}");
    assert_eq!(kills, 6 + steps + 6, "every step was a kill point");
    assert_same(
        &outside_before,
        &snapshot(outside.path()),
        "outside the root",
    );
}

/// `[seal] machine_id = "uninitialized"` writes /etc/machine-id atomically (a temp file beside it
/// that a kill leaves), and net-hostname empties /etc/hostname: the manifest still names the
/// template's machine-id and host name after a kill past both.
#[test]
fn an_uninitialized_seal_killed_at_any_step_keeps_the_templates_facts() {
    let base = stateful_root(tempfile::tempdir().unwrap().path());
    let pol = tempfile::tempdir().unwrap();
    std::fs::write(
        pol.path().join("95-seal.toml"),
        "[seal]\nmachine_id = \"uninitialized\"\n",
    )
    .unwrap();
    let args = ["--operations", "ssh-hostkeys,machine-id,net-hostname"];
    let (kills, steps) = killed_at_every_step(base.path(), Some(pol.path()), &args);
    assert_eq!(steps, 6, "three host keys, two machine-ids, the host name");
    assert_eq!(
        kills,
        6 + steps + 6 + 6,
        "the machine-id's write has six more"
    );
    let done = tempfile::tempdir().unwrap();
    copy_tree(base.path(), done.path());
    assert_eq!(
        code(&run_seal(done.path(), Some(pol.path()), &args, None)),
        0
    );
    let m = read_json(done.path(), MANIFEST).unwrap();
    assert_eq!(m["templateMachineId"], "76b56bea78ec43faafb1c3ad97d5dd4b");
    assert_eq!(m["templateHostname"], "k8s-template");
    assert_eq!(content(done.path(), "/etc/machine-id"), "uninitialized\n");
}

/// Sealing a sealed template keeps its first facts (seal id, time, host name, machine-id: the
/// first seal removed the last two), adds the new operations and paths, and `--force` changes
/// only the gate (and `forced`). A machine that booted since (a new machine-id: a clone made a
/// template of its own) is sealed afresh.
#[test]
fn sealing_a_sealed_template_keeps_its_first_facts() {
    let root = stateful_root(tempfile::tempdir().unwrap().path());
    let r = root.path();
    let args = ["--operations", "ssh-hostkeys,net-hostname"];
    assert_eq!(code(&run_seal(r, None, &args, None)), 0);
    let first = read_json(r, MANIFEST).unwrap();
    assert_eq!(first["templateHostname"], "k8s-template");
    assert_eq!(content(r, "/etc/hostname"), "", "net-hostname emptied it");

    let o = run_seal(r, None, &[], None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "first sealed {}",
            first["sealedAt"].as_str().unwrap()
        )),
        "{}",
        stderr(&o)
    );
    let second = read_json(r, MANIFEST).unwrap();
    for k in [
        "sealId",
        "sealedAt",
        "templateHostname",
        "templateMachineId",
    ] {
        assert_eq!(second[k], first[k], "{k}");
    }
    assert_eq!(
        content(r, "/etc/machine-id"),
        "",
        "the machine-id is gone now"
    );
    let ops: Vec<&str> = second["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    assert_eq!(ops.first(), Some(&"ssh-hostkeys"));
    assert_eq!(ops.last(), Some(&"net-hostname"));
    assert!(
        ops.contains(&"machine-id") && ops.contains(&"logfiles"),
        "{ops:?}"
    );
    let paths = |m: &serde_json::Value| -> Vec<String> {
        m["removed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["path"].as_str().unwrap().to_string())
            .collect()
    };
    let (p1, p2) = (paths(&first), paths(&second));
    assert_eq!(p2[..p1.len()], p1[..], "the first seal's paths first");
    assert!(p2.contains(&"/etc/machine-id".to_string()) && p2.len() > p1.len() + 30);

    // --force: the gate is passed over (and said: forced), the facts are still the first seal's.
    std::fs::write(r.join("etc/sysctl.d/90-guestprep.conf"), "x\n").unwrap();
    assert_eq!(code(&run_seal(r, None, &[], None)), 1, "drift: refused");
    let o = run_seal(r, None, &["--force", "--operations", "ssh-hostkeys"], None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let forced = read_json(r, MANIFEST).unwrap();
    assert_eq!(forced["forced"], true);
    for k in [
        "sealId",
        "sealedAt",
        "templateHostname",
        "templateMachineId",
        "removed",
        "operations",
    ] {
        assert_eq!(forced[k], second[k], "{k}");
    }

    // Booted since: a new machine-id. This is another machine now: a new seal.
    put(r, "/etc/machine-id", "fedcba9876543210fedcba9876543210\n");
    put(r, "/etc/hostname", "clone-7\n");
    put(r, "/etc/ssh/ssh_host_ed25519_key", "the clone's key\n");
    let o = run_seal(r, None, &["--force"], None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let fresh = read_json(r, MANIFEST).unwrap();
    assert_ne!(fresh["sealId"], first["sealId"]);
    assert_ne!(fresh["templateMachineId"], first["templateMachineId"]);
    assert_eq!(fresh["templateMachineId"].as_str().unwrap().len(), 32);
    assert_eq!(fresh["templateHostname"], "clone-7");
    assert_eq!(
        paths(&fresh),
        ["/etc/ssh/ssh_host_ed25519_key", "/etc/machine-id"]
    );
}

fn fifo(root: &Path, abs: &str) {
    let p = root.join(abs.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&p);
    nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
}

/// A FIFO or a device where seal expects a file: machine state (both machine-ids, a rotated log,
/// a file in /tmp) removed, never opened; a FIFO or device it would truncate (a logger's pipe, a
/// device node, /etc/hostname) reported and left; one it must read to plan (dpkg's file lists,
/// /etc/passwd) or its own manifest refused before anything changes. Every run ends in time.
#[test]
fn fifos_and_devices_are_removed_or_reported_never_read() {
    let root = stateful_root(tempfile::tempdir().unwrap().path());
    let r = root.path();
    // Refused, nothing changed: what seal must read to plan, and its own record.
    for (abs, needle) in [
        (
            "/var/lib/dpkg/info/evil.list",
            "dpkg's file list /var/lib/dpkg/info/evil.list",
        ),
        ("/etc/passwd", "reading /etc/passwd"),
        (
            "/var/lib/guestprep/seal.json",
            "reading the seal manifest /var/lib/guestprep/seal.json",
        ),
        (
            "/var/lib/guestprep/seal.journal.json",
            "reading the seal journal",
        ),
    ] {
        let kept = std::fs::read(r.join(&abs[1..])).ok();
        fifo(r, abs);
        let before = tree(r, true);
        let o = run_seal(r, None, &[], None);
        assert_fails(&o, 4, needle);
        assert!(
            stderr(&o).contains("FIFO") && stderr(&o).contains("nothing was changed"),
            "{}",
            stderr(&o)
        );
        assert_eq!(tree(r, true), before, "{abs}: refused, yet changed");
        std::fs::remove_file(r.join(&abs[1..])).unwrap();
        if let Some(k) = kept {
            std::fs::write(r.join(&abs[1..]), k).unwrap();
        }
    }

    for abs in [
        "/etc/machine-id",
        "/var/lib/dbus/machine-id",
        "/var/log/syslog.1",
        "/tmp/pipe",
        "/var/log/xconsole",
        "/etc/hostname",
    ] {
        fifo(r, abs);
    }
    let dev = r.join("var/log/null-device");
    nix::sys::stat::mknod(
        &dev,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    let o = run_seal(
        r,
        None,
        &["--dry-run", "--operations", "defaults,+net-hostname"],
        None,
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    for (line, what) in [
        (
            "would remove /etc/machine-id (0 B) [machine-id]",
            "a FIFO machine-id: removed",
        ),
        (
            "would remove /var/lib/dbus/machine-id (0 B) [machine-id]",
            "dbus's too",
        ),
        (
            "would remove /var/log/syslog.1 (0 B) [logfiles]",
            "a rotated log",
        ),
        ("would remove /tmp/pipe (0 B) [tmp-files]", "a FIFO in /tmp"),
        (
            "would leave /var/log/xconsole: a FIFO: not a regular file, not truncated",
            "a logger's pipe",
        ),
        (
            "would leave /var/log/null-device: a character device: not a regular file, not truncated",
            "a device",
        ),
        (
            "would leave /etc/hostname: a FIFO: not a regular file, not truncated",
            "the host name",
        ),
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "{what}: no `{line}` in\n{out}"
        );
    }
    let o = run_seal(r, None, &["--operations", "defaults,+net-hostname"], None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    for gone in [
        "/etc/machine-id",
        "/var/lib/dbus/machine-id",
        "/var/log/syslog.1",
        "/tmp/pipe",
    ] {
        assert!(!exists(r, gone), "{gone}");
    }
    let t = tree(r, false);
    assert_eq!(t["var/log/xconsole"].0, 'p');
    assert_eq!(t["etc/hostname"].0, 'p');
    assert_eq!(t["var/log/null-device"].0, 'c');
    let m = read_json(r, MANIFEST).unwrap();
    assert_eq!(m["templateMachineId"], "", "a FIFO holds no machine-id");
    // Its clones make a machine-id at first boot; the sealed image seals to nothing more.
    let o = run_seal(r, None, &["--operations", "defaults,+net-hostname"], None);
    assert!(stderr(&o).contains("is sealed already"), "{}", stderr(&o));
}
