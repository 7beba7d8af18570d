//! `guestprep qga` against the real QEMU guest agent (`qemu-ga -m unix-listen`, Debian package
//! qemu-guest-agent) on this machine: ping, the daemon's report by file-read, `verify` by
//! guest-exec, and every failure with its own message and exit code: no agent, a silent agent,
//! exec disabled in the agent, guestprep missing, the report missing, a stale report.

use crate::common;
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

    // The converged example root's report: GRUB's arguments pending offline, exit 3.
    let o = qga(&ga.socket(), &["--json", "report", "--path", &path]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert_eq!(o.stdout, std::fs::read(&d.report).unwrap(), "byte for byte");
    // --json where people put it: after the verb too.
    let o = qga(&ga.socket(), &["report", "--path", &path, "--json"]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert_eq!(
        o.stdout,
        std::fs::read(&d.report).unwrap(),
        "--json after the verb"
    );

    let o = qga(&ga.socket(), &["report", "--path", &path]);
    assert_eq!(code(&o), 3);
    assert!(stdout(&o).contains("compliant: 39 items"), "{}", stdout(&o));

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
    assert_eq!(code(&o), 3, "{}", stderr(&o));
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
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let v = on_root("verify", root.path(), &[]);
    assert_eq!(
        code(&v),
        3,
        "the root the guest's apply converged: {}",
        stdout(&v)
    );
}

/// A report of the example root, made now (as a running daemon's would be).
fn fresh_report() -> serde_json::Value {
    let root = example_root();
    let mut r = json(&on_root("verify", root.path(), &["--json"]));
    r["generatedAt"] = guestprep::report::rfc3339(std::time::SystemTime::now()).into();
    r
}

/// A hostile guest's report, read through the real qemu-ga: its ids and messages cannot drive the
/// operator's terminal (controls escaped in human output), and `--json` stays byte-exact.
#[test]
fn a_hostile_report_cannot_drive_the_operators_terminal() {
    let mut r = fresh_report();
    r["items"][0]["id"] = "sysctl:x\u{1b}]0;owned\u{7}\u{1b}[2J".into();
    r["items"][0]["message"] = "bad\u{9b}31m\u{7f}".into();
    let file = tempfile::NamedTempFile::new().unwrap();
    let raw = serde_json::to_vec(&r).unwrap();
    std::fs::write(file.path(), &raw).unwrap();
    let ga = QemuGa::start(&[]);
    let path = file.path().to_str().unwrap();
    let o = qga(&ga.socket(), &["report", "--path", path]);
    let out = stdout(&o);
    assert!(out.contains("sysctl:x\\x1b]0;owned\\x07\\x1b[2J"), "{out}");
    assert!(out.contains("bad\\x9b31m\\x7f"), "{out}");
    assert!(
        !out.chars().any(|c| c.is_control() && c != '\n'),
        "a raw control reached the terminal: {out:?}"
    );
    let o = qga(&ga.socket(), &["--json", "report", "--path", path]);
    assert_eq!(o.stdout.trim_ascii_end(), raw.as_slice(), "--json is exact");
}

/// A scripted hostile agent (the guest is untrusted): answers the sync, then `answer` decides
/// each command's reply line; `None` floods the connection with an endless line.
fn hostile_agent(
    dir: &Path,
    answer: impl Fn(&serde_json::Value) -> Option<String> + Send + 'static,
) -> (PathBuf, std::thread::JoinHandle<()>) {
    use std::io::{BufRead, BufReader, Write};
    let sock = dir.join("hostile.qga");
    let listener = UnixListener::bind(&sock).unwrap();
    let h = std::thread::spawn(move || {
        let Ok((s, _)) = listener.accept() else {
            return;
        };
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            if r.read_until(b'\n', &mut buf).unwrap_or(0) == 0 {
                return;
            }
            let text = String::from_utf8_lossy(&buf);
            let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\u{FFFD}');
            let Ok(req) = serde_json::from_str::<serde_json::Value>(text) else {
                continue;
            };
            if req["execute"] == "guest-sync-delimited" {
                let id = &req["arguments"]["id"];
                let mut line = vec![0xff];
                line.extend(format!("{{\"return\": {id}}}\n").into_bytes());
                let _ = w.write_all(&line);
                continue;
            }
            match answer(&req) {
                Some(line) => {
                    if w.write_all(format!("{line}\n").as_bytes()).is_err() {
                        return;
                    }
                }
                None => {
                    let chunk = vec![b'a'; 1 << 20];
                    while w.write_all(&chunk).is_ok() {}
                    return;
                }
            }
        }
    });
    (sock, h)
}

#[test]
fn a_hostile_agent_cannot_crash_or_flood_the_host() {
    use base64::Engine;
    let r = fresh_report();
    let report = serde_json::to_vec(&r).unwrap();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let dir = tempfile::tempdir().unwrap();

    // /proc/uptime says `-inf 0`: no abort, the uptime is ignored and the report is read.
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let (sock, h) = hostile_agent(dir.path(), move |req| {
        let cmd = req["execute"].as_str().unwrap_or("");
        Some(match cmd {
            "guest-file-open" => {
                let id = if req["arguments"]["path"] == "/proc/uptime" {
                    2
                } else {
                    1
                };
                format!("{{\"return\": {id}}}")
            }
            "guest-file-read" => {
                let data: &[u8] = if req["arguments"]["handle"] == 2 {
                    b"-inf 0\n"
                } else {
                    &report
                };
                format!(
                    "{{\"return\": {{\"count\": {}, \"buf-b64\": \"{}\", \"eof\": true}}}}",
                    data.len(),
                    b64(data)
                )
            }
            "guest-get-time" => format!("{{\"return\": {now_ns}}}"),
            _ => "{\"return\": {}}".to_string(),
        })
    });
    let o = qga(&sock, &["--timeout", "5", "report", "--max-age", "1h"]);
    eprintln!("-inf uptime: exit {} {}", code(&o), stderr(&o));
    assert_ne!(code(&o), 134, "aborted: {}", stderr(&o));
    assert!(o.status.code().is_some(), "killed by a signal");
    assert_eq!(code(&o), 1, "the report's own code: {}", stderr(&o));
    h.join().unwrap();

    // A clock out of any range: the report's age cannot be judged, and says so.
    let dir = tempfile::tempdir().unwrap();
    let (sock, h) = hostile_agent(dir.path(), |req| {
        Some(match req["execute"].as_str().unwrap_or("") {
            "guest-get-time" => "{\"return\": -1e300}".to_string(),
            "guest-file-open" => "{\"return\": 1}".to_string(),
            _ => "{\"return\": {\"count\": 0, \"buf-b64\": \"\", \"eof\": true}}".to_string(),
        })
    });
    let o = qga(&sock, &["--timeout", "5", "report", "--max-age", "1h"]);
    assert_ne!(code(&o), 134, "aborted: {}", stderr(&o));
    assert!(o.status.code().is_some(), "killed by a signal");
    h.join().unwrap();

    // An endless line: a bounded read and a protocol error, not the host's memory.
    let dir = tempfile::tempdir().unwrap();
    let (sock, h) = hostile_agent(dir.path(), |_| None);
    let o = qga(&sock, &["--timeout", "30", "report"]);
    assert_fails(&o, 5, "without ending its answer");
    h.join().unwrap();
}
