//! Benchmark: median wall time of `guestprep verify` (the real binary, process start included) on
//! a converged copy of the example Debian 13 root with the shipped policies, next to the same
//! checks done the seed README's way (tests/bench/seed-checks.sh: one shell command per fact).
//! Then the curve of large policies: `verify` and a no-op `apply` (on a converged copy) with 10,
//! 100, 1,000 and 10,000 items of each kind that can have many (sysctl keys, `[[files]]`,
//! units), each step's ratio to the last, and the peak RSS of those runs (getrusage of a
//! measuring child). Prints numbers; asserts nothing about time (timed assertions flake).
//!
//! Run: `cargo bench --bench verify` (GUESTPREP_BENCH_RUNS to change the run count of the first
//! part; GUESTPREP_BENCH_SCALE_SIZES="10 100 1000 10000" for the curve, "" to skip it).

mod common;

use common::scale::{self, Kind};
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
    if let Ok(spec) = std::env::var("GUESTPREP_BENCH_CHILD") {
        measure_child(&spec);
    }
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
    // 3: compliant but for update-grub, which an offline root leaves pending.
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
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
        assert!(matches!(st.code(), Some(0 | 3)));
    });
    let (json_med, _) = time(runs, || {
        let st = Command::new(bin)
            .args(["verify", "--json"])
            .args(&args)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(matches!(st.code(), Some(0 | 3)));
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
        "  speed-up: {:.1}x  (aim: verify under 2 ms and at least 20x faster)",
        sh_med.as_secs_f64() / gp_med.as_secs_f64()
    );
    curve(bin, root);
}

/// In a child of this benchmark (`GUESTPREP_BENCH_CHILD="RUNS"`, the command in argv): runs the
/// command RUNS times after one warm-up, each to exit 0, and prints the median wall time and
/// the peak RSS of those runs (getrusage of this process's children: only them).
fn measure_child(spec: &str) -> ! {
    let runs: usize = spec.parse().expect("GUESTPREP_BENCH_CHILD=RUNS");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (med, _) = time(runs, || {
        let st = Command::new(&args[0])
            .args(&args[1..])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(matches!(st.code(), Some(0 | 3)), "{args:?}");
    });
    let ru = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).unwrap();
    println!("median_ns={} maxrss_kb={}", med.as_nanos(), ru.max_rss());
    std::process::exit(0);
}

/// (median, peak RSS in kB) of `runs` runs of `bin verb args`, measured in a child.
fn measured(bin: &str, verb: &str, args: &[String], runs: usize) -> (Duration, u64) {
    let o = Command::new(std::env::current_exe().unwrap())
        .env("GUESTPREP_BENCH_CHILD", runs.to_string())
        .arg(bin)
        .arg(verb)
        .args(args)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{verb} {args:?}: {out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let field = |k: &str| -> u64 {
        out.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} from the measuring child: {out}"))
    };
    (
        Duration::from_nanos(field("median_ns=")),
        field("maxrss_kb="),
    )
}

/// Runs per size: enough for a median, few where one run is long.
fn runs_for(n: usize) -> usize {
    match n {
        0..=100 => 15,
        101..=1000 => 7,
        _ => 3,
    }
}

/// The curve: per kind and size, verify and no-op apply medians, ratios, peak RSS.
fn curve(bin: &str, base: &Path) {
    let sizes: Vec<usize> = std::env::var("GUESTPREP_BENCH_SCALE_SIZES")
        .unwrap_or_else(|_| "10 100 1000 10000".into())
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    if sizes.is_empty() {
        return;
    }
    println!();
    println!(
        "guestprep at scale: offline, the example root and shipped policies plus N items of one kind (median; peak RSS of the runs)"
    );
    println!(
        "  kind           N   verify ms  x prev   no-op apply ms  x prev   peak RSS MB   runs"
    );
    let mut worst_rss = 0;
    let mut verdicts = Vec::new();
    for kind in Kind::ALL {
        let mut prev: Option<(usize, Duration, Duration)> = None;
        for &n in &sizes {
            let dir = tempfile::tempdir().unwrap();
            let args = scale::build(bin, base, dir.path(), &[(kind, n)]);
            let runs = runs_for(n);
            let (v, v_rss) = measured(bin, "verify", &args, runs);
            let (a, a_rss) = measured(bin, "apply", &args, runs);
            let rss = v_rss.max(a_rss);
            worst_rss = worst_rss.max(rss);
            let ratio = |now: Duration, then: Option<Duration>| {
                then.map_or("     -".to_string(), |t| {
                    format!("{:5.1}x", now.as_secs_f64() / t.as_secs_f64())
                })
            };
            println!(
                "  {:<8} {n:>7}   {:9.2}  {}   {:14.2}  {}   {:11.1}   {runs:>4}",
                kind.name(),
                ms(v),
                ratio(v, prev.map(|p| p.1)),
                ms(a),
                ratio(a, prev.map(|p| p.2)),
                rss as f64 / 1024.0
            );
            if n == 10_000
                && let Some((1000, v1k, a1k)) = prev
            {
                let ok = |t: Duration, t1k: Duration| {
                    t <= Duration::from_millis(500) && t.as_secs_f64() <= 12.0 * t1k.as_secs_f64()
                };
                verdicts.push(format!(
                    "{}: verify {}, apply {}",
                    kind.name(),
                    if ok(v, v1k) { "met" } else { "MISSED" },
                    if ok(a, a1k) { "met" } else { "MISSED" }
                ));
            }
            prev = Some((n, v, a));
        }
    }
    println!(
        "  aim at 10,000 items: verify and no-op apply <= 500 ms and <= 12x the 1,000-item run; peak RSS <= 100 MB ({}: {:.1} MB)",
        if worst_rss <= 100 * 1024 {
            "met"
        } else {
            "MISSED"
        },
        worst_rss as f64 / 1024.0
    );
    if !verdicts.is_empty() {
        println!("  {}", verdicts.join("; "));
    }
}
