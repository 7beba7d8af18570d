//! Ubuntu 24.04's socket-activated sshd, built from Debian 13's real packages (Debian ships the
//! same `ssh.socket`, `Accept=no`): the VM test root with Noble's os-release, `ssh.socket`
//! enabled and `ssh.service` disabled (by the host's real `systemctl --root`), booted with
//! systemd-nspawn in a network of its own. A policy moves sshd to port 2222. Each verdict of
//! `ssh:listen` is checked against the real programs: `systemctl show ssh.socket -p Listen`, and a
//! TCP connection that must (or must not) get sshd's `SSH-2.0-` banner.

use crate::common;
use common::container::{Container, rootfs_tar, unpack};
use common::*;

use std::path::Path;
use std::process::Command;

/// Ubuntu's arrangement on the unpacked root: its os-release, the socket on, the service off.
fn make_noble(root: &Path) {
    write_os_release(root, crate::ubuntu::OS_RELEASE);
    for args in [["disable", "ssh.service"], ["enable", "ssh.socket"]] {
        let o = Command::new("systemctl")
            .arg("--root")
            .arg(root)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "systemctl {args:?}: {}", stderr(&o));
    }
}

/// What the container's port says to a TCP connection: the first 8 bytes, or the error.
fn banner(c: &Container, port: u16) -> String {
    let o = c.exec(&[
        "timeout",
        "10",
        "bash",
        "-c",
        &format!("exec 3<>/dev/tcp/127.0.0.1/{port} && head -c 8 <&3"),
    ]);
    if o.status.success() {
        stdout(&o)
    } else {
        format!("no answer ({})", stderr(&o).trim())
    }
}

fn listen(c: &Container) -> String {
    stdout(&c.exec(&["systemctl", "show", "-P", "Listen", "ssh.socket"]))
        .trim()
        .to_string()
}

#[test]
fn socket_activated_sshd_moves_to_the_policys_port() {
    let t0 = std::time::Instant::now();
    let dir = unpack(&rootfs_tar("vm"));
    make_noble(dir.path());
    let pol_text = "[ssh]\nsettings = { Port = 2222 }\n";
    std::fs::write(dir.path().join("root/port.toml"), pol_text).unwrap();

    // Offline, from the unit files: the socket listens on 22, sshd's configuration would say 22
    // too (the policy's drop-in is not written yet), so compare after a dry run: --check.
    let root = dir.path().to_str().unwrap().to_string();
    let pol_host = dir.path().join("root/port.toml");
    let o = guestprep(&[
        "apply",
        "--check",
        "--json",
        "--root",
        &root,
        "--policy",
        pol_host.to_str().unwrap(),
    ]);
    let rep = json(&o);
    assert_eq!(rep["host"]["platform"], "ubuntu", "{}", rep["host"]);
    assert_eq!(rep["host"]["sshdStart"], "socket", "{}", rep["host"]);
    let planned: Vec<&str> = rep["apply"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["item"].as_str())
        .collect();
    eprintln!("offline apply --check plans: {planned:?}");
    assert!(
        planned.contains(&"file:/etc/systemd/system/ssh.socket.d/addresses.conf"),
        "{planned:?}"
    );

    let c = Container::boot_isolated(dir);
    assert_eq!(c.systemctl("is-active", "ssh.socket"), "active");
    assert_eq!(c.systemctl("is-enabled", "ssh.service"), "disabled");
    assert_ne!(c.systemctl("is-active", "ssh.service"), "active");
    let before = listen(&c);
    eprintln!("before apply: systemctl show ssh.socket -p Listen: {before}");
    assert!(before.contains(":22 "), "{before}");
    let pol = "/root/port.toml";

    // Before apply, verify must not be compliant: the socket listens on 22, not 2222 (the
    // policy's drop-in is not there yet, so the drift is the drop-in's and the port's).
    let o = c.exec(&["guestprep", "verify", "--json", "--policy", pol]);
    let rep = json(&o);
    let l = item(&rep, "ssh:listen");
    eprintln!(
        "before apply: verify exit {}, ssh:listen {}: {}",
        code(&o),
        l["status"],
        l["message"]
    );
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert_eq!(l["status"], "compliant", "sshd's config still says 22 too");
    assert_eq!(item(&rep, "ssh:Port")["status"], "drift");

    // The policy's sshd drop-in alone (as a site that wrote Port 2222 by hand): sshd's
    // configuration says 2222, the socket still 22: ssh:listen is drift.
    std::fs::write(
        c.root().join("etc/ssh/sshd_config.d/05-guestprep.conf"),
        "Port 2222\n",
    )
    .unwrap();
    let o = c.exec(&[
        "guestprep",
        "verify",
        "--json",
        "--only",
        "ssh:listen",
        "--policy",
        pol,
    ]);
    let rep = json(&o);
    let l = item(&rep, "ssh:listen");
    eprintln!(
        "sshd says 2222, socket 22: verify exit {}, ssh:listen {}: {}",
        code(&o),
        l["status"],
        l["message"]
    );
    assert_eq!(l["status"], "drift");
    assert_eq!(code(&o), 1);
    // No connection yet: ssh.service never ran, so /run/sshd (its RuntimeDirectory) should be
    // missing, as on a fresh clone; apply's `sshd -t` needs it. Removed if something made it.
    let had = c.exec(&["test", "-d", "/run/sshd"]).status.success();
    eprintln!("/run/sshd before apply (ssh.service never ran): {had}");
    if had {
        assert!(c.exec(&["rmdir", "/run/sshd"]).status.success());
    }

    let t_apply = std::time::Instant::now();
    let o = c.exec(&["guestprep", "apply", "--json", "--policy", pol]);
    let rep = json(&o);
    let ch: Vec<String> = rep["apply"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{}: {}", c["item"].as_str().unwrap(), c["action"]))
        .collect();
    eprintln!(
        "apply exit {} in {:?}: {ch:#?}",
        code(&o),
        t_apply.elapsed()
    );
    if code(&o) != 0 {
        let j = c.exec(&[
            "journalctl",
            "-u",
            "ssh.socket",
            "-u",
            "ssh.service",
            "--no-pager",
            "-o",
            "cat",
        ]);
        eprintln!("journal: {}", stdout(&j));
    }
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(ch.iter().any(|c| c.contains("/run/sshd")), "{ch:?}");
    assert!(
        ch.iter()
            .any(|c| c.starts_with("file:/etc/ssh/sshd_config.d")
                || c.starts_with("file:/etc/systemd/system/ssh.socket.d")),
        "{ch:?}"
    );
    assert_eq!(
        ch.iter()
            .filter(|c| c.contains("restart ssh.socket"))
            .count(),
        1,
        "one restart of ssh.socket: {ch:?}"
    );
    let l = item(&rep, "ssh:listen");
    let after = listen(&c);
    let b2222 = banner(&c, 2222);
    let b22 = banner(&c, 22);
    eprintln!(
        "after apply: ssh:listen {}; systemctl show ssh.socket -p Listen: {after}; port 2222: {b2222:?}; port 22: {b22:?}",
        l["status"]
    );
    assert_eq!(l["status"], "compliant", "{l}");
    assert!(after.contains(":2222 "), "{after}");
    assert!(!after.contains(":22 "), "{after}");
    assert!(b2222.starts_with("SSH-2.0-"), "{b2222}");
    assert!(!b22.starts_with("SSH-2.0-"), "{b22}");
    // The connection started ssh.service, the socket's daemon. Moving to 2200 now: systemd
    // starts no socket while its daemon runs, so apply stops ssh.service, then restarts the socket.
    assert_eq!(c.systemctl("is-active", "ssh.service"), "active");
    std::fs::write(
        c.root().join("root/port.toml"),
        "[ssh]\nsettings = { Port = 2200 }\n",
    )
    .unwrap();
    let o = c.exec(&["guestprep", "apply", "--json", "--policy", pol]);
    let rep = json(&o);
    let ch = rep["apply"]["changes"].to_string();
    let (after, b2200, b2222) = (listen(&c), banner(&c, 2200), banner(&c, 2222));
    eprintln!(
        "to 2200 with ssh.service running: apply exit {}, ssh:listen {}, Listen: {after}; port 2200: {b2200:?}; port 2222: {b2222:?}; changes {ch}",
        code(&o),
        item(&rep, "ssh:listen")["status"]
    );
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(ch.contains("stop ssh.service"), "{ch}");
    assert!(
        after.contains(":2200 ") && !after.contains(":2222 "),
        "{after}"
    );
    assert!(b2200.starts_with("SSH-2.0-"), "{b2200}");
    assert!(!b2222.starts_with("SSH-2.0-"), "{b2222}");
    // A second apply restarts nothing.
    let o = c.exec(&["guestprep", "apply", "--json", "--policy", pol]);
    let rep = json(&o);
    eprintln!(
        "second apply: exit {}, changes {}",
        code(&o),
        rep["apply"]["changes"]
    );
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert_eq!(rep["apply"]["changes"], serde_json::json!([]));
    eprintln!("whole test {:?}", t0.elapsed());
}

/// `policy check` on an offline root whose dpkg status says Noble's openssh-server 9.6p1: a name
/// that arrived in 9.9 is an error naming file:line and the release; without a root's sshd the
/// newest table applies, and the check says so.
#[test]
fn policy_names_are_checked_against_the_roots_openssh() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
    std::fs::write(
        root.join("var/lib/dpkg/status"),
        "Package: openssh-server\nStatus: install ok installed\nVersion: 1:9.6p1-3ubuntu13.5\n\n",
    )
    .unwrap();
    let pol = root.join("ssh.toml");
    std::fs::write(
        &pol,
        "[ssh]\nkex_algorithms = [\"curve25519-sha256\", \"mlkem768x25519-sha256\"]\n",
    )
    .unwrap();
    let (r, p) = (root.to_str().unwrap(), pol.to_str().unwrap());
    let o = guestprep(&["policy", "check", "--root", r, "--policy", p]);
    eprintln!("9.6p1 root: exit {}: {}", code(&o), stderr(&o).trim());
    assert_eq!(code(&o), 2);
    let e = stderr(&o);
    assert!(e.contains("ssh.toml:2:"), "{e}");
    assert!(e.contains("arrived in OpenSSH 9.9"), "{e}");
    assert!(e.contains("9.6p1"), "{e}");
    std::fs::remove_file(root.join("var/lib/dpkg/status")).unwrap();
    let o = guestprep(&["policy", "check", "--root", r, "--policy", p]);
    eprintln!("no sshd: exit {}: {}", code(&o), stdout(&o).trim());
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("newest guestprep knows"),
        "{}",
        stdout(&o)
    );
}
