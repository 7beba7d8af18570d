//! Benchmark of `guestprep fleet` (the release binary) against a node of real guest agents
//! (tests/it/common/fleet.rs: one real qemu-ga per VM, each in its own mount namespace): for 50 and
//! for 200 VMs, the wall time of a fleet where every agent answers, and of one where one agent is
//! hung (SIGSTOP: it should cost one --timeout, not more), and the fleet process's peak RSS
//! (table and textfile, and `--json`, which keeps every report). Prints numbers; asserts only that
//! every VM was classified, nothing about time (timed assertions flake).
//!
//! Run: `cargo bench --bench fleet` (GUESTPREP_BENCH_FLEET_SIZES="50 200", GUESTPREP_BENCH_RUNS).

// Shared with the tests, which use all of it; the benchmark only part.
#[allow(dead_code)]
#[path = "../tests/it/common/fleet.rs"]
mod fleetbed;

use std::process::{Command, Stdio};
use std::time::Instant;

use fleetbed::{Bed, Guest, variant};

const BIN: &str = env!("CARGO_BIN_EXE_guestprep");
const TIMEOUT: u64 = 2;

/// In a child of this benchmark: runs the fleet command in argv, then prints its peak RSS
/// (getrusage of the only child it waited for) and exits with its code.
fn measure_child() -> ! {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let st = Command::new(&args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    let ru = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).unwrap();
    eprintln!("maxrss_kb={}", ru.max_rss());
    std::process::exit(st.code().unwrap_or(100));
}

/// (seconds, exit code, peak RSS kB) of one fleet run.
fn run(bed: &Bed, extra: &[&str]) -> (f64, i32, u64) {
    let fleet = bed.fleet(BIN, &[&["--timeout", &TIMEOUT.to_string()], extra].concat());
    let start = Instant::now();
    let o = Command::new(std::env::current_exe().unwrap())
        .env("GUESTPREP_BENCH_FLEET_CHILD", "1")
        .arg(fleet.get_program())
        .args(fleet.get_args())
        .output()
        .unwrap();
    let secs = start.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&o.stderr);
    let rss = err
        .lines()
        .find_map(|l| l.strip_prefix("maxrss_kb="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no RSS from the measuring child: {err}"));
    (secs, o.status.code().unwrap_or(-1), rss)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if std::env::var_os("GUESTPREP_BENCH_FLEET_CHILD").is_some() {
        measure_child();
    }
    let sizes: Vec<u32> = std::env::var("GUESTPREP_BENCH_FLEET_SIZES")
        .unwrap_or_else(|_| "50 200".into())
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    let runs: usize = std::env::var("GUESTPREP_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .clamp(1, 20);
    let base = {
        let root = tempfile::tempdir().unwrap();
        Command::new("cp")
            .arg("-a")
            .arg(fleetbed::repo().join("examples/debian13-root/."))
            .arg(root.path())
            .status()
            .unwrap();
        let o = Command::new(BIN)
            .args(["verify", "--json", "--root"])
            .arg(root.path())
            .arg("--policy")
            .arg(fleetbed::repo().join("policies"))
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let parallel = std::thread::available_parallelism().map_or(4, |n| n.get() * 4);
    println!(
        "fleet: real qemu-ga agents, --timeout {TIMEOUT}, default --parallel {parallel}, median of {runs} runs; report {} bytes",
        serde_json::to_vec(&base).unwrap().len()
    );
    for n in sizes {
        let mut bed = Bed::new();
        let now = guestprep::report::rfc3339(std::time::SystemTime::now());
        let mut pids = Vec::new();
        for i in 0..n {
            let name = format!("k8s-node-{i}");
            let drift = u64::from(i % 10 == 3);
            pids.push(bed.agent(
                10_000 + i,
                &name,
                Guest::Report(variant(&base, i32::from(drift == 1), drift, &now, &name)),
            ));
        }
        bed.wait_ready();
        let (mut all, mut rss_table, mut rss_json) = (Vec::new(), 0, 0);
        for _ in 0..runs {
            let (s, c, r) = run(&bed, &[]);
            assert_eq!(c, 1, "{n} VMs, some drift: exit 1");
            all.push(s);
            rss_table = rss_table.max(r);
            let (_, c, r) = run(&bed, &["--json"]);
            assert_eq!(c, 1);
            rss_json = rss_json.max(r);
        }
        let textfile = bed.dir.path().join("fleet.prom");
        let (_, c, r) = run(&bed, &["--prometheus-textfile", textfile.to_str().unwrap()]);
        assert_eq!(c, 1);
        rss_table = rss_table.max(r);
        // One agent hangs: the run should take about one timeout.
        bed.hang(pids[n as usize / 2]);
        let mut hung = Vec::new();
        for _ in 0..runs.min(3) {
            let (s, c, _) = run(&bed, &[]);
            assert_eq!(c, 6, "a hung agent: exit 6");
            hung.push(s);
        }
        println!(
            "fleet: {n} VMs: all answer {:.3} s median; one hung {:.2} s median (timeout {TIMEOUT} s); peak RSS {rss_table} kB (table, textfile), {rss_json} kB (--json)",
            median(all),
            median(hung)
        );
    }
}
