//! Helpers shared by the integration tests: the real binary, scratch copies of fixture roots, and
//! tree snapshots to prove what changed and what did not.

pub mod container;
pub mod daemon;
pub mod debs;
pub mod fleet;
pub mod http;
pub mod peak;
pub mod seal;
pub mod static_bin;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_guestprep");

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn policies() -> PathBuf {
    repo().join("policies")
}

/// A scratch copy of examples/debian13-root.
pub fn example_root() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    copy_tree(&repo().join("examples/debian13-root"), t.path());
    t
}

/// A scratch copy of the example root with the shipped policies applied: compliant but for the
/// live-only items and GRUB's arguments, pending (exit 3) until update-grub runs in the image.
pub fn converged_root() -> tempfile::TempDir {
    let root = example_root();
    let o = guestprep(&[
        "apply",
        "--root",
        root.path().to_str().unwrap(),
        "--policy",
        policies().to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 3, "{}{}", stdout(&o), stderr(&o));
    root
}

pub fn copy_tree(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

pub fn guestprep(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("GUESTPREP_ROOT")
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

/// `guestprep VERB --root ROOT --policy policies/ EXTRA…`: a subcommand on a root with the
/// shipped policies.
pub fn on_root(verb: &str, root: &Path, extra: &[&str]) -> Output {
    let pol = policies();
    let mut args = vec![
        verb,
        "--root",
        root.to_str().unwrap(),
        "--policy",
        pol.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    guestprep(&args)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Every file and symlink under `dir`: relative path → (content or link target, mode, inode, mtime ns).
pub type Snapshot = BTreeMap<String, (Vec<u8>, u32, u64, i128)>;

pub fn snapshot(dir: &Path) -> Snapshot {
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn walk(base: &Path, dir: &Path, out: &mut Snapshot) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        let m = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(base).unwrap().display().to_string();
        let mtime = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
        if m.is_dir() {
            out.insert(format!("{rel}/"), (Vec::new(), m.mode(), m.ino(), 0));
            walk(base, &p, out);
        } else if m.file_type().is_symlink() {
            let t = std::fs::read_link(&p).unwrap();
            out.insert(
                rel,
                (
                    t.as_os_str().as_encoded_bytes().to_vec(),
                    m.mode(),
                    m.ino(),
                    mtime,
                ),
            );
        } else if !m.is_file() || m.len() > 64 << 20 {
            // A FIFO, a device, or a (sparse) giant a hostile-image test made: never read.
            let what = format!("<not read: mode {:o}, {} bytes>", m.mode(), m.len());
            out.insert(rel, (what.into_bytes(), m.mode(), m.ino(), mtime));
        } else {
            out.insert(rel, (std::fs::read(&p).unwrap(), m.mode(), m.ino(), mtime));
        }
    }
}

pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

pub fn item<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id)
        .unwrap_or_else(|| panic!("no item {id}"))
}

/// Asserts a command exited with `code` and said `needle` on stderr.
#[track_caller]
pub fn assert_fails(o: &Output, code_: i32, needle: &str) {
    assert_eq!(code(o), code_, "{}", stderr(o));
    assert!(stderr(o).contains(needle), "{}", stderr(o));
}

/// Asserts two snapshots are equal, naming only the paths that differ.
#[track_caller]
pub fn assert_same(a: &Snapshot, b: &Snapshot, what: &str) {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let differ: Vec<&&String> = keys.iter().filter(|k| a.get(**k) != b.get(**k)).collect();
    assert!(differ.is_empty(), "{what}: these paths differ: {differ:?}");
}

/// A snapshot without runtime state under run/ (the apply lock records its holder's pid).
pub fn persistent(s: Snapshot) -> Snapshot {
    s.into_iter()
        .filter(|(k, _)| !k.starts_with("run/"))
        .collect()
}

/// Makes a root say it is another system, as its image does: `text` at /usr/lib/os-release and
/// /etc/os-release a link to it (Ubuntu's and Flatcar's arrangements).
pub fn write_os_release(root: &Path, text: &str) {
    std::fs::create_dir_all(root.join("usr/lib")).unwrap();
    std::fs::write(root.join("usr/lib/os-release"), text).unwrap();
    let _ = std::fs::remove_file(root.join("etc/os-release"));
    std::os::unix::fs::symlink("../usr/lib/os-release", root.join("etc/os-release")).unwrap();
}
