//! Benchmark of `guestprep daemon` (the release binary) on a converged copy of the example root
//! with the shipped policies: resident memory when idle, CPU and wake-ups while nothing changes,
//! and how long a change to a managed file takes to reach the report. Then the same change on a
//! policy of 10,000 items more (sysctl keys, `[[files]]` and units, a third each): the
//! re-verification of a large policy. Prints numbers; asserts nothing about time (timed
//! assertions flake).
//!
//! Run: `cargo bench --bench daemon` (GUESTPREP_BENCH_IDLE_SECS, GUESTPREP_BENCH_CHANGES;
//! GUESTPREP_BENCH_LARGE_ITEMS=10000 and GUESTPREP_BENCH_LARGE_CHANGES=8, 0 to skip).

mod common;

use common::scale::Kind;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// (utime+stime in clock ticks, voluntary context switches) of a process.
fn cpu(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    (ticks, status(pid, "voluntary_ctxt_switches"))
}

fn status(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Kills the daemon if the benchmark stops early (a panic unwinds through this).
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env_num(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// A daemon started on `args` with its notify socket and log in `dir`, once it said READY=1.
struct Daemon {
    child: Guard,
    pid: u32,
    log: std::path::PathBuf,
}

fn start(bin: &str, args: &[String], dir: &Path) -> (Daemon, Duration, String) {
    let log = dir.join("daemon.log");
    let sock = dir.join("notify");
    let notify = UnixDatagram::bind(&sock).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let t = Instant::now();
    let child = Guard(
        Command::new(bin)
            .arg("daemon")
            .args(args)
            .env("NOTIFY_SOCKET", &sock)
            .env("GUESTPREP_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let mut buf = [0u8; 512];
    let n = notify.recv(&mut buf).expect("READY=1 from the daemon");
    let ready = t.elapsed();
    let msg = String::from_utf8_lossy(&buf[..n]).replace('\n', "; ");
    (Daemon { child, pid, log }, ready, msg)
}

impl Daemon {
    /// The daemon's threads and where each waits, and its log: why no report came.
    fn stuck(&self, what: &str) -> ! {
        let threads: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", self.pid))
            .unwrap()
            .flatten()
            .map(|t| {
                let wchan = std::fs::read_to_string(t.path().join("wchan")).unwrap_or_default();
                let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
                format!(
                    "{} {} ({wchan})",
                    t.file_name().to_string_lossy(),
                    comm.trim()
                )
            })
            .collect();
        panic!(
            "{what}; daemon threads: {threads:?}; daemon log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// Time from each change of `file` (a bad line added, then the good text back) until the
    /// report says so; the report is parsed only when it is a new file (it is replaced whole).
    fn latencies(&self, root: &Path, file: &str, changes: usize) -> Vec<Duration> {
        let file = root.join(file.trim_start_matches('/'));
        let report = root.join("run/guestprep/report.json");
        let good = std::fs::read_to_string(&file).unwrap();
        let mut seen = None;
        let mut verdict = None;
        let mut compliant = || {
            let md = std::fs::metadata(&report).ok()?;
            let stamp = (md.ino(), md.mtime_nsec(), md.len());
            if seen != Some(stamp) {
                let v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&report).ok()?).ok()?;
                seen = Some(stamp);
                verdict = Some(v["compliant"] == true);
            }
            verdict
        };
        let mut lat = Vec::new();
        for i in 0..changes {
            let want = i % 2 == 1;
            let text = if want {
                good.clone()
            } else {
                format!("{good}server rogue.example.com\n")
            };
            let t = Instant::now();
            std::fs::write(&file, text).unwrap();
            while compliant() != Some(want) {
                if t.elapsed() > Duration::from_secs(60) {
                    self.stuck(&format!("no new report 60 s after change {i}"));
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            lat.push(t.elapsed());
            std::thread::sleep(Duration::from_millis(300));
        }
        lat.sort();
        lat
    }

    fn term(mut self) -> std::process::ExitStatus {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        self.child.0.wait().unwrap()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

const CHANGED: &str = "/etc/chrony/conf.d/50-guestprep.conf";

fn main() {
    let idle_secs = env_num("GUESTPREP_BENCH_IDLE_SECS", 15);
    let changes = env_num("GUESTPREP_BENCH_CHANGES", 20) as usize;
    let bin = env!("CARGO_BIN_EXE_guestprep");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let args = common::converged_root(bin, &root);

    let (d, ready, msg) = start(bin, &args, tmp.path());
    let pid = d.pid;
    println!("daemon: ready in {:.1} ms ({msg})", ms(ready));
    std::thread::sleep(Duration::from_secs(1));
    println!(
        "daemon: RSS after start {} kB (threads {})",
        status(pid, "VmRSS"),
        status(pid, "Threads")
    );

    // Idle: nothing changes. CPU ticks and wake-ups over the window; the verification thread
    // exits after 10 s unused, so the window's end shows the steady state.
    let (c0, w0) = cpu(pid);
    std::thread::sleep(Duration::from_secs(idle_secs));
    let (c1, w1) = cpu(pid);
    println!(
        "daemon: idle {idle_secs} s: CPU {} ticks (1 tick = 10 ms), {} wake-ups; RSS {} kB (RssAnon {} kB, RssFile {} kB), threads {}",
        c1 - c0,
        w1 - w0,
        status(pid, "VmRSS"),
        status(pid, "RssAnon"),
        status(pid, "RssFile"),
        status(pid, "Threads")
    );

    // Change → report latency.
    let (c0, _) = cpu(pid);
    let lat = d.latencies(&root, CHANGED, changes);
    let (c1, _) = cpu(pid);
    println!(
        "daemon: change → new report over {changes} changes: median {:.0} ms, p90 {:.0} ms, max {:.0} ms (includes the 200 ms debounce)",
        ms(lat[lat.len() / 2]),
        ms(lat[lat.len() * 9 / 10]),
        ms(*lat.last().unwrap())
    );
    println!(
        "daemon: CPU for {changes} re-verifications: {} ticks; peak RSS (VmHWM) {} kB",
        c1 - c0,
        status(pid, "VmHWM")
    );
    let st = d.term();
    println!("daemon: SIGTERM → exit {st}");
    large(bin, &root);
}

/// The change → report latency with 10,000 items more (a third each of sysctl keys,
/// `[[files]]` and units), on a copy of the converged root.
fn large(bin: &str, base: &Path) {
    let items = env_num("GUESTPREP_BENCH_LARGE_ITEMS", 10_000) as usize;
    let changes = env_num("GUESTPREP_BENCH_LARGE_CHANGES", 8) as usize;
    if items == 0 || changes == 0 {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let third = items / 3;
    let mix = [
        (Kind::Sysctl, items - 2 * third),
        (Kind::Files, third),
        (Kind::Units, third),
    ];
    let args = common::scale::build(bin, base, tmp.path(), &mix);
    let root = tmp.path().join("root");
    let (d, ready, _) = start(bin, &args, tmp.path());
    let pid = d.pid;
    println!(
        "daemon, {items} items more ({} sysctl keys, {third} [[files]], {third} units): ready in {:.0} ms (the first verification); RSS {} kB",
        mix[0].1,
        ms(ready),
        status(pid, "VmRSS")
    );
    let (c0, _) = cpu(pid);
    let lat = d.latencies(&root, CHANGED, changes);
    let (c1, _) = cpu(pid);
    let med = lat[lat.len() / 2];
    println!(
        "daemon, {items} items more: change → new report over {changes} changes: median {:.0} ms, max {:.0} ms (includes the 200 ms debounce; aim <= 1000 ms: {}); CPU {:.0} ms per re-verification; peak RSS (VmHWM) {} kB",
        ms(med),
        ms(*lat.last().unwrap()),
        if med <= Duration::from_secs(1) {
            "met"
        } else {
            "MISSED"
        },
        (c1 - c0) as f64 * 10.0 / changes as f64,
        status(pid, "VmHWM")
    );
    let st = d.term();
    println!("daemon, {items} items more: SIGTERM → exit {st}");
}
