//! The host files guestprep writes, `verify --output FORMAT=PATH` and `fleet
//! --prometheus-textfile PATH`: written atomically where nothing is or over a regular file, and
//! nowhere else. A FIFO, a character device (made with mknod in the test's directory, with
//! /dev/null's numbers: never the real one), a socket, a directory or a symlink at PATH is a
//! usage error (exit 2), checked before any work, and the node is left exactly as it was (same
//! inode, type, device numbers; a link's target unchanged). `-` is standard output.

use crate::common;
use common::{BIN, code, example_root, policies, stderr, stdout};

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A directory with one of each thing that is not a regular file ([`REFUSED`]), and the regular
/// file a symlink points to.
struct Nodes {
    dir: tempfile::TempDir,
    _socket: std::os::unix::net::UnixListener,
}

/// The names in [`Nodes`] that are refused, with what the message must call each.
const REFUSED: [(&str, &str); 6] = [
    ("fifo", "a FIFO"),
    ("null", "a character device"),
    ("sock", "a socket"),
    ("dir", "a directory"),
    ("link", "a symlink (to target)"),
    ("dangling", "a symlink (to nowhere)"),
];

impl Nodes {
    fn new() -> Nodes {
        use nix::sys::stat::{Mode, SFlag, makedev, mknod};
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mode = Mode::from_bits_truncate(0o666);
        nix::unistd::mkfifo(&d.join("fifo"), mode).unwrap();
        mknod(&d.join("null"), SFlag::S_IFCHR, mode, makedev(1, 3)).unwrap();
        let socket = std::os::unix::net::UnixListener::bind(d.join("sock")).unwrap();
        std::fs::create_dir(d.join("dir")).unwrap();
        std::fs::write(d.join("target"), "the link's target\n").unwrap();
        std::os::unix::fs::symlink("target", d.join("link")).unwrap();
        std::os::unix::fs::symlink("nowhere", d.join("dangling")).unwrap();
        Nodes {
            dir,
            _socket: socket,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// What identifies each node: inode, file type, device numbers.
    fn identity(&self) -> Vec<(String, u64, u32, u64)> {
        REFUSED
            .iter()
            .map(|(n, _)| {
                let m = std::fs::symlink_metadata(self.path(n)).unwrap();
                (n.to_string(), m.ino(), m.mode() & 0o170000, m.rdev())
            })
            .collect()
    }

    /// Every name in the directory (no temporary file left, nothing made).
    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    /// Asserts each refused node is as it was, the link's target unchanged, nothing added.
    #[track_caller]
    fn assert_untouched(&self, before: &[(String, u64, u32, u64)], names: &[String]) {
        assert_eq!(self.identity(), before);
        assert!(
            std::fs::symlink_metadata(self.path("null"))
                .unwrap()
                .file_type()
                .is_char_device()
        );
        assert_eq!(
            std::fs::read_to_string(self.path("target")).unwrap(),
            "the link's target\n"
        );
        assert_eq!(self.names(), names);
    }
}

fn verify(root: &Path, extra: &[&str], cwd: &Path) -> Output {
    Command::new(BIN)
        .arg("verify")
        .arg("--root")
        .arg(root)
        .arg("--policy")
        .arg(policies())
        .args(extra)
        .current_dir(cwd)
        .env_remove("GUESTPREP_ROOT")
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

#[test]
fn verify_outputs_only_where_nothing_is_or_over_a_regular_file() {
    let root = example_root();
    let nodes = Nodes::new();
    let (before, names) = (nodes.identity(), nodes.names());
    for (name, kind) in REFUSED {
        let spec = format!("json={}", nodes.path(name).display());
        let o = verify(root.path(), &["--output", &spec], nodes.dir.path());
        assert_eq!(code(&o), 2, "{name}: {}", stderr(&o));
        assert!(stderr(&o).contains(kind), "{name}: {}", stderr(&o));
        assert!(stderr(&o).contains("left it as it is"), "{}", stderr(&o));
        // Refused before any work: no verdict was printed.
        assert!(stdout(&o).is_empty(), "{name}: {}", stdout(&o));
        nodes.assert_untouched(&before, &names);
    }
    // A trailing slash names a directory, even where nothing is.
    let spec = format!("json={}/", nodes.path("absent").display());
    let o = verify(root.path(), &["--output", &spec], nodes.dir.path());
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    nodes.assert_untouched(&before, &names);

    // Nothing there: made; a regular file: replaced (a new inode, atomically), mode 0644.
    let fresh = nodes.path("fresh.json");
    let o = verify(
        root.path(),
        &["--output", &format!("json={}", fresh.display())],
        nodes.dir.path(),
    );
    let verdict = code(&o);
    assert!(![2, 5].contains(&verdict), "{}", stderr(&o));
    let first: serde_json::Value = serde_json::from_slice(&std::fs::read(&fresh).unwrap()).unwrap();
    assert_eq!(first["exitCode"], verdict);
    let ino = std::fs::metadata(&fresh).unwrap().ino();
    let o = verify(
        root.path(),
        &["--output", &format!("json={}", fresh.display())],
        nodes.dir.path(),
    );
    assert_eq!(code(&o), verdict, "{}", stderr(&o));
    let m = std::fs::metadata(&fresh).unwrap();
    assert_ne!(m.ino(), ino, "replaced by a rename");
    assert_eq!(m.mode() & 0o777, 0o644);

    // `-` is standard output (no file named `-`), and counts as the one output there.
    let o = verify(root.path(), &["--output", "json=-"], nodes.dir.path());
    assert_eq!(code(&o), verdict, "{}", stderr(&o));
    let on_stdout: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(on_stdout["exitCode"], verdict);
    assert!(!nodes.path("-").exists());
    let o = verify(
        root.path(),
        &["--output", "json=-", "--output", "junit"],
        nodes.dir.path(),
    );
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("two outputs to standard output"));
}

fn fleet(qga_dir: &Path, extra: &[&str]) -> Output {
    Command::new(BIN)
        .arg("fleet")
        .arg("--qga-dir")
        .arg(qga_dir)
        .arg("--config-dir")
        .arg(qga_dir)
        .args(extra)
        .env_remove("GUESTPREP_ROOT")
        .output()
        .unwrap()
}

#[test]
fn the_fleet_textfile_only_where_nothing_is_or_over_a_regular_file() {
    let node = tempfile::tempdir().unwrap();
    // A VM whose agent accepts and never answers: a survey would cost its whole timeout.
    let listener = std::os::unix::net::UnixListener::bind(node.path().join("100.qga")).unwrap();
    let nodes = Nodes::new();
    let (before, names) = (nodes.identity(), nodes.names());
    for (name, kind) in REFUSED {
        let p = nodes.path(name);
        let start = Instant::now();
        let o = fleet(
            node.path(),
            &[
                "--timeout",
                "30",
                "--prometheus-textfile",
                p.to_str().unwrap(),
            ],
        );
        assert_eq!(code(&o), 2, "{name}: {}", stderr(&o));
        assert!(stderr(&o).contains(kind), "{name}: {}", stderr(&o));
        // Refused before any VM was asked.
        assert!(start.elapsed() < Duration::from_secs(10), "{name}");
        assert!(stdout(&o).is_empty(), "{name}: {}", stdout(&o));
        nodes.assert_untouched(&before, &names);
    }
    drop(listener);
    std::fs::remove_file(node.path().join("100.qga")).unwrap();

    // An empty node: the textfile made, then replaced; `-` prints it instead of the table.
    let prom = nodes.path("fleet.prom");
    for _ in 0..2 {
        let o = fleet(
            node.path(),
            &["--prometheus-textfile", prom.to_str().unwrap()],
        );
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let text = std::fs::read_to_string(&prom).unwrap();
        assert!(text.contains("guestprep_fleet_last_run_timestamp_seconds"));
        assert!(stdout(&o).contains("0 VMs"), "{}", stdout(&o));
    }
    let o = fleet(node.path(), &["--prometheus-textfile", "-"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("# HELP"),
        "the textfile, not the table: {}",
        stdout(&o)
    );
    let o = fleet(node.path(), &["--prometheus-textfile", "-", "--json"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}
