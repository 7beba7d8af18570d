//! Benchmark: live `guestprep verify` and `apply` (the release binary) in a booted real Debian 13
//! root, next to the seed template's own live shell checks in the same container and the same run.
//!
//! The root is the VM test's (tests/testbed/rootfs.sh vm: 280-odd packages, two kernels and their
//! initramfs images), unpacked onto a tmpfs and booted with `systemd-nspawn -b` through the
//! integration tests' own container helper (tests/it/common/container.rs). The shipped policies
//! (policies/, all of them: 06-i915-sriov.toml ships commented out, so nothing is downloaded) are
//! applied once, live, so the image carries what they manage (update-initramfs included); then
//! the container is powered off and booted again for each cold sample: the first command after
//! that boot. Warm samples are taken in rounds, one of each command per round, so the load of a
//! shared machine falls on all of them alike.
//!
//! Prints numbers and whether the goals (warm verify at least 5x faster than the shell checks,
//! cold at least as fast) are met; asserts nothing about time (timed assertions flake), only that
//! every command answers the same way on every run.
//!
//! Run: `cargo bench --bench live` (as root, with systemd-nspawn; GUESTPREP_BENCH_LIVE_RUNS warm
//! runs, default 15; GUESTPREP_BENCH_LIVE_BOOTS cold runs, default 5, two boots each).

// The integration tests' container helper, used as is: it takes BIN and repo() from its parent.
#[allow(dead_code)]
#[path = "../tests/it/common/container.rs"]
mod container;

const BIN: &str = env!("CARGO_BIN_EXE_guestprep");

fn repo() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use container::{Container, rootfs_tar};

/// The shipped policies and the shell checks, inside the container.
const POLICY: &str = "/root/bench-policy";
const SHELL: &str = "/root/seed-live-checks.sh";

/// One command timed from the host: nsenter into the container, then the command.
struct Probe {
    label: String,
    argv: Vec<String>,
    samples: Vec<Duration>,
    /// The exit status of the first run; every later run must give the same.
    code: Option<i32>,
}

impl Probe {
    fn new(label: &str, argv: &[&str]) -> Probe {
        Probe {
            label: label.to_string(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            samples: Vec::new(),
            code: None,
        }
    }

    fn guestprep(label: &str, verb: &str, extra: &[&str]) -> Probe {
        let mut argv = vec!["guestprep", verb, "--policy", POLICY];
        argv.extend_from_slice(extra);
        Probe::new(label, &argv)
    }

    /// Runs once; `record` keeps the time as a sample.
    fn run(&mut self, c: &Container, record: bool) {
        let argv: Vec<&str> = self.argv.iter().map(String::as_str).collect();
        let t = Instant::now();
        let o = c.exec(&argv);
        let took = t.elapsed();
        let code = o.status.code();
        assert!(
            code.is_some(),
            "{}: killed by a signal ({})",
            self.label,
            o.status
        );
        match self.code {
            None => self.code = code,
            Some(first) => assert_eq!(
                code,
                Some(first),
                "{}: exit status changed during the benchmark: the container's state moved\n{}",
                self.label,
                text(&o)
            ),
        }
        if record {
            self.samples.push(took);
        }
    }

    /// (median, p90) of the samples.
    fn stats(&self) -> (Duration, Duration) {
        let mut v = self.samples.clone();
        v.sort();
        (v[v.len() / 2], v[(v.len() * 9 / 10).min(v.len() - 1)])
    }

    fn median(&self) -> Duration {
        self.stats().0
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The policies, the shell checks, and a chrony that runs in a container: Debian's unit needs
/// CAP_SYS_TIME, which nspawn withholds, so it runs without touching the clock (`-x`), as in
/// tests/example.rs: the seed's `chronyc tracking` then asks a real chronyd.
fn prepare(root: &Path) {
    let repo = repo();
    let st = Command::new("cp")
        .arg("-a")
        .arg(repo.join("policies"))
        .arg(root.join(POLICY.trim_start_matches('/')))
        .status()
        .expect("cp");
    assert!(st.success(), "copying policies/ into the root");
    std::fs::copy(
        repo.join("tests/bench/seed-live-checks.sh"),
        root.join(SHELL.trim_start_matches('/')),
    )
    .expect("copying the shell checks into the root");
    let d = root.join("etc/systemd/system/chrony.service.d");
    std::fs::create_dir_all(&d).expect("creating chrony's drop-in directory");
    std::fs::write(
        d.join("container.conf"),
        "[Unit]\nConditionCapability=\n[Service]\nExecStart=\nExecStart=!/usr/sbin/chronyd -F 0 -x\n",
    )
    .expect("writing chrony's drop-in");
}

/// What an `apply --json` did and left.
struct Applied {
    took: Duration,
    items: u64,
    /// Actions taken, done or not.
    changes: usize,
    /// Items whose action failed: every later apply tries them again.
    retried: Vec<String>,
    /// Every item not compliant afterwards: id, status, message.
    left: Vec<(String, String, String)>,
}

fn apply_json(c: &Container, extra: &[&str]) -> Applied {
    let mut argv = vec!["guestprep", "apply", "--json", "--policy", POLICY];
    argv.extend_from_slice(extra);
    let t = Instant::now();
    let o = c.exec(&argv);
    let took = t.elapsed();
    let rep: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("apply --json: {e}\n{}", text(&o)));
    let changes = rep["apply"]["changes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut retried: Vec<String> = changes
        .iter()
        .filter(|ch| ch["done"] == false)
        .filter_map(|ch| ch["item"].as_str().map(String::from))
        .collect();
    retried.dedup();
    let left = rep["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["status"] != "compliant")
        .map(|i| {
            let s = |k: &str| i[k].as_str().unwrap_or("").to_string();
            (s("id"), s("status"), s("message"))
        })
        .collect();
    Applied {
        took,
        items: rep["summary"]["total"].as_u64().unwrap_or(0),
        changes: changes.len(),
        retried,
        left,
    }
}

/// Powers the container off and gives back its root.
fn power_off(mut c: Container) -> tempfile::TempDir {
    let placeholder = tempfile::tempdir().expect("a temp directory");
    let dir = std::mem::replace(&mut c.dir, placeholder);
    drop(c); // `systemctl poweroff`, then waits for nspawn
    dir
}

/// A tmpfs on the root's directory, unmounted (and the directory removed) when dropped: unpacking
/// 1.2 GB onto a disk and deleting it afterwards took a minute each on a shared machine whose
/// disk is mounted with `discard`, and its reads after a dropped page cache came at memory speed
/// anyway (the VM's disk is in its host's cache).
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        match Command::new("umount").arg(&self.0).status() {
            Ok(st) if st.success() => {
                let _ = std::fs::remove_dir(&self.0);
            }
            _ => eprintln!("could not unmount the tmpfs on {}", self.0.display()),
        }
        // The container's console, which tests/it/common/container.rs writes next to the root: kept
        // only when the benchmark failed.
        let mut console = self.0.clone().into_os_string();
        console.push(".console");
        if std::thread::panicking() {
            eprintln!("the container's console: {}", console.to_string_lossy());
        } else {
            let _ = std::fs::remove_file(console);
        }
    }
}

/// The VM test's root, unpacked onto a fresh tmpfs with the release binary in /usr/local/bin, as
/// tests/it/common/container.rs's `unpack` does on disk.
fn unpack_tmpfs() -> (tempfile::TempDir, Tmpfs) {
    let tar = rootfs_tar("vm");
    let dir = tempfile::Builder::new()
        .prefix("guestprep-live-")
        .tempdir_in("/var/tmp")
        .expect("a directory in /var/tmp");
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3G,mode=0755", "tmpfs"])
        .arg(dir.path())
        .status()
        .expect("running mount");
    assert!(st.success(), "mounting a tmpfs on {}", dir.path().display());
    let mount = Tmpfs(dir.path().to_path_buf());
    let st = Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(dir.path())
        .status()
        .expect("running tar");
    assert!(st.success(), "unpacking {}", tar.display());
    std::fs::copy(BIN, dir.path().join("usr/local/bin/guestprep"))
        .expect("copying the release binary into the root");
    (dir, mount)
}

/// How long each set-up step took, in order; a step done again adds to its first entry.
#[derive(Default)]
struct Steps(Vec<(String, u32, Duration)>);

impl Steps {
    fn add(&mut self, what: &str, d: Duration) {
        match self.0.iter_mut().find(|(w, _, _)| w == what) {
            Some((_, n, total)) => {
                *n += 1;
                *total += d;
            }
            None => self.0.push((what.to_string(), 1, d)),
        }
    }

    fn show(&self) -> String {
        let each = |(w, n, d): &(String, u32, Duration)| match n {
            1 => format!("{w} {:.1} s", d.as_secs_f64()),
            _ => format!("{w} {n}x, {:.1} s each", d.as_secs_f64() / f64::from(*n)),
        };
        self.0.iter().map(each).collect::<Vec<_>>().join(", ")
    }
}

/// Powers off and boots again: a fresh /run, fresh services, nothing of the last boot in memory
/// but the files themselves.
fn reboot(c: Container, steps: &mut Steps) -> Container {
    let t = Instant::now();
    let dir = power_off(c);
    steps.add("power-off", t.elapsed());
    let t = Instant::now();
    let c = Container::boot(dir);
    steps.add("cold boot", t.elapsed());
    c
}

/// The root's installed packages and its initramfs images (name → MB).
fn describe(root: &Path) -> (usize, BTreeMap<String, u64>) {
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap_or_default();
    let pkgs = status
        .lines()
        .filter(|l| *l == "Status: install ok installed")
        .count();
    let images = std::fs::read_dir(root.join("boot"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let kver = name.strip_prefix("initrd.img-")?.to_string();
            Some((kver, e.metadata().ok()?.len() >> 20))
        })
        .collect();
    (pkgs, images)
}

fn env_num(k: &str, default: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

fn main() {
    let runs = env_num("GUESTPREP_BENCH_LIVE_RUNS", 15);
    let boots = env_num("GUESTPREP_BENCH_LIVE_BOOTS", 5);
    let load_start = loadavg();
    let mut steps = Steps::default();
    let t = Instant::now();
    let (dir, _tmpfs) = unpack_tmpfs();
    steps.add("unpack", t.elapsed());
    prepare(dir.path());
    let t = Instant::now();
    let c = Container::boot(dir);
    steps.add("boot", t.elapsed());
    let conv = apply_json(&c, &[]);
    steps.add("converging apply", conv.took);
    let stale: Vec<&str> = conv
        .left
        .iter()
        .map(|(id, _, _)| id.as_str())
        .filter(|id| id.starts_with("initramfs:"))
        .collect();
    assert!(
        stale.is_empty(),
        "the converging apply left {stale:?} not compliant: the benchmark measures a converged image"
    );
    let mut skips = Vec::new();
    for id in &conv.retried {
        skips.extend(["--skip", id.as_str()]);
    }
    let noop = apply_json(&c, &skips);
    let (pkgs, images) = describe(c.root());
    let skipped = format!("apply, those {} skipped", conv.retried.len());
    let mut m = Measured {
        verify_cold: Probe::guestprep("verify, cold", "verify", &[]),
        verify: Probe::guestprep("verify", "verify", &[]),
        ird_cold: Probe::guestprep(
            "verify --only initramfs, cold",
            "verify",
            &["--only", "initramfs"],
        ),
        ird: Probe::guestprep(
            "verify --only initramfs",
            "verify",
            &["--only", "initramfs"],
        ),
        others: vec![
            Probe::guestprep(
                "verify --skip initramfs",
                "verify",
                &["--skip", "initramfs"],
            ),
            Probe::guestprep("apply", "apply", &[]),
            Probe::guestprep(&skipped, "apply", &skips),
            Probe::new("nsenter + env alone (in every row)", &["true"]),
        ],
        shell_cold: Probe::new("seed's live shell checks, cold", &["bash", SHELL]),
        shell: Probe::new("seed's live shell checks (13)", &["bash", SHELL]),
    };
    // Verify cold, then one unrecorded round of everything, then `runs` recorded rounds.
    let mut c = reboot(c, &mut steps);
    m.verify_cold.run(&c, true);
    for record in std::iter::once(false).chain(std::iter::repeat_n(true, runs)) {
        m.verify.run(&c, record);
        m.shell.run(&c, record);
        m.ird.run(&c, record);
        for p in &mut m.others {
            p.run(&c, record);
        }
    }
    for boot in 0..boots {
        if boot > 0 {
            c = reboot(c, &mut steps);
            m.verify_cold.run(&c, true);
        }
        // `--only initramfs` first, then the shell checks: they read other files.
        c = reboot(c, &mut steps);
        m.ird_cold.run(&c, true);
        m.shell_cold.run(&c, true);
    }

    println!(
        "guestprep live benchmark: the VM test's Debian 13 root ({pkgs} packages) booted with \
         systemd-nspawn, the shipped policies ({} items), the release binary; {runs} warm runs \
         of each command in rounds, {boots} cold runs (the first command after a boot); the root on tmpfs",
        conv.items
    );
    let imgs: Vec<String> = images
        .iter()
        .map(|(k, mb)| format!("{k} {mb} MB"))
        .collect();
    println!("  initramfs images: {}", imgs.join(", "));
    println!("  steps: {}", steps.show());
    println!(
        "  load average (1, 5, 15 min): {load_start} at the start, {} at the end",
        loadavg()
    );
    report(&conv, &noop, &m);
    let t = Instant::now();
    drop(c);
    println!(
        "  (power-off and removal of the root: {:.1} s)",
        t.elapsed().as_secs_f64()
    );
}

/// Everything timed.
struct Measured {
    verify_cold: Probe,
    verify: Probe,
    ird_cold: Probe,
    ird: Probe,
    others: Vec<Probe>,
    shell_cold: Probe,
    shell: Probe,
}

fn report(conv: &Applied, noop: &Applied, m: &Measured) {
    println!("  not compliant after the converging apply (what a container cannot do):");
    for (id, status, msg) in &conv.left {
        let again = if conv.retried.contains(id) {
            ", retried by every apply"
        } else {
            ""
        };
        let msg: String = msg.chars().take(120).collect();
        println!("    {id}: {status}{again}: {msg}");
    }
    println!(
        "  apply with those retried items skipped: {} changes; not compliant: {}",
        noop.changes,
        noop.left
            .iter()
            .map(|(id, st, _)| format!("{id} ({st})"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let row = |p: &Probe| {
        let (med, p90) = p.stats();
        println!(
            "  {:<44} median {:7.1} ms   p90 {:7.1} ms   ({} runs, exit {})",
            p.label,
            ms(med),
            ms(p90),
            p.samples.len(),
            p.code.unwrap_or(-1)
        );
    };
    for p in [&m.verify_cold, &m.verify, &m.ird_cold, &m.ird] {
        row(p);
    }
    for p in &m.others {
        row(p);
    }
    row(&m.shell_cold);
    row(&m.shell);
    let sh = m.shell.median().as_secs_f64();
    let warm = sh / m.verify.median().as_secs_f64();
    let cold = sh / m.verify_cold.median().as_secs_f64();
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "  speed-up over the shell checks (their warm median / verify's median): warm verify \
         {warm:.2}x (goal at least 5x: {}), cold verify {cold:.2}x (goal at least 1x: {})",
        met(warm >= 5.0),
        met(cold >= 1.0)
    );
}
