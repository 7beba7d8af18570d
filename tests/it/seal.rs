//! `guestprep seal` on fixture roots holding every kind of state it removes, the user's files
//! beside them, a directory a package owns, and symlink traps that point out of the root: the dry
//! run changes nothing, the seal leaves nothing of the list and nothing else, the traps' targets
//! are untouched, the manifest is in every later report; refusals change nothing.

use crate::common;
use common::seal::*;
use common::*;

use std::process::{Command, Stdio};

#[test]
fn dry_run_lists_every_path_and_changes_nothing() {
    let outside = tempfile::tempdir().unwrap();
    let root = stateful_root(outside.path());
    let before = snapshot(root.path());
    let outside_before = snapshot(outside.path());
    let o = seal(root.path(), &["--dry-run"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    for (p, removed) in STATE {
        let verb = if *removed { "remove" } else { "truncate" };
        // A file under a directory removed whole is listed with its directory.
        let listed = out.lines().any(|l| {
            l.starts_with(&format!("would {verb}"))
                && (l.contains(&format!(" {p} (")) || {
                    let dir = l.split_whitespace().nth(3).unwrap_or("-");
                    l.starts_with("would remove tree") && p.starts_with(&format!("{dir}/"))
                })
        });
        assert!(listed, "dry run does not list {p}:\n{out}");
    }
    assert!(
        out.contains("would leave /var/log/trap.log: a symlink"),
        "{out}"
    );
    assert!(stderr(&o).contains("nothing was changed"));
    assert_same(&before, &snapshot(root.path()), "dry run");
    assert_same(
        &outside_before,
        &snapshot(outside.path()),
        "outside the root",
    );

    let o = seal(root.path(), &["--dry-run", "--json"]);
    assert_eq!(code(&o), 0);
    let plan = json(&o);
    assert!(plan["bytes"].as_u64().unwrap() > 0);
    assert_eq!(plan["wouldRefuse"], false);
    assert_same(&before, &snapshot(root.path()), "dry run --json");
}

#[test]
fn seal_removes_the_list_keeps_the_rest_and_never_follows_a_symlink() {
    let outside = tempfile::tempdir().unwrap();
    let root = stateful_root(outside.path());
    let r = root.path();
    let outside_before = snapshot(outside.path());
    let o = seal(r, &["--yes"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    for (p, removed) in STATE {
        if *removed {
            assert!(!exists(r, p), "{p} is still there");
        } else {
            assert_eq!(content(r, p), "", "{p} is not truncated");
        }
    }
    for (p, c) in KEPT {
        assert_eq!(content(r, p), *c, "{p} changed");
    }
    // Emptied, not removed: directories a package owns, and the ones the operations empty.
    for d in [
        "/tmp",
        "/var/tmp",
        "/tmp/owned-dir",
        "/var/lib/cloud",
        "/var/log/journal/0123abcd",
        "/var/cache/apt/archives/partial",
    ] {
        assert!(r.join(&d[1..]).is_dir(), "{d} was removed");
    }
    assert!(!exists(r, "/tmp/owned-dir/inside"));
    // The traps: the links were not followed; the host's files are as they were.
    assert_same(
        &outside_before,
        &snapshot(outside.path()),
        "outside the root",
    );
    assert!(
        std::fs::symlink_metadata(r.join("var/log/trap.log"))
            .unwrap()
            .is_symlink()
    );
    assert!(
        std::fs::symlink_metadata(r.join("home/bob"))
            .unwrap()
            .is_symlink()
    );

    // The manifest, and every later report carries it.
    let m: serde_json::Value =
        serde_json::from_str(&content(r, "/var/lib/guestprep/seal.json")).unwrap();
    assert_eq!(m["sealId"].as_str().unwrap().len(), 32);
    // Not the raw machine-id (machine-id(5): do not expose it) but guestprep's app-specific ID.
    assert_eq!(m["templateMachineId"], "76b56bea78ec43faafb1c3ad97d5dd4b");
    assert!(!content(r, "/var/lib/guestprep/seal.json").contains("0123456789abcdef"));
    assert_eq!(m["forced"], false);
    assert_eq!(m["guestprepVersion"], env!("CARGO_PKG_VERSION"));
    let removed: Vec<&str> = m["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    assert!(
        removed.contains(&"/etc/ssh/ssh_host_rsa_key"),
        "{removed:?}"
    );
    assert!(
        removed.contains(&"/var/log/journal/<machine-id>/system.journal"),
        "the machine-id in a path is named by role: {removed:?}"
    );
    let v = on_root("verify", r, &["--json"]);
    assert_eq!(
        code(&v),
        3,
        "compliant but GRUB's pending arguments: {}",
        stdout(&v)
    );
    let report = json(&v);
    assert_eq!(report["seal"], m, "the report carries the manifest");
    assert_eq!(report["policyDigest"], m["policyDigest"]);

    // Sealing again finds nothing left of the list.
    let o = seal(r, &["--dry-run"]);
    assert!(
        stdout(&o).contains("\n0 path(s)") || stdout(&o).starts_with("would leave"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn operations_from_the_flag_or_the_policy_choose_what_goes() {
    let outside = tempfile::tempdir().unwrap();
    let root = stateful_root(outside.path());
    let r = root.path();
    // The policy names the temporary master key's owner and drops logfiles.
    let pol = tempfile::tempdir().unwrap();
    std::fs::write(
        pol.path().join("95-seal.toml"),
        "[seal]\noperations = [\"defaults\", \"-logfiles\", \"+user-ssh-keys\", \"+net-hostname\"]\nuser_ssh_keys = [\"root\"]\n",
    )
    .unwrap();
    let o = guestprep(&[
        "seal",
        "--yes",
        "--root",
        r.to_str().unwrap(),
        "--policy",
        policies().to_str().unwrap(),
        "--policy",
        pol.path().to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(
        !exists(r, "/root/.ssh/authorized_keys"),
        "root's key named: removed"
    );
    assert_eq!(
        content(r, "/home/alice/.ssh/authorized_keys"),
        "ssh-ed25519 AAAA alice\n",
        "alice is not named: kept"
    );
    assert_eq!(content(r, "/etc/hostname"), "");
    assert_eq!(
        content(r, "/var/log/syslog"),
        "state of /var/log/syslog\n",
        "-logfiles"
    );
    assert!(!exists(r, "/etc/ssh/ssh_host_rsa_key"));

    // The flag wins over the policy: only ssh-hostkeys.
    let root = stateful_root(tempfile::tempdir().unwrap().path());
    let o = seal(root.path(), &["--yes", "--operations", "ssh-hostkeys"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(!exists(root.path(), "/etc/ssh/ssh_host_rsa_key"));
    assert!(exists(root.path(), "/root/.bash_history"));
    let m: serde_json::Value =
        serde_json::from_str(&content(root.path(), "/var/lib/guestprep/seal.json")).unwrap();
    assert_eq!(m["operations"], serde_json::json!(["ssh-hostkeys"]));
}

#[test]
fn refusals_change_nothing_and_say_why() {
    let outside = tempfile::tempdir().unwrap();
    let root = stateful_root(outside.path());
    let r = root.path();
    let before = snapshot(r);
    // Not on a terminal and no --yes.
    let o = Command::new(env!("CARGO_BIN_EXE_guestprep"))
        .args(["seal", "--root", r.to_str().unwrap(), "--policy"])
        .arg(policies())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_fails(&o, 2, "refusing without --yes");
    // An unknown operation, with a suggestion.
    let o = seal(r, &["--yes", "--operations", "defaults,-logfile"]);
    assert_fails(&o, 2, "did you mean `logfiles`");
    // user-ssh-keys without anyone named.
    let o = seal(r, &["--yes", "--operations", "+user-ssh-keys"]);
    assert_fails(&o, 2, "[seal] user_ssh_keys");
    // A bad [seal] in the policy: file, line and key.
    let pol = tempfile::tempdir().unwrap();
    std::fs::write(
        pol.path().join("95-seal.toml"),
        "[seal]\noperations = [\"defaults\",\n  \"ssh-hostkey\"]\nmachine_id = \"zero\"\n",
    )
    .unwrap();
    let o = guestprep(&[
        "seal",
        "--yes",
        "--root",
        r.to_str().unwrap(),
        "--policy",
        pol.path().to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 2);
    let e = stderr(&o);
    assert!(e.contains("95-seal.toml:3:3: `seal.operations[1]`"), "{e}");
    assert!(e.contains("did you mean `ssh-hostkeys`"), "{e}");
    assert!(e.contains("`seal.machine_id`"), "{e}");
    // Drift: refused, unless --force (said, and in the manifest).
    std::fs::write(r.join("etc/sysctl.d/90-guestprep.conf"), "x\n").unwrap();
    let drifted = snapshot(r);
    let o = seal(r, &["--yes"]);
    assert_eq!(code(&o), 1);
    let e = stderr(&o);
    assert!(
        e.contains(
            "refusing to seal: 4 item(s) not compliant: file:/etc/sysctl.d/90-guestprep.conf"
        ),
        "{e}"
    );
    assert!(e.contains("or seal anyway with --force"), "{e}");
    assert_same(&drifted, &snapshot(r), "refused seal");
    let mut before = before;
    before.remove("etc/sysctl.d/90-guestprep.conf");
    let mut now = snapshot(r);
    now.remove("etc/sysctl.d/90-guestprep.conf");
    assert_same(&before, &now, "every refusal");
    let o = seal(r, &["--yes", "--force"]);
    assert_fails(&o, 0, "(--force)");
    let m: serde_json::Value =
        serde_json::from_str(&content(r, "/var/lib/guestprep/seal.json")).unwrap();
    assert_eq!(m["forced"], true);
}

#[test]
fn list_names_every_operation_and_the_man_page_documents_them() {
    let o = guestprep(&["seal", "--list"]);
    assert_eq!(code(&o), 0);
    let list = stdout(&o);
    let dir = tempfile::tempdir().unwrap();
    let m = guestprep(&["man", "--out", dir.path().to_str().unwrap()]);
    assert_eq!(code(&m), 0, "{}", stderr(&m));
    let page = std::fs::read_to_string(dir.path().join("guestprep-seal.8")).unwrap();
    assert!(page.contains(".SH \"OPERATIONS\""), "{page}");
    let names = [
        "ssh-hostkeys",
        "machine-id",
        "cloud-init",
        "logfiles",
        "bash-history",
        "tmp-files",
        "package-manager-cache",
        "package-manager-lists",
        "dhcp-client-state",
        "random-seed",
        "crash-data",
        "guestprep-state",
        "net-hostname",
        "user-ssh-keys",
        "build-ssh-keys",
        "kubernetes",
    ];
    for n in names {
        assert!(list.lines().any(|l| l.starts_with(n)), "--list lacks {n}");
        assert!(
            page.contains(&n.replace('-', "\\-")),
            "the man page lacks {n}"
        );
    }
    assert_eq!(list.lines().count(), names.len() + 1, "{list}");
}

/// Several system users share `/bin` as their home: its history is listed once. A home under
/// /home whose user is not in /etc/passwd still has its history removed (as virt-sysprep does).
#[test]
fn bash_history_once_per_path_and_every_home() {
    let root = converged_root();
    let r = root.path();
    put(
        r,
        "/etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n\
         bin:x:2:2::/bin:/usr/sbin/nologin\nsys:x:3:3::/bin:/usr/sbin/nologin\nsync:x:4:65534::/bin:/bin/sync\n",
    );
    put(r, "/bin/.bash_history", "ls\n");
    put(r, "/usr/sbin/.bash_history", "ls\n");
    put(r, "/root/.bash_history", "ls\n");
    put(r, "/home/ghost/.bash_history", "whoami\n");
    put(r, "/home/plainfile", "not a home\n");
    let o = seal(r, &["--dry-run", "--operations", "bash-history"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    let mentions = |p: &str| {
        out.lines()
            .filter(|l| l.contains(&format!(" {p} ")))
            .count()
    };
    assert_eq!(mentions("/bin/.bash_history"), 1, "{out}");
    for p in [
        "/usr/sbin/.bash_history",
        "/root/.bash_history",
        "/home/ghost/.bash_history",
    ] {
        assert_eq!(mentions(p), 1, "{p}: {out}");
    }
    let o = seal(r, &["--yes", "--operations", "bash-history"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(!exists(r, "/home/ghost/.bash_history") && !exists(r, "/bin/.bash_history"));
    assert!(exists(r, "/home/plainfile"));
}

/// Cloud-init's leftovers as a Noble template has them after its first boot.
fn cloud_init_leftovers(r: &std::path::Path) {
    put(
        r,
        "/etc/ssh/sshd_config.d/50-cloud-init.conf",
        "PasswordAuthentication yes\n",
    );
    put(
        r,
        "/etc/NetworkManager/conf.d/99-cloud-init.conf",
        "[main]\ndns=none\n",
    );
    put(
        r,
        "/etc/NetworkManager/conf.d/30-cloud-init-ip6-addr-gen-mode.conf",
        "[connection]\n",
    );
    put(
        r,
        "/etc/NetworkManager/system-connections/cloud-init-eth0.nmconnection",
        "[connection]\n",
    );
    put(
        r,
        "/etc/netplan/50-cloud-init.yaml",
        "network: {version: 2}\n",
    );
    put(
        r,
        "/etc/systemd/network/10-cloud-init-eth0.network",
        "[Match]\n",
    );
    put(
        r,
        "/etc/network/interfaces.d/50-cloud-init.cfg",
        "auto lo\n",
    );
    put(
        r,
        "/etc/fstab",
        "UUID=abc / ext4 defaults 0 1\n/dev/vdb /mnt auto defaults,nofail,x-systemd.requires=cloud-init.service,_netdev,comment=cloudconfig 0 2\n",
    );
    put(r, "/etc/NetworkManager/conf.d/10-site.conf", "[main]\n");
}

#[test]
fn the_cloud_init_operation_removes_what_cloud_init_clean_does() {
    // The real cloud-init (Debian 13's) cleans one copy of the leftovers, guestprep seal the
    // other; then the two trees must hold the same files.
    use common::container::{rootfs_tar, unpack};
    let tar = rootfs_tar("cloudinit");
    let (a, b) = (unpack(&tar), unpack(&tar));
    for r in [a.path(), b.path()] {
        cloud_init_leftovers(r);
    }
    let o = Command::new("chroot")
        .arg(a.path())
        .args([
            "cloud-init",
            "clean",
            "--logs",
            "--seed",
            "--configs",
            "all",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "cloud-init clean: {}", stderr(&o));
    let o = seal(
        b.path(),
        &["--yes", "--force", "--operations", "cloud-init"],
    );
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    for p in [
        "/etc/ssh/sshd_config.d/50-cloud-init.conf",
        "/etc/NetworkManager/conf.d/99-cloud-init.conf",
        "/etc/NetworkManager/conf.d/30-cloud-init-ip6-addr-gen-mode.conf",
        "/etc/NetworkManager/system-connections/cloud-init-eth0.nmconnection",
        "/etc/netplan/50-cloud-init.yaml",
        "/etc/systemd/network/10-cloud-init-eth0.network",
        "/etc/network/interfaces.d/50-cloud-init.cfg",
        "/etc/NetworkManager/conf.d/10-site.conf",
    ] {
        assert_eq!(
            exists(a.path(), p),
            exists(b.path(), p),
            "{p}: cloud-init clean and guestprep seal disagree"
        );
    }
    // cloud-init's mounts module marks its entries `comment=cloudconfig`; newer cloud-init's
    // `clean --configs fstab` takes them out, Debian 13's does not have that choice yet. guestprep
    // does (a clone's cloud-init writes its own): the one difference, said either way.
    assert_eq!(
        content(b.path(), "/etc/fstab"),
        "UUID=abc / ext4 defaults 0 1\n"
    );
    let cloud_init_did = !content(a.path(), "/etc/fstab").contains("comment=cloudconfig");
    println!(
        "fstab's comment=cloudconfig entry: guestprep removes it; this cloud-init's clean {}",
        if cloud_init_did {
            "does too"
        } else {
            "leaves it (no `--configs fstab` in this version)"
        }
    );
    assert!(
        exists(b.path(), "/etc/NetworkManager/conf.d/10-site.conf"),
        "a site's file stays"
    );
    println!(
        "seal cloud-init: the same files as `cloud-init clean --logs --seed --configs all` (fstab's comment=cloudconfig entry out, the site's NetworkManager file kept)"
    );
}

#[test]
fn build_ssh_keys_takes_the_builds_key_out_and_keeps_the_others() {
    let outside = tempfile::tempdir().unwrap();
    let root = stateful_root(outside.path());
    let r = root.path();
    // RFC-009's temporary key, by comment for root and by fingerprint for alice.
    let k = tempfile::tempdir().unwrap();
    let key = k.path().join("id");
    let o = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "packer-build", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(o.status.success(), "ssh-keygen: {}", stderr(&o));
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let fp = String::from_utf8(
        Command::new("ssh-keygen")
            .arg("-lf")
            .arg(key.with_extension("pub"))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let fp = fp.split_whitespace().nth(1).unwrap().to_string();
    assert!(fp.starts_with("SHA256:"), "{fp}");
    let other =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherKeyOtherKeyOtherKeyOtherKeyOtherKey ops@site";
    put(
        r,
        "/root/.ssh/authorized_keys",
        &format!("{other}\n{public}"),
    );
    let renamed = public.replace("packer-build", "ci@runner");
    put(
        r,
        "/home/alice/.ssh/authorized_keys",
        &format!("# alice\n{renamed}ssh-ed25519 AAAA alice\n"),
    );
    let pol = tempfile::tempdir().unwrap();
    std::fs::write(
        pol.path().join("95-seal.toml"),
        format!("[seal]\noperations = [\"build-ssh-keys\"]\nbuild_ssh_keys = [\"packer-build\", \"{fp}\"]\n"),
    )
    .unwrap();
    let dry = guestprep(&[
        "seal",
        "--dry-run",
        "--json",
        "--root",
        r.to_str().unwrap(),
        "--policy",
        policies().to_str().unwrap(),
        "--policy",
        pol.path().to_str().unwrap(),
    ]);
    assert_eq!(code(&dry), 0, "{}{}", stdout(&dry), stderr(&dry));
    assert!(stdout(&dry).contains("remove-lines"), "{}", stdout(&dry));
    let o = guestprep(&[
        "seal",
        "--yes",
        "--force",
        "--root",
        r.to_str().unwrap(),
        "--policy",
        policies().to_str().unwrap(),
        "--policy",
        pol.path().to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        content(r, "/root/.ssh/authorized_keys"),
        format!("{other}\n")
    );
    assert_eq!(
        content(r, "/home/alice/.ssh/authorized_keys"),
        "# alice\nssh-ed25519 AAAA alice\n",
        "by fingerprint, whatever its comment; alice's own key kept"
    );
    let m: serde_json::Value =
        serde_json::from_str(&content(r, "/var/lib/guestprep/seal.json")).unwrap();
    assert!(m["removed"].to_string().contains("packer-build"), "{m:#}");
    println!(
        "seal build-ssh-keys: the build key out of root's (by comment) and alice's (by fingerprint {fp}) authorized_keys, the other keys kept"
    );
}
