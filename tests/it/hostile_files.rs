//! Hostile files in an image: a FIFO, a character device (`/dev/zero`'s numbers) or a 2 GiB sparse
//! file at every file of a converged example root, one at a time, run through `verify`, `apply`,
//! `seal --dry-run` and `daemon` with `--root`. None may hang (each runs under a hard deadline),
//! abort, or use unbounded memory; `verify` either names the path and what it is in an `error`
//! item, or did not read that file at all (its verdicts equal the untouched root's). The daemon
//! still publishes a report and stops within a second of SIGTERM. A policy fragment that is not a
//! regular file is exit 2.

use crate::common;
use common::*;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A hang is a failure: each command gets this long (it takes milliseconds).
const DEADLINE: &str = "30";

#[derive(Clone, Copy, Debug)]
enum Hostile {
    Fifo,
    CharDevice,
    Sparse,
}

impl Hostile {
    fn make(self, at: &Path) {
        let _ = std::fs::remove_file(at);
        match self {
            Hostile::Fifo => {
                nix::unistd::mkfifo(at, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap()
            }
            Hostile::CharDevice => nix::sys::stat::mknod(
                at,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o666),
                nix::sys::stat::makedev(1, 5),
            )
            .expect("mknod (the tests run as root)"),
            Hostile::Sparse => std::fs::File::create(at).unwrap().set_len(2 << 30).unwrap(),
        }
    }

    /// What an error about it says.
    fn said(self) -> &'static str {
        match self {
            Hostile::Fifo => "is a FIFO",
            Hostile::CharDevice => "is a character device",
            Hostile::Sparse => "more than the",
        }
    }
}

/// Every regular file of `dir`, relative.
fn files(dir: &Path) -> Vec<String> {
    snapshot(dir)
        .into_iter()
        .filter(|(k, (_, mode, _, _))| !k.ends_with('/') && mode & 0o170000 == 0o100000)
        .map(|(k, _)| k)
        .collect()
}

/// `guestprep ARGS` under a hard deadline.
fn bounded(args: &[&str]) -> std::process::Output {
    bounded_peak(args).0
}

/// [`bounded`], and the run's own peak RSS in KiB.
fn bounded_peak(args: &[&str]) -> (std::process::Output, u64) {
    let mut c = Command::new("timeout");
    c.args(["-s", "KILL", DEADLINE, BIN])
        .args(args)
        .env("NO_COLOR", "1");
    let peak = tempfile::NamedTempFile::new().unwrap();
    let o = crate::common::peak::measured(&c, peak.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (o, crate::common::peak::peak_kib(peak.path()))
}

/// Each item's id and status.
fn verdicts(report: &serde_json::Value) -> BTreeMap<String, String> {
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_string(),
                i["status"].to_string(),
            )
        })
        .collect()
}

#[test]
fn fifos_devices_and_sparse_giants_in_an_image_never_hang_abort_or_pass_unread() {
    let base = converged_root();
    let pol = policies();
    let pol = pol.to_str().unwrap();
    let o = bounded(&[
        "verify",
        "--root",
        base.path().to_str().unwrap(),
        "--policy",
        pol,
        "--json",
    ]);
    let baseline = verdicts(&json(&o));
    let paths = files(base.path());
    assert!(
        paths.len() >= 20,
        "only {} files in the converged root",
        paths.len()
    );

    let mut cases = Vec::new();
    for p in &paths {
        for h in [Hostile::Fifo, Hostile::CharDevice, Hostile::Sparse] {
            cases.push((p.clone(), h));
        }
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let problems = std::sync::Mutex::new(Vec::<String>::new());
    let named = std::sync::atomic::AtomicUsize::new(0);
    let peak = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some((rel, h)) = cases.get(i) else { return };
                    let (p, said, kib) = one_case(base.path(), pol, rel, *h, &baseline);
                    peak.fetch_max(kib, std::sync::atomic::Ordering::SeqCst);
                    if said {
                        named.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    problems.lock().unwrap().extend(p);
                }
            });
        }
    });
    let problems = problems.into_inner().unwrap();
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    let named = named.into_inner();
    // Most of these files are read by some check: the errors must be there, not just absent.
    assert!(
        named * 3 >= cases.len(),
        "only {named} of {} cases named the file",
        cases.len()
    );
    let peak = peak.into_inner();
    eprintln!(
        "{} hostile files ({} files × FIFO, device, 2 GiB sparse), 3 verbs each: {named} named in \
         an error item, the rest not read; peak RSS of any run {} MiB",
        cases.len(),
        paths.len(),
        peak / 1024
    );
    assert!(peak < 200 * 1024, "a run used {} MiB", peak / 1024);
}

/// One hostile file; the problems found, and whether verify named it.
fn one_case(
    base: &Path,
    pol: &str,
    rel: &str,
    h: Hostile,
    baseline: &BTreeMap<String, String>,
) -> (Vec<String>, bool, u64) {
    let case = tempfile::tempdir().unwrap();
    copy_tree(base, case.path());
    h.make(&case.path().join(rel));
    let root = case.path().to_str().unwrap();
    let what = format!("/{rel} as {h:?}");
    let mut problems = Vec::new();
    let mut named = false;
    let mut peak = 0;
    for verb in [
        &["verify", "--json"][..],
        &["apply"],
        &["seal", "--dry-run"],
    ] {
        let mut args = vec![verb[0], "--root", root, "--policy", pol];
        args.extend(&verb[1..]);
        let (o, kib) = bounded_peak(&args);
        peak = peak.max(kib);
        let rc = o.status.code().unwrap_or(-1);
        let err = stderr(&o);
        if !(0..=6).contains(&rc) {
            problems.push(format!(
                "{} with {what}: exit {rc} (137: hung)\n{err}",
                verb[0]
            ));
            continue;
        }
        if err.contains("panicked") || err.len() > 64 * 1024 {
            problems.push(format!(
                "{} with {what}: {}",
                verb[0],
                &err[..err.len().min(2000)]
            ));
        }
        if verb[0] == "verify" {
            let rep = json(&o);
            let hit = rep["items"].as_array().unwrap().iter().any(|i| {
                i["status"] == "error"
                    && i["message"]
                        .as_str()
                        .is_some_and(|m| m.contains(&format!("/{rel}")) && m.contains(h.said()))
            });
            named = hit;
            if !hit && verdicts(&rep) != *baseline {
                problems.push(format!(
                    "verify with {what}: verdicts changed but no error item names the file:\n{}",
                    serde_json::to_string_pretty(&rep["items"]).unwrap()
                ));
            }
        }
    }
    if matches!(h, Hostile::Fifo) {
        problems.extend(daemon_stops(root, pol, &what));
    }
    (problems, named, peak)
}

/// The daemon on a hostile image publishes a report and stops within a second of SIGTERM.
fn daemon_stops(root: &str, pol: &str, what: &str) -> Option<String> {
    let report = Path::new(root).join("run/guestprep/report.json");
    let _ = std::fs::remove_file(&report);
    let mut child = Command::new(BIN)
        .args(["daemon", "--root", root, "--policy", pol])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !report.exists() && t.elapsed() < Duration::from_secs(15) {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let published = report.exists();
    let exited_early = child.try_wait().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .ok();
    let t = Instant::now();
    let mut status = None;
    while t.elapsed() < Duration::from_secs(5) {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let stopped_in = t.elapsed();
    if status.is_none() {
        child.kill().ok();
    }
    let _ = child.wait();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    if let Some(s) = exited_early {
        // The report itself, or the policy, may be the hostile file: then the daemon says why.
        return (!err.contains(Hostile::Fifo.said()))
            .then(|| format!("daemon with {what} exited {s} without naming the FIFO:\n{err}"));
    }
    if !published && !what.contains("run/guestprep/report.json") {
        return Some(format!("daemon with {what}: no report within 15 s\n{err}"));
    }
    (stopped_in > Duration::from_secs(1) || status.is_none())
        .then(|| format!("daemon with {what}: SIGTERM took {stopped_in:?}\n{err}"))
}

#[test]
fn a_policy_that_is_not_a_regular_file_is_exit_2() {
    for h in [Hostile::Fifo, Hostile::CharDevice, Hostile::Sparse] {
        // Given on the command line, in a directory given on the command line, or found in the
        // image's drop-in places.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("10-x.toml");
        h.make(&file);
        let root = example_root();
        let r = root.path().to_str().unwrap();
        for pol in [file.to_str().unwrap(), dir.path().to_str().unwrap()] {
            let o = bounded(&["verify", "--root", r, "--policy", pol]);
            assert_fails(&o, 2, h.said());
        }
        for at in [
            "etc/guestprep/policy.toml",
            "etc/guestprep/policy.d/10-x.toml",
        ] {
            let root = example_root();
            let p = root.path().join(at);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            h.make(&p);
            let before = snapshot(root.path());
            let o = bounded(&["apply", "--root", root.path().to_str().unwrap()]);
            assert_fails(&o, 2, h.said());
            assert!(stderr(&o).contains(at), "{at}: {}", stderr(&o));
            assert_same(&before, &snapshot(root.path()), "apply changed the image");
        }
    }
}

#[test]
fn a_stuck_round_is_published_as_errors_and_sigterm_still_stops_the_daemon() {
    // A round that cannot finish in time: 20,000 drop-ins in /etc/sysctl.d for the sysctl items
    // to read (about a second of work against a 50 ms `verify_timeout`).
    let root = example_root();
    let d = root.path().join("etc/sysctl.d");
    for i in 0..20_000 {
        std::fs::write(d.join(format!("{i:06}-x.conf")), "kernel.x = 1\n").unwrap();
    }
    let pol = tempfile::tempdir().unwrap();
    let p = pol.path().join("p.toml");
    std::fs::write(
        &p,
        "[agent]\nverify_timeout = \"50ms\"\n[sysctl]\n\"net.ipv4.ip_forward\" = 1\n\
         \"vm.swappiness\" = 10\n[swap]\nenabled = false\n",
    )
    .unwrap();
    let mut daemon = common::daemon::Daemon::start(root.path(), &[&p]);
    // READY=1 came with the stuck round's report: errors for what it could not finish.
    let rep = daemon.read_report().expect("a report at READY=1");
    let statuses: BTreeMap<String, String> = verdicts(&rep);
    eprintln!("the stuck round's report: {statuses:?}");
    let stuck: Vec<&serde_json::Value> = rep["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| {
            i["status"] == "error"
                && i["message"]
                    .as_str()
                    .unwrap()
                    .contains("did not finish within 50ms")
        })
        .collect();
    assert_eq!(stuck.len(), 1, "one item is the stuck one: {rep:#}");
    assert!(
        rep["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["id"].as_str().unwrap().starts_with("sysctl:"))
            .all(|i| i["status"] == "error"),
        "no sysctl item may keep a verdict it did not reach: {rep:#}"
    );
    assert_ne!(rep["summary"]["status"], "compliant", "{rep:#}");
    // SIGTERM in the middle of the round: stopped within a second.
    let t = Instant::now();
    let st = daemon.stop();
    let took = t.elapsed();
    eprintln!("SIGTERM during a stuck round: stopped in {took:?} ({st})");
    assert!(took < Duration::from_secs(1), "SIGTERM took {took:?}");
    assert!(st.success(), "{st}");
}
