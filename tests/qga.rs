//! `guestprep qga` against the real QEMU guest agent (`qemu-ga -m unix-listen`, Debian package
//! qemu-guest-agent) on this machine: ping, the daemon's report by file-read, `verify` by
//! guest-exec, and every failure with its own message and exit code: no agent, a silent agent,
//! exec disabled in the agent, guestprep missing, the report missing, a stale report.

mod common;
use common::daemon::Daemon;
use common::*;

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A real qemu-ga listening on a unix socket in a temp directory.
struct QemuGa {
    child: Child,
    dir: tempfile::TempDir,
}

impl QemuGa {
    fn start(extra: &[&str]) -> QemuGa {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qga.sock");
        let child = Command::new("qemu-ga")
            .args(["-m", "unix-listen", "-p"])
            .arg(&sock)
            .arg("-t")
            .arg(dir.path())
            .arg("-f")
            .arg(dir.path().join("qemu-ga.pid"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("qemu-ga.log")).unwrap())
            .spawn()
            .expect("qemu-ga (Debian package qemu-guest-agent; tests/run installs it)");
        let start = Instant::now();
        while !sock.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "qemu-ga never listened"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        QemuGa { child, dir }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("qga.sock")
    }
}

impl Drop for QemuGa {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn qga(socket: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["qga", "--socket", socket.to_str().unwrap()];
    all.extend_from_slice(args);
    guestprep(&all)
}

#[test]
fn ping_reports_the_agent_and_its_commands() {
    let ga = QemuGa::start(&[]);
    let o = qga(&ga.socket(), &["ping"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("guest-file-read enabled") && stdout(&o).contains("guest-exec enabled"),
        "{}",
        stdout(&o)
    );
    let o = qga(&ga.socket(), &["--json", "ping"]);
    assert!(json(&o)["version"].is_string());
}

#[test]
fn report_by_file_read_is_the_daemons_report_and_carries_its_exit_code() {
    let root = converged_root();
    let pol = policies();
    let mut d = Daemon::start(root.path(), &[&pol]);
    d.wait_report(|r| r["compliant"] == true, "compliant");
    let ga = QemuGa::start(&[]);
    let path = d.report.to_str().unwrap().to_string();

    let o = qga(&ga.socket(), &["--json", "report", "--path", &path]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(o.stdout, std::fs::read(&d.report).unwrap(), "byte for byte");

    let o = qga(&ga.socket(), &["report", "--path", &path]);
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("compliant: 38 items"), "{}", stdout(&o));

    // Drift in the guest: the daemon's next report, read through the agent, exits 1.
    std::fs::write(
        root.path().join("etc/chrony/conf.d/50-guestprep.conf"),
        "x\n",
    )
    .unwrap();
    d.wait_report(|r| r["compliant"] == false, "drift");
    let o = qga(
        &ga.socket(),
        &["report", "--path", &path, "--max-age", "5min"],
    );
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("NOT compliant"), "{}", stdout(&o));
}

#[test]
fn verify_by_guest_exec_runs_guestprep_in_the_guest() {
    let root = converged_root();
    let ga = QemuGa::start(&[]);
    let pol = policies();
    let o = qga(
        &ga.socket(),
        &[
            "--json",
            "verify",
            "--guest-command",
            BIN,
            "--",
            "--root",
            root.path().to_str().unwrap(),
            "--policy",
            pol.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = json(&o);
    assert_eq!(r["compliant"], true);
    assert_eq!(r["root"], root.path().to_str().unwrap());

    // The guest's exit code comes back: drift is 1, a bad policy 2 with guestprep's message.
    std::fs::write(root.path().join("etc/sysctl.d/90-guestprep.conf"), "").unwrap();
    let args = |p: &str| {
        qga(
            &ga.socket(),
            &[
                "verify",
                "--guest-command",
                BIN,
                "--",
                "--root",
                root.path().to_str().unwrap(),
                "--policy",
                p,
            ],
        )
    };
    let o = args(pol.to_str().unwrap());
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stdout(&o).contains("file:/etc/sysctl.d/90-guestprep.conf"));
    let bad = repo().join("tests/fixtures/bad-policies/unknown-key.toml");
    let o = args(bad.to_str().unwrap());
    assert_fails(&o, 2, "unknown-key.toml:");
}

#[test]
fn a_guest_without_guestprep_or_without_a_report_says_which() {
    let ga = QemuGa::start(&[]);
    let o = qga(
        &ga.socket(),
        &["verify", "--guest-command", "/nonexistent/guestprep"],
    );
    assert_fails(&o, 7, "guestprep is not installed in the guest");

    let o = qga(
        &ga.socket(),
        &[
            "report",
            "--path",
            "/nonexistent/report.json",
            "--guest-command",
            "/nonexistent/guestprep",
        ],
    );
    assert_fails(
        &o,
        7,
        "guestprep is not installed in the guest: no report at /nonexistent/report.json",
    );

    let o = qga(
        &ga.socket(),
        &[
            "report",
            "--path",
            "/nonexistent/report.json",
            "--guest-command",
            BIN,
        ],
    );
    assert_fails(&o, 7, "is the daemon running?");

    let junk = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(junk.path(), "{\"hello\": 1}").unwrap();
    let o = qga(
        &ga.socket(),
        &["report", "--path", junk.path().to_str().unwrap()],
    );
    assert_fails(&o, 5, "is not a guestprep compliance report");
}

#[test]
fn a_stale_report_is_refused() {
    let root = example_root();
    let v = guestprep(&[
        "verify",
        "--json",
        "--root",
        root.path().to_str().unwrap(),
        "--policy",
        policies().to_str().unwrap(),
    ]);
    let mut r = json(&v);
    let ga = QemuGa::start(&[]);
    let file = tempfile::NamedTempFile::new().unwrap();
    let path = file.path().to_str().unwrap();

    // Made before this machine (the "guest") booted.
    r["generatedAt"] = "2000-01-01T00:00:00Z".into();
    std::fs::write(file.path(), serde_json::to_vec(&r).unwrap()).unwrap();
    let o = qga(&ga.socket(), &["report", "--path", path]);
    assert_fails(&o, 8, "before the guest's last boot");

    // Made two minutes ago, with a one-minute limit (a recent boot may make it "before boot":
    // stale either way).
    let two_min_ago = std::time::SystemTime::now() - Duration::from_secs(120);
    r["generatedAt"] = guestprep::report::rfc3339(two_min_ago).into();
    std::fs::write(file.path(), serde_json::to_vec(&r).unwrap()).unwrap();
    let o = qga(
        &ga.socket(),
        &["report", "--path", path, "--max-age", "1min"],
    );
    assert_fails(&o, 8, "stale report");
    let o = qga(&ga.socket(), &["report", "--path", path, "--max-age", "1h"]);
    assert_eq!(code(&o), 1, "fresh enough, drift: {}", stderr(&o));
}

#[test]
fn an_unreachable_silent_or_restricted_agent_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.qga");
    let o = qga(&missing, &["ping"]);
    assert_fails(&o, 6, "cannot connect to the guest agent socket");

    // QEMU's chardev accepts even when no agent runs in the guest: nothing ever answers.
    let silent = dir.path().join("silent.qga");
    let listener = UnixListener::bind(&silent).unwrap();
    let hold = std::thread::spawn(move || {
        let c = listener.accept();
        std::thread::sleep(Duration::from_secs(3));
        drop(c);
    });
    let o = qga(&silent, &["--timeout", "1", "report"]);
    assert_fails(&o, 6, "did not answer guest-sync-delimited within 1s");
    hold.join().unwrap();

    // An agent whose administrator blocked guest-exec.
    let ga = QemuGa::start(&["-b", "guest-exec,guest-exec-status"]);
    let o = qga(&ga.socket(), &["verify", "--guest-command", BIN]);
    assert_fails(&o, 6, "does not allow running programs");
}

#[test]
fn exec_apply_and_cat_pass_the_guests_output_and_exit_code_through() {
    let ga = QemuGa::start(&[]);
    let s = ga.socket();
    // Any exit code comes back as ours, stdout and stderr on ours, as ssh does.
    let o = qga(
        &s,
        &["exec", "--", "sh", "-c", "echo out; echo err >&2; exit 42"],
    );
    assert_eq!(code(&o), 42, "{}", stderr(&o));
    assert_eq!(stdout(&o), "out\n");
    assert!(stderr(&o).contains("err\n"), "{}", stderr(&o));
    // --input is the program's standard input, byte for byte.
    let input = ga.dir.path().join("input");
    let bytes: Vec<u8> = (0u8..=255).cycle().take(70_000).collect();
    std::fs::write(&input, &bytes).unwrap();
    let o = qga(
        &s,
        &[
            "exec",
            "--input",
            input.to_str().unwrap(),
            "--",
            "sha256sum",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let want = Command::new("sha256sum").arg(&input).output().unwrap();
    assert_eq!(
        stdout(&o).split_whitespace().next(),
        stdout(&want).split_whitespace().next()
    );
    // A program that is not there: guestprep's "not in the guest" code, with the agent's reason.
    let o = qga(&s, &["exec", "--", "/nonexistent/program"]);
    assert_fails(&o, 7, "/nonexistent/program");

    // cat: a file of the guest, by file-read; a missing one is named.
    let file = ga.dir.path().join("guest-file");
    std::fs::write(&file, b"line 1\nline 2\n").unwrap();
    let o = qga(&s, &["cat", file.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "line 1\nline 2\n");
    let o = qga(&s, &["cat", "/nonexistent/file"]);
    assert_fails(&o, 7, "/nonexistent/file");

    // apply: guestprep apply in the guest (here, this machine's agent runs it on a fixture root),
    // its output and its exit code.
    let root = example_root();
    let bin = env!("CARGO_BIN_EXE_guestprep");
    let pol = policies();
    let apply = |extra: &[&str]| {
        let mut args = vec![
            "apply",
            "--guest-command",
            bin,
            "--",
            "--root",
            root.path().to_str().unwrap(),
            "--policy",
            pol.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        qga(&s, &args)
    };
    let o = apply(&["--check"]);
    assert_eq!(
        code(&o),
        1,
        "apply --check of an unconverged root: {}",
        stderr(&o)
    );
    assert!(stdout(&o).contains("would change"), "{}", stdout(&o));
    let o = apply(&[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = on_root("verify", root.path(), &[]);
    assert_eq!(
        code(&v),
        0,
        "the root the guest's apply converged: {}",
        stdout(&v)
    );
}
