//! Benchmark: median wall time of `guestprep verify` (the real binary, process start included) on
//! a converged copy of the example Debian 13 root with the shipped policies, next to the same
//! checks done the seed README's way (tests/bench/seed-checks.sh: one shell command per fact).
//! Prints numbers; asserts nothing about time (timed assertions flake).
//!
//! Run: `cargo bench --bench verify` (GUESTPREP_BENCH_RUNS to change the run count).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn median_and_p90(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[v.len() * 9 / 10])
}

fn time(runs: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    f(); // warm the page cache
    let samples = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    median_and_p90(samples)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let runs: usize = std::env::var("GUESTPREP_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = env!("CARGO_BIN_EXE_guestprep");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let args = common::converged_root(bin, root);
    let out = Command::new(bin)
        .args(["verify", "--json"])
        .args(&args)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "benchmark root is not compliant"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = report["summary"]["total"].as_u64().unwrap();

    let (gp_med, gp_p90) = time(runs, || {
        let st = Command::new(bin)
            .arg("verify")
            .args(&args)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(st.code(), Some(0));
    });
    let (json_med, _) = time(runs, || {
        let st = Command::new(bin)
            .args(["verify", "--json"])
            .args(&args)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(st.code(), Some(0));
    });
    let shell_runs = runs.div_ceil(4).max(20);
    let script = repo.join("tests/bench/seed-checks.sh");
    let (sh_med, sh_p90) = time(shell_runs, || {
        Command::new("bash")
            .arg(&script)
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
    });

    println!("guestprep verify benchmark: converged example root, shipped policies, {items} items");
    println!(
        "  guestprep verify          median {:7.2} ms   p90 {:7.2} ms   ({runs} runs, process start included)",
        ms(gp_med),
        ms(gp_p90)
    );
    println!("  guestprep verify --json   median {:7.2} ms", ms(json_med));
    println!(
        "  seed README shell checks  median {:7.2} ms   p90 {:7.2} ms   ({shell_runs} runs, 29 checks)",
        ms(sh_med),
        ms(sh_p90)
    );
    println!(
        "  speed-up: {:.1}x  (aim: verify under 5 ms and at least 20x faster)",
        sh_med.as_secs_f64() / gp_med.as_secs_f64()
    );
}
