//! Large policies for the benchmarks: the shipped policies plus N items of one kind (sysctl keys,
//! `[[files]]`, units masked and enabled), on a copy of a converged example root that is made
//! converged for them too, and checked to be (`verify` exits 0, and a real `apply` changes
//! nothing).
//!
//! Files and unit links are made here the way `apply` makes them (the exact bytes and mode, the
//! symlinks `systemctl --root` makes), not by an `apply` run: 10,000 atomic writes, each fsynced,
//! take minutes on a shared disk and measure the disk, not guestprep. `verify` then proves the
//! copy is what the policy asks for.

// Each benchmark uses the part of this module it needs.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// A kind of item a policy can have many of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `[sysctl]` keys (one file item besides).
    Sysctl,
    /// `[[files_add]]` entries, all in one directory.
    Files,
    /// `[units]`: half `mask_add`, half `enable_add` (unit files with `WantedBy=`).
    Units,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Sysctl, Kind::Files, Kind::Units];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Sysctl => "sysctl",
            Kind::Files => "files",
            Kind::Units => "units",
        }
    }
}

/// The policy fragment asking for `n` items of each `(kind, n)`.
pub fn fragment(items: &[(Kind, usize)]) -> String {
    let mut s = String::from("# benchmark: many items\n");
    for &(kind, n) in items {
        match kind {
            Kind::Sysctl => {
                s.push_str("[sysctl]\n");
                for i in 0..n {
                    let _ = writeln!(s, "\"net.ipv4.conf.bench{i}.rp_filter\" = {}", i % 3);
                }
            }
            Kind::Files => {
                for i in 0..n {
                    let _ = writeln!(
                        s,
                        "[[files_add]]\npath = \"/etc/bench/f{i}.conf\"\nmode = \"0644\"\ncontent = \"value {i}\\n\""
                    );
                }
            }
            Kind::Units => {
                let list = |prefix: &str, count: usize| {
                    (0..count)
                        .map(|i| format!("\"bench-{prefix}{i}.service\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let masked = n / 2;
                let _ = writeln!(
                    s,
                    "[units]\nmask_add = [{}]\nenable_add = [{}]",
                    list("m", masked),
                    list("e", n - masked)
                );
            }
        }
    }
    s
}

/// Makes `dir/root` (a copy of `base`, a converged example root) and `dir/policy` (the shipped
/// policies and [`fragment`]), converged for the fragment; returns the `--root`/`--policy`
/// arguments. Panics if `verify` does not find the copy compliant.
pub fn build(bin: &str, base: &Path, dir: &Path, items: &[(Kind, usize)]) -> Vec<String> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = dir.join("root");
    let policy = dir.join("policy");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&policy).unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(base.join("."))
        .arg(&root)
        .status()
        .unwrap();
    assert!(st.success(), "copying the converged root");
    for e in std::fs::read_dir(repo.join("policies")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            std::fs::copy(&p, policy.join(p.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(policy.join("95-bench.toml"), fragment(items)).unwrap();
    let args = vec![
        "--root".to_string(),
        root.display().to_string(),
        "--policy".to_string(),
        policy.display().to_string(),
    ];
    for &(kind, n) in items {
        match kind {
            Kind::Sysctl => {} // one file: apply writes it below
            Kind::Files => {
                let d = root.join("etc/bench");
                std::fs::create_dir_all(&d).unwrap();
                for i in 0..n {
                    let f = d.join(format!("f{i}.conf"));
                    std::fs::write(&f, format!("value {i}\n")).unwrap();
                    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
                }
            }
            Kind::Units => units(&root, n),
        }
    }
    // What apply still does here is the sysctl file; the files and links made above are what it
    // would have made, or it would change them now.
    let out = Command::new(bin)
        .args(["apply", "--json"])
        .args(&args)
        .output()
        .unwrap();
    // 3: converged but for update-grub, which an offline root leaves pending.
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "apply on the benchmark root failed"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for c in report["apply"]["changes"].as_array().unwrap() {
        let item = c["item"].as_str().unwrap_or("");
        assert!(
            !item.starts_with("file:/etc/bench/") && !item.starts_with("unit:bench-"),
            "the benchmark made {item} differently from apply: {c}"
        );
    }
    let out = Command::new(bin)
        .args(["apply", "--json"])
        .args(&args)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["apply"]["changes"].as_array().map(Vec::len),
        Some(0),
        "the benchmark root is not converged: a second apply changed {}",
        report["apply"]["changes"]
    );
    let st = Command::new(bin)
        .arg("verify")
        .args(&args)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(
        matches!(st.code(), Some(0 | 3)),
        "the benchmark root is not compliant"
    );
    args
}

/// The unit files of the enabled half and the links `systemctl --root` makes for both halves.
fn units(root: &Path, n: usize) {
    let lib = root.join("usr/lib/systemd/system");
    let etc = root.join("etc/systemd/system");
    let wants = etc.join("multi-user.target.wants");
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::create_dir_all(&wants).unwrap();
    let masked = n / 2;
    for i in 0..masked {
        std::os::unix::fs::symlink("/dev/null", etc.join(format!("bench-m{i}.service"))).unwrap();
    }
    for i in 0..n - masked {
        let name = format!("bench-e{i}.service");
        std::fs::write(
            lib.join(&name),
            "[Unit]\nDescription=benchmark unit\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
        )
        .unwrap();
        std::os::unix::fs::symlink(format!("/usr/lib/systemd/system/{name}"), wants.join(&name))
            .unwrap();
    }
}
