//! Hostile guest agents (the guest is untrusted) against `guestprep qga` and `guestprep fleet`:
//! each is a small server on a unix socket in a thread, speaking the real protocol until it turns
//! hostile: a byte every 300 ms, a line that never ends, a file-read that claims data it never
//! sends, a file-read of one byte per answer forever, blank lines forever, 32 MiB answers. The
//! command must end within `--timeout` (plus a margin for a loaded machine), with its exit code,
//! a short message, and its memory bounded whatever the agent sends. Also fleet's node files: a
//! FIFO or a device at `VMID.pid`/`VMID.conf` is that VM's error, never a hang.

use crate::common;
use common::{BIN, code, stderr, stdout};

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

/// What the agent does once it has answered the sync.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Hostile {
    /// Every answer one byte per 300 ms, never ending.
    Drip,
    /// Every answer a line that never ends, as fast as the host reads.
    Endless,
    /// guest-file-read: `count 1`, no data, not at the end.
    ClaimsData,
    /// guest-file-read: one byte per answer, never at the end.
    Trickle,
    /// Blank lines, never an answer.
    Blank,
    /// guest-file-read: one answer line of 32 MiB (valid JSON).
    Huge,
    /// A 31 MiB line that is not JSON.
    HugeGarbage,
    /// guest-exec-status: a finished program whose output makes a 32 MiB answer (what a real
    /// qemu-ga can send: it caps each stream at 16 MiB before base64).
    HugeExec,
}

const ALL: [Hostile; 7] = [
    Hostile::Drip,
    Hostile::Endless,
    Hostile::ClaimsData,
    Hostile::Trickle,
    Hostile::Blank,
    Hostile::Huge,
    Hostile::HugeGarbage,
];

/// The program output of [`Hostile::HugeExec`] (and the file of [`Hostile::Huge`]): 24 MiB less
/// a little, so the answer line stays under 32 MiB; byte `i` is `i % 251`.
const HUGE: usize = (24 << 20) - 4096;

/// Writes `head`, base64 of the [`HUGE`] bytes and `tail`, a piece at a time: this test process
/// stays small (the peak memory is the child's own anyway, measured by GNU time in
/// [`run_within`]).
fn write_huge(w: &mut impl Write, head: &str, tail: &str) -> std::io::Result<()> {
    w.write_all(head.as_bytes())?;
    // A multiple of 3: the pieces' base64 join without padding.
    let piece = 3 << 14;
    let mut chunk = Vec::with_capacity(piece);
    for start in (0..HUGE).step_by(piece) {
        chunk.clear();
        chunk.extend((start..HUGE.min(start + piece)).map(|i| (i % 251) as u8));
        w.write_all(
            base64::engine::general_purpose::STANDARD
                .encode(&chunk)
                .as_bytes(),
        )?;
    }
    w.write_all(tail.as_bytes())
}

/// Serves `sock` with agents that behave as `kind`, one thread per connection, until the test
/// process ends (a client that gave up makes the next write fail, which ends its thread).
fn serve(sock: &Path, kind: Hostile) {
    let listener = UnixListener::bind(sock).unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = converse(s, kind);
            });
        }
    });
}

fn converse(s: UnixStream, kind: Hostile) -> std::io::Result<()> {
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if r.read_until(b'\n', &mut buf)? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&buf);
        let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\u{FFFD}');
        let Ok(req) = serde_json::from_str::<serde_json::Value>(text) else {
            continue;
        };
        let cmd = req["execute"].as_str().unwrap_or("").to_string();
        if cmd == "guest-sync-delimited" {
            let mut line = vec![0xff];
            line.extend(format!("{{\"return\": {}}}\n", req["arguments"]["id"]).into_bytes());
            w.write_all(&line)?;
            continue;
        }
        let read = cmd == "guest-file-read";
        match kind {
            Hostile::Drip => {
                w.write_all(b"{\"return\": ")?;
                loop {
                    std::thread::sleep(Duration::from_millis(300));
                    w.write_all(b" ")?;
                }
            }
            Hostile::Endless => {
                let chunk = vec![b'a'; 1 << 20];
                loop {
                    w.write_all(&chunk)?;
                }
            }
            Hostile::Blank => {
                let chunk = vec![b'\n'; 4096];
                loop {
                    w.write_all(&chunk)?;
                }
            }
            Hostile::ClaimsData if read => {
                w.write_all(b"{\"return\": {\"count\": 1, \"eof\": false}}\n")?
            }
            Hostile::Trickle if read => w.write_all(
                b"{\"return\": {\"count\": 1, \"buf-b64\": \"eA==\", \"eof\": false}}\n",
            )?,
            Hostile::Huge if read => write_huge(
                &mut w,
                &format!("{{\"return\": {{\"count\": {HUGE}, \"buf-b64\": \""),
                "\", \"eof\": true}}\n",
            )?,
            Hostile::HugeExec if cmd == "guest-exec-status" => write_huge(
                &mut w,
                "{\"return\": {\"exited\": true, \"exitcode\": 0, \"out-data\": \"",
                "\"}}\n",
            )?,
            Hostile::HugeGarbage if read => {
                let chunk = vec![b'x'; 1 << 20];
                for _ in 0..31 {
                    w.write_all(&chunk)?;
                }
                w.write_all(b"\n")?
            }
            _ => {
                let answer = match cmd.as_str() {
                    "guest-file-open" => "1",
                    "guest-exec" => "{\"pid\": 7}",
                    "guest-get-time" => "1700000000000000000",
                    _ => "{}",
                };
                w.write_all(format!("{{\"return\": {answer}}}\n").as_bytes())?
            }
        }
    }
}

/// A finished command, how long it took and the peak memory of the largest child this test
/// process has waited for: an upper bound for this one (every child here is a guestprep), and
/// fair because the count of a child starts from its parent's own high-water mark when it
/// execs: this process never holds a big buffer (answers are streamed, output is not kept).
struct Run {
    out: Output,
    took: Duration,
    max_rss_mb: u64,
    /// All of standard output (only its first MiB is in `out.stdout`).
    stdout_len: usize,
    /// Standard output is byte for byte the [`HUGE`] bytes of [`write_huge`].
    stdout_is_huge: bool,
}

/// Standard output, counted and compared with [`HUGE`]'s bytes as it comes, its first MiB kept.
fn drain_stdout(mut r: impl Read) -> (Vec<u8>, usize, bool) {
    let (mut kept, mut len, mut huge) = (Vec::new(), 0, true);
    let mut buf = vec![0; 64 << 10];
    while let Ok(n @ 1..) = r.read(&mut buf) {
        huge &= buf[..n]
            .iter()
            .enumerate()
            .all(|(i, b)| *b == ((len + i) % 251) as u8);
        if kept.len() < 1 << 20 {
            kept.extend_from_slice(&buf[..n.min((1 << 20) - kept.len())]);
        }
        len += n;
    }
    (kept, len, huge && len == HUGE)
}

/// Runs `c`, killing it if it outlives `limit` (which then fails the test, with what it said).
fn run_within(c: Command, limit: Duration) -> Run {
    let peak = tempfile::NamedTempFile::new().unwrap();
    let mut c = crate::common::peak::measured(&c, peak.path());
    let start = Instant::now();
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("GUESTPREP_ROOT")
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let out = std::thread::spawn(move || drain_stdout(out));
    let mut err = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let st = child.wait().unwrap();
            let e = err.join().unwrap();
            panic!(
                "still running after {limit:?} (killed: {st}); stderr: {}",
                String::from_utf8_lossy(&e[..e.len().min(2000)])
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = start.elapsed();
    let (stdout, stdout_len, stdout_is_huge) = out.join().unwrap();
    Run {
        out: Output {
            status,
            stdout,
            stderr: err.join().unwrap(),
        },
        took,
        max_rss_mb: crate::common::peak::peak_kib(peak.path()) / 1024,
        stdout_len,
        stdout_is_huge,
    }
}

/// The deadline the tests give (`--timeout 2`) and what a loaded machine may add to it.
const TIMEOUT: u64 = 2;
const MARGIN: Duration = Duration::from_secs(3);
/// Far above what a bounded reader needs, far below what buffering 32 MiB answers costs.
const MAX_RSS_MB: u64 = 200;

fn qga(sock: &Path, timeout: u64, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("qga")
        .arg("--socket")
        .arg(sock)
        .args(["--timeout", &timeout.to_string()])
        .args(args);
    c
}

/// The exit code `qga report` gives each: 6 when the agent never finishes its answers in time,
/// 5 when it sends what is not an answer (too long, or claiming data it does not send).
fn qga_code(kind: Hostile) -> i32 {
    match kind {
        Hostile::Drip | Hostile::Trickle | Hostile::Blank => 6,
        _ => 5,
    }
}

#[test]
fn qga_ends_within_its_timeout_whatever_the_agent_sends() {
    let dir = tempfile::tempdir().unwrap();
    for kind in ALL {
        let sock = dir.path().join(format!("{kind:?}.qga"));
        serve(&sock, kind);
        let r = run_within(
            qga(&sock, TIMEOUT, &["report"]),
            Duration::from_secs(TIMEOUT) + MARGIN,
        );
        let err = stderr(&r.out);
        eprintln!(
            "{kind:?}: exit {} in {:.2} s, max RSS {} MB, {} bytes of stderr: {}",
            code(&r.out),
            r.took.as_secs_f64(),
            r.max_rss_mb,
            err.len(),
            err.trim_end()
        );
        assert_eq!(code(&r.out), qga_code(kind), "{kind:?}: {err}");
        assert!(err.len() < 2048, "{kind:?}: {} bytes of stderr", err.len());
        assert!(r.out.stdout.is_empty(), "{kind:?}: {}", stdout(&r.out));
        assert!(
            r.max_rss_mb < MAX_RSS_MB,
            "{kind:?}: {} MB resident",
            r.max_rss_mb
        );
        let said = match qga_code(kind) {
            6 => "did not answer",
            _ => "guest agent protocol error",
        };
        assert!(err.contains(said), "{kind:?}: {err}");
        assert!(
            !err.chars().any(|c| c.is_control() && c != '\n'),
            "{kind:?}: {err:?}"
        );
    }
}

/// What a real agent can send (a program's 24 MiB of output, a 32 MiB answer) is passed through
/// exactly, without several copies of it in memory.
#[test]
fn a_32_mib_exec_answer_is_passed_through_without_amplifying_it() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("exec.qga");
    serve(&sock, Hostile::HugeExec);
    let r = run_within(
        qga(&sock, 20, &["exec", "--", "/bin/cat"]),
        Duration::from_secs(30),
    );
    eprintln!(
        "32 MiB exec answer: exit {} in {:.2} s, {} bytes out, max RSS {} MB",
        code(&r.out),
        r.took.as_secs_f64(),
        r.stdout_len,
        r.max_rss_mb
    );
    assert_eq!(code(&r.out), 0, "{}", stderr(&r.out));
    assert_eq!(r.stdout_len, HUGE);
    assert!(r.stdout_is_huge, "the output differs");
    assert!(r.max_rss_mb < MAX_RSS_MB, "{} MB resident", r.max_rss_mb);
}

/// A node's VM: `VMID.conf` with the agent on, the agent socket in `run`.
fn hostile_vm(run: &Path, conf: &Path, vmid: u32, kind: Hostile) {
    std::fs::write(
        conf.join(format!("{vmid}.conf")),
        format!("name: {kind:?}\nagent: 1\n"),
    )
    .unwrap();
    serve(&run.join(format!("{vmid}.qga")), kind);
}

fn fleet(bed: &common::fleet::Bed, args: &[&str]) -> Command {
    bed.fleet(BIN, &[&["--timeout", &TIMEOUT.to_string()], args].concat())
}

/// Every hostile agent on one node, asked at once: the node costs one timeout, each VM is
/// no-answer with a short message, and memory stays bounded with all of them in flight.
#[test]
fn fleet_ends_within_its_timeout_whatever_the_agents_send() {
    let bed = common::fleet::Bed::new();
    for (i, kind) in ALL.iter().enumerate() {
        hostile_vm(&bed.run, &bed.conf, 100 + i as u32, *kind);
    }
    let r = run_within(
        fleet(&bed, &["--json", "--parallel", "8"]),
        Duration::from_secs(TIMEOUT) + MARGIN,
    );
    eprintln!(
        "fleet of {} hostile agents: exit {} in {:.2} s, max RSS {} MB, {} bytes out",
        ALL.len(),
        code(&r.out),
        r.took.as_secs_f64(),
        r.max_rss_mb,
        r.out.stdout.len()
    );
    assert_eq!(code(&r.out), 6, "{}", stderr(&r.out));
    assert!(r.out.stderr.len() < 2048, "{}", stderr(&r.out));
    assert!(r.max_rss_mb < MAX_RSS_MB, "{} MB resident", r.max_rss_mb);
    let vms: serde_json::Value = serde_json::from_slice(&r.out.stdout).unwrap();
    let vms = vms.as_array().unwrap();
    assert_eq!(vms.len(), ALL.len());
    for (vm, kind) in vms.iter().zip(ALL) {
        let msg = vm["message"].as_str().unwrap_or("");
        eprintln!("  {kind:?}: {} {} ms: {msg}", vm["state"], vm["durationMs"]);
        assert_eq!(vm["state"], "no-answer", "{kind:?}: {vm}");
        assert!(msg.len() < 512, "{kind:?}: {} bytes of message", msg.len());
        assert!(
            vm["durationMs"].as_u64().unwrap() <= TIMEOUT * 1000 + 1000,
            "{kind:?}: {vm}"
        );
    }
}

/// One hostile VM among good ones does not cost the others anything: a fleet of a drip-feeding
/// agent alone takes its timeout, not more.
#[test]
fn a_drip_feeding_agent_costs_fleet_its_timeout_once() {
    let bed = common::fleet::Bed::new();
    hostile_vm(&bed.run, &bed.conf, 100, Hostile::Drip);
    let r = run_within(fleet(&bed, &[]), Duration::from_secs(TIMEOUT) + MARGIN);
    eprintln!(
        "fleet --timeout {TIMEOUT}, drip-feeding agent: {:.2} s",
        r.took.as_secs_f64()
    );
    assert_eq!(code(&r.out), 6, "{}", stderr(&r.out));
    assert!(
        r.took >= Duration::from_secs(TIMEOUT),
        "ended before the timeout"
    );
    assert!(stdout(&r.out).contains("no-answer"), "{}", stdout(&r.out));
}

/// A FIFO or a device where a node file should be (`VMID.pid`, `VMID.conf`): that VM's error
/// (no-answer, naming the file), read without blocking; the other VMs are asked as usual.
#[test]
fn node_files_that_are_not_regular_files_are_that_vms_error() {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    let bed = common::fleet::Bed::new();
    let mode = Mode::from_bits_truncate(0o600);
    nix::unistd::mkfifo(&bed.run.join("100.pid"), mode).unwrap();
    std::fs::write(bed.conf.join("100.conf"), "name: a\nagent: 1\n").unwrap();
    nix::unistd::mkfifo(&bed.conf.join("101.conf"), mode).unwrap();
    serve(&bed.run.join("101.qga"), Hostile::Blank);
    // /dev/null's numbers, in the test's directory.
    mknod(
        &bed.conf.join("102.conf"),
        SFlag::S_IFCHR,
        mode,
        makedev(1, 3),
    )
    .unwrap();
    std::fs::write(bed.run.join("102.pid"), format!("{}\n", std::process::id())).unwrap();
    // A good VM beside them: configuration only, not running.
    std::fs::write(bed.conf.join("103.conf"), "name: d\nagent: 1\n").unwrap();
    let r = run_within(fleet(&bed, &["--json"]), Duration::from_secs(10));
    assert_eq!(code(&r.out), 6, "{}", stderr(&r.out));
    let vms: serde_json::Value = serde_json::from_slice(&r.out.stdout).unwrap();
    let got: Vec<(u64, String, String, u64)> = vms
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["vmid"].as_u64().unwrap(),
                v["state"].as_str().unwrap().to_string(),
                v["message"].as_str().unwrap_or("").to_string(),
                v["durationMs"].as_u64().unwrap(),
            )
        })
        .collect();
    for (vmid, file, kind) in [
        (100, "100.pid", "FIFO"),
        (101, "101.conf", "FIFO"),
        (102, "102.conf", "character device"),
    ] {
        let (_, state, msg, ms) = got.iter().find(|g| g.0 == vmid).unwrap();
        assert_eq!(state, "no-answer", "{vmid}: {msg}");
        assert!(msg.contains(file) && msg.contains(kind), "{vmid}: {msg}");
        // Not asked: 101's agent (blank lines forever) would have cost the whole timeout.
        assert!(*ms < 1000, "{vmid}: {ms} ms");
    }
    assert_eq!(got.iter().find(|g| g.0 == 103).unwrap().1, "stopped");
}
