//! guestprep's reading of sshd's configuration against the real sshd of Debian 13 (the VM test
//! root, not booted: `chroot ROOT sshd -T`): `Include` depth (16 levels read, 17 refused), a file
//! including itself, a `[...]` class in a glob, a `Match` inside an included file. For each case
//! it prints what guestprep said and what sshd said, and asserts they agree.

use crate::common;
use common::container::{rootfs_tar, unpack};
use common::*;

use std::path::Path;
use std::process::Command;

/// Replaces the root's sshd configuration by `files` (paths under /etc/ssh; `sshd_config`
/// first), leaving its host keys.
fn write_tree(root: &Path, files: &[(String, String)]) {
    let t = root.join("etc/ssh/t");
    if t.exists() {
        std::fs::remove_dir_all(&t).unwrap();
    }
    for (rel, text) in files {
        let p = root.join("etc/ssh").join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

/// `sshd_config` → t/f1 → … → t/f`n`, the last one `last`.
fn chain(n: usize, last: &str) -> Vec<(String, String)> {
    let mut v = vec![("sshd_config".to_string(), "Include t/f1\n".to_string())];
    for i in 1..n {
        v.push((format!("t/f{i}"), format!("Include t/f{}\n", i + 1)));
    }
    v.push((format!("t/f{n}"), last.to_string()));
    v
}

fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect()
}

/// What the real sshd reads: `Ok(keyword → value)` or `Err(its error)`.
fn sshd_t(root: &Path) -> Result<std::collections::BTreeMap<String, String>, String> {
    let o = Command::new("chroot")
        .arg(root)
        .args(["/usr/sbin/sshd", "-T"])
        .output()
        .expect("chroot");
    if !o.status.success() {
        return Err(stderr(&o).trim().to_string());
    }
    Ok(stdout(&o)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

#[test]
fn include_depth_cycles_classes_and_match_as_the_real_sshd_reads_them() {
    let dir = unpack(&rootfs_tar("vm"));
    let root = dir.path();
    // sshd -T as root needs its privilege separation directory (ssh.service makes it when it
    // runs); this root is never booted.
    std::fs::create_dir_all(root.join("run/sshd")).unwrap();
    let policy = root.join("root/sshd-test.toml");
    std::fs::write(
        &policy,
        "[ssh]\nciphers = [\"aes256-gcm@openssh.com\"]\nsettings = { PermitRootLogin = \"no\" }\n",
    )
    .unwrap();
    let class = files(&[
        ("sshd_config", "Include /etc/ssh/t/[ab].conf\n"),
        ("t/0.conf", "Ciphers aes192-ctr\n"),
        ("t/b.conf", "Ciphers aes128-ctr\n"),
        ("t/c.conf", "Ciphers aes256-ctr\n"),
    ]);
    let negated = files(&[
        ("sshd_config", "Include t/[!0-9b]*.conf\n"),
        ("t/0.conf", "Ciphers aes192-ctr\n"),
        ("t/b.conf", "Ciphers aes128-ctr\n"),
        ("t/c.conf", "Ciphers aes256-ctr\n"),
    ]);
    let matched = files(&[
        ("sshd_config", "Include t/a.conf t/b.conf\n"),
        ("t/a.conf", "Match user bob\nPermitRootLogin no\n"),
        ("t/b.conf", "PermitRootLogin yes\nCiphers aes128-ctr\n"),
    ]);
    let own_dir = files(&[
        ("sshd_config", "Include t/*\n"),
        ("t/a.conf", "Include /etc/ssh/t/*\nCiphers aes128-ctr\n"),
    ]);
    let cases: Vec<(&str, Vec<(String, String)>)> = vec![
        ("[ab] class", class),
        ("[!0-9b] class", negated),
        ("Match in an included file", matched),
        (
            "weak cipher 10 levels deep",
            chain(10, "Ciphers 3des-cbc\n"),
        ),
        ("16 levels", chain(16, "Ciphers aes128-ctr\n")),
        ("17 levels", chain(17, "Ciphers aes128-ctr\n")),
        ("a glob matching its own file", own_dir),
    ];
    for (name, tree) in cases {
        write_tree(root, &tree);
        let o = guestprep(&[
            "verify",
            "--root",
            root.to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
            "--only",
            "ssh",
            "--json",
        ]);
        let rep = json(&o);
        let eff = item(&rep, "ssh:effective");
        let prl = item(&rep, "ssh:PermitRootLogin");
        let real = sshd_t(root);
        eprintln!(
            "{name}: guestprep {} (Ciphers {}, PermitRootLogin {}) {}; sshd -T: {}",
            eff["status"],
            eff["actual"]["Ciphers"]["value"],
            prl["actual"]["PermitRootLogin"]["value"],
            eff["message"],
            match &real {
                Ok(m) => format!(
                    "ciphers {}, permitrootlogin {}",
                    m["ciphers"], m["permitrootlogin"]
                ),
                Err(e) => format!("refused: {e}"),
            }
        );
        match real {
            Ok(m) => {
                assert_eq!(eff["actual"]["Ciphers"]["value"], m["ciphers"], "{name}");
                if let Some(v) = prl["actual"]["PermitRootLogin"]["value"].as_str() {
                    assert_eq!(v, m["permitrootlogin"], "{name}");
                }
            }
            Err(e) => {
                assert!(
                    e.contains("Too many recursive configuration includes"),
                    "{name}: {e}"
                );
                assert_eq!(eff["status"], "error", "{name}: {eff}");
                let msg = eff["message"].as_str().unwrap();
                assert!(
                    msg.starts_with(
                        "sshd will not start: \"Too many recursive configuration includes\""
                    ),
                    "{name}: {msg}"
                );
            }
        }
    }
}
