//! Benchmark of `guestprep daemon` (the release binary) on a converged copy of the example root
//! with the shipped policies: resident memory when idle, CPU and wake-ups while nothing changes,
//! and how long a change to a managed file takes to reach the report. Prints numbers; asserts
//! nothing about time (timed assertions flake).
//!
//! Run: `cargo bench --bench daemon` (GUESTPREP_BENCH_IDLE_SECS, GUESTPREP_BENCH_CHANGES).

mod common;

use std::os::unix::net::UnixDatagram;
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

fn main() {
    let idle_secs = env_num("GUESTPREP_BENCH_IDLE_SECS", 15);
    let changes = env_num("GUESTPREP_BENCH_CHANGES", 20) as usize;
    let bin = env!("CARGO_BIN_EXE_guestprep");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let args = common::converged_root(bin, &root);

    let log = tmp.path().join("daemon.log");
    let sock = tmp.path().join("notify");
    let notify = UnixDatagram::bind(&sock).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let t = Instant::now();
    let mut child = Guard(
        Command::new(bin)
            .arg("daemon")
            .args(&args)
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
    println!(
        "daemon: ready in {:.1} ms ({})",
        ready.as_secs_f64() * 1000.0,
        String::from_utf8_lossy(&buf[..n]).replace('\n', "; ")
    );
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
    let file = root.join("etc/chrony/conf.d/50-guestprep.conf");
    let report = root.join("run/guestprep/report.json");
    let good = std::fs::read_to_string(&file).unwrap();
    let compliant = || {
        let b = std::fs::read(&report).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        v["compliant"] == true
    };
    let mut lat = Vec::new();
    let (c0, _) = cpu(pid);
    for i in 0..changes {
        let want = i % 2 == 1;
        let text = if want {
            good.clone()
        } else {
            format!("{good}server rogue.example.com\n")
        };
        let t = Instant::now();
        std::fs::write(&file, text).unwrap();
        while compliant() != want {
            if t.elapsed() > Duration::from_secs(20) {
                let threads: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
                    .unwrap()
                    .flatten()
                    .map(|t| {
                        let wchan =
                            std::fs::read_to_string(t.path().join("wchan")).unwrap_or_default();
                        let comm =
                            std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
                        format!(
                            "{} {} ({wchan})",
                            t.file_name().to_string_lossy(),
                            comm.trim()
                        )
                    })
                    .collect();
                panic!(
                    "no new report 20 s after change {i}; daemon threads: {threads:?}; daemon log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        lat.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(300));
    }
    let (c1, _) = cpu(pid);
    lat.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
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
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = child.0.wait().unwrap();
    println!("daemon: SIGTERM → exit {st}");
}
