//! `apply` and `verify` through the real binary on scratch copies of the example Debian 13 root:
//! convergence, idempotence (same inode and mtime on the second run), `--check`, `--diff`,
//! `--json`, exit codes, override detection, removal of a dropped section, symlink traps,
//! crash safety (SIGKILL at every write step) and the apply lock.

use crate::common;
use common::*;

use std::os::unix::fs::symlink;
use std::path::Path;

fn apply(root: &Path, extra: &[&str]) -> std::process::Output {
    on_root("apply", root, extra)
}

fn verify_json(root: &Path) -> (i32, serde_json::Value) {
    let o = guestprep(&[
        "verify",
        "--json",
        "--root",
        root.to_str().unwrap(),
        "--policy",
        policies().to_str().unwrap(),
    ]);
    (code(&o), json(&o))
}

/// The exit code of a converged example root: everything as the policy says but GRUB's
/// arguments, pending until update-grub runs in the image (`apply --chroot`, or the first boot's
/// apply; tests/it/grub.rs).
const CONVERGED: i32 = 3;

const MANAGED: &[&str] = &[
    "etc/chrony/conf.d/50-guestprep.conf",
    "etc/sysctl.d/90-guestprep.conf",
    "etc/modules-load.d/guestprep.conf",
    "etc/modprobe.d/guestprep.conf",
    "etc/default/grub.d/99-guestprep.cfg",
    "etc/ssh/sshd_config.d/05-guestprep.conf",
    "etc/containerd/config.toml",
    "etc/fstab",
];

#[test]
fn apply_converges_and_second_run_changes_nothing() {
    let root = example_root();
    let r = root.path();
    let (code0, before) = verify_json(r);
    assert_eq!(code0, 1, "fresh root drifts");
    assert!(before["summary"]["drift"].as_u64().unwrap() >= 8);

    let o = apply(r, &[]);
    assert_eq!(code(&o), CONVERGED, "{}{}", stdout(&o), stderr(&o));
    for f in MANAGED {
        assert!(r.join(f).is_file(), "{f} written");
    }
    let sysctl = std::fs::read_to_string(r.join("etc/sysctl.d/90-guestprep.conf")).unwrap();
    assert!(sysctl.contains("net.ipv4.ip_forward = 1\n"));
    let fstab = std::fs::read_to_string(r.join("etc/fstab")).unwrap();
    assert!(fstab.contains("#guestprep-swap-off# /swapfile none swap sw 0 0"));
    assert!(
        fstab.contains("PARTUUID=5e1f3b2a-01 / ext4"),
        "other lines kept"
    );
    let grub = std::fs::read_to_string(r.join("etc/default/grub.d/99-guestprep.cfg")).unwrap();
    assert!(grub.contains("intel_iommu=on i915.enable_guc=3 i915.max_vfs=7\""));

    let snap = persistent(snapshot(r));
    let o = apply(r, &[]);
    assert_eq!(code(&o), CONVERGED);
    assert!(stdout(&o).contains("nothing to change"), "{}", stdout(&o));
    assert_same(
        &snap,
        &persistent(snapshot(r)),
        "second apply rewrote something (inode, mtime or content)",
    );

    let (c, rep) = verify_json(r);
    assert_eq!(c, CONVERGED);
    assert_eq!(rep["compliant"], true);
    assert_eq!(rep["summary"]["drift"], 0);
    // Live-only checks on an offline root are skipped, with the reason.
    let cmdline = item(&rep, "grub:cmdline");
    assert_eq!(cmdline["status"], "skipped");
    assert!(
        cmdline["message"]
            .as_str()
            .unwrap()
            .contains("offline root")
    );
    // GRUB's arguments are configured but not in grub.cfg: never a success offline.
    assert_eq!(item(&rep, "grub:grub.cfg")["status"], "pending-reboot");
    assert!(
        item(&rep, "grub:grub.cfg")["message"]
            .as_str()
            .unwrap()
            .contains("update-grub does not run on an offline root")
    );
}

#[test]
fn check_changes_nothing_and_exits_1() {
    let root = example_root();
    let before = snapshot(root.path());
    let o = apply(root.path(), &["--check", "--diff"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert_same(&before, &snapshot(root.path()), "--check changed the root");
    let out = stdout(&o);
    assert!(
        out.contains("+++ b/etc/sysctl.d/90-guestprep.conf"),
        "{out}"
    );
    assert!(out.contains("-/swapfile none swap sw 0 0"));
    assert!(out.contains("+#guestprep-swap-off# /swapfile none swap sw 0 0"));
    assert!(out.contains("would change"));
    assert!(
        !root.path().join("run").exists(),
        "--check takes no lock, creates nothing"
    );
}

#[test]
fn json_report_has_the_contract_fields() {
    let root = example_root();
    let o = apply(root.path(), &["--json"]);
    assert_eq!(code(&o), CONVERGED, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["apiVersion"], "guestprep.io/v1");
    assert_eq!(v["kind"], "ComplianceReport");
    assert_eq!(v["mode"], "offline");
    assert_eq!(v["exitCode"], CONVERGED);
    assert!(v["policyDigest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(v["host"]["os"], "Debian GNU/Linux 13 (trixie)");
    assert_eq!(v["host"]["hostname"], "k8s-template");
    assert_eq!(v["host"]["kernel"], "6.12.57+deb13-amd64");
    assert!(v["host"]["uptimeSeconds"].is_null());
    assert!(v["generatedAt"].as_str().unwrap().ends_with('Z'));
    let s = &v["summary"];
    let sum: u64 = ["compliant", "drift", "pendingReboot", "error", "skipped"]
        .iter()
        .map(|k| s[k].as_u64().unwrap())
        .sum();
    assert_eq!(sum, s["total"].as_u64().unwrap());
    let changes = v["apply"]["changes"].as_array().unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c["action"] == "create /etc/sysctl.d/90-guestprep.conf" && c["done"] == true)
    );
    for i in v["items"].as_array().unwrap() {
        for k in ["id", "kind", "status", "expected", "actual", "message"] {
            assert!(i.get(k).is_some(), "item lacks {k}: {i}");
        }
    }
    let sysctl = item(&v, "sysctl:net.ipv4.ip_forward");
    assert_eq!(sysctl["expected"], "1");
    assert_eq!(sysctl["actual"]["configured"], "1");
    assert_eq!(
        sysctl["actual"]["configuredIn"],
        "/etc/sysctl.d/90-guestprep.conf:5"
    );
}

#[test]
fn committed_schema_matches_the_types() {
    let o = guestprep(&["schema"]);
    let committed = std::fs::read_to_string(repo().join("docs/report.schema.json")).unwrap();
    assert!(
        stdout(&o) == committed,
        "docs/report.schema.json is stale: run `cargo run -- schema > docs/report.schema.json`"
    );
}

#[test]
fn overrides_by_other_files_are_reported() {
    let root = example_root();
    let r = root.path();
    assert_eq!(code(&apply(r, &[])), CONVERGED);
    std::fs::write(
        r.join("etc/sysctl.d/99-local.conf"),
        "net.ipv4.ip_forward = 0\n",
    )
    .unwrap();
    std::fs::write(
        r.join("etc/ssh/sshd_config.d/01-old.conf"),
        "Ciphers aes128-cbc\n",
    )
    .unwrap();
    std::fs::write(
        r.join("etc/modprobe.d/zz-local.conf"),
        "# local\nblacklist i2c\n",
    )
    .unwrap();
    let (c, rep) = verify_json(r);
    assert_eq!(c, 1);
    let s = item(&rep, "sysctl:net.ipv4.ip_forward");
    assert_eq!(s["status"], "drift");
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("configured 0 at /etc/sysctl.d/99-local.conf:1"),
        "{s}"
    );
    let ssh = item(&rep, "ssh:effective");
    assert_eq!(ssh["status"], "drift");
    assert!(
        ssh["message"]
            .as_str()
            .unwrap()
            .contains("Ciphers is aes128-cbc from /etc/ssh/sshd_config.d/01-old.conf:1"),
        "{ssh}"
    );
    assert_eq!(
        item(&rep, "module-blacklist:xe")["status"],
        "compliant",
        "an unrelated file is not drift"
    );
    // apply cannot fix another file's override: it says so and exits 4, and rewrites nothing of ours.
    let o = apply(r, &[]);
    assert_eq!(code(&o), 4, "{}", stdout(&o));
}

#[test]
fn local_edits_are_repaired_and_modes_kept() {
    let root = example_root();
    let r = root.path();
    assert_eq!(code(&apply(r, &[])), CONVERGED);
    let f = r.join("etc/chrony/conf.d/50-guestprep.conf");
    std::fs::write(&f, "server evil.example\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = apply(r, &["--diff"]);
    assert_eq!(code(&o), CONVERGED);
    assert!(stdout(&o).contains("-server evil.example"));
    let text = std::fs::read_to_string(&f).unwrap();
    assert!(text.contains("server time.cloudflare.com iburst"));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(&f).unwrap().mode() & 0o777,
        0o600,
        "mode kept when the policy sets none"
    );
}

#[test]
fn dropping_a_section_removes_its_file() {
    let root = example_root();
    let r = root.path();
    assert_eq!(code(&apply(r, &[])), CONVERGED);
    let pol = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(policies()).unwrap() {
        let f = f.unwrap().path();
        if !f.ends_with("50-ssh.toml") && f.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&f, pol.path().join(f.file_name().unwrap())).unwrap();
        }
    }
    let o = guestprep(&[
        "apply",
        "--root",
        r.to_str().unwrap(),
        "--policy",
        pol.path().to_str().unwrap(),
    ]);
    assert_eq!(code(&o), CONVERGED, "{}", stdout(&o));
    assert!(stdout(&o).contains("remove /etc/ssh/sshd_config.d/05-guestprep.conf"));
    assert!(!r.join("etc/ssh/sshd_config.d/05-guestprep.conf").exists());
    assert!(
        r.join("etc/ssh/sshd_config.d/50-cloud-init.conf").exists(),
        "others' files untouched"
    );
}

#[test]
fn symlinks_in_the_image_never_escape_the_root() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(r.join("etc")).unwrap();
    // An image whose /etc/sysctl.d points at an absolute path: resolved inside the root.
    symlink("/var/sysctl-real", r.join("etc/sysctl.d")).unwrap();
    // And one that tries to climb out with `..`.
    symlink(
        format!("../../../../../../../..{}", outside.path().display()),
        r.join("etc/containerd"),
    )
    .unwrap();
    let pol = r.join("p.toml");
    std::fs::write(&pol, "[sysctl]\n\"net.ipv4.ip_forward\" = 1\n[[files]]\npath = \"/etc/containerd/config.toml\"\ncontent = \"x\\n\"\n").unwrap();
    let o = guestprep(&[
        "apply",
        "--root",
        r.to_str().unwrap(),
        "--policy",
        pol.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(r.join("var/sysctl-real/90-guestprep.conf").is_file());
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        0,
        "wrote outside the root"
    );
    assert!(
        r.join(outside.path().strip_prefix("/").unwrap())
            .join("config.toml")
            .is_file()
    );
}

/// Every symlink under etc/systemd/system: path → target.
fn links(root: &Path) -> std::collections::BTreeMap<String, String> {
    let dir = root.join("etc/systemd/system");
    if !dir.exists() {
        return Default::default();
    }
    snapshot(&dir)
        .into_iter()
        .filter(|(_, (_, mode, _, _))| mode & 0o170000 == 0o120000)
        .map(|(k, (t, ..))| (k, String::from_utf8(t).unwrap()))
        .collect()
}

/// Kill `apply` with SIGKILL at every step of every write (GUESTPREP_FAILPOINT=N): each managed
/// file is always entirely old or entirely new, and the next run removes the temp files and
/// converges.
#[test]
fn killed_at_any_point_leaves_old_or_new_and_next_run_converges() {
    let reference = example_root();
    assert_eq!(code(&apply(reference.path(), &[])), CONVERGED);
    let pristine = example_root();
    let mut killed = 0;
    for n in 1.. {
        let root = example_root();
        let r = root.path();
        let o = std::process::Command::new(BIN)
            .args([
                "apply",
                "--root",
                r.to_str().unwrap(),
                "--policy",
                policies().to_str().unwrap(),
            ])
            .env("GUESTPREP_FAILPOINT", n.to_string())
            .output()
            .unwrap();
        let was_killed = o.status.code().is_none();
        for f in MANAGED {
            let now = std::fs::read(r.join(f)).ok();
            let old = std::fs::read(pristine.path().join(f)).ok();
            let new = std::fs::read(reference.path().join(f)).ok();
            assert!(
                now == old || now == new,
                "step {n}: {f} is neither old nor new: {:?}",
                now.map(|b| String::from_utf8_lossy(&b).into_owned())
            );
        }
        for (link, target) in links(r) {
            let old = links(pristine.path()).get(&link).cloned();
            let new = links(reference.path()).get(&link).cloned();
            assert!(
                Some(&target) == old.as_ref()
                    || Some(&target) == new.as_ref()
                    || link.contains(".guestprep-tmp."),
                "step {n}: {link} -> {target}"
            );
        }
        if !was_killed {
            assert!(n > 10, "the failpoint never fired");
            break;
        }
        killed += 1;
        let o = apply(r, &[]);
        assert_eq!(
            code(&o),
            CONVERGED,
            "step {n}: recovery run failed: {}",
            stderr(&o)
        );
        assert_eq!(
            links(r),
            links(reference.path()),
            "step {n}: unit symlinks differ after recovery"
        );
        let leftovers: Vec<String> = snapshot(r)
            .into_keys()
            .filter(|k| k.contains(".guestprep-tmp."))
            .collect();
        assert!(
            leftovers.is_empty(),
            "step {n}: temp files left: {leftovers:?}"
        );
        let (c, _) = verify_json(r);
        assert_eq!(c, CONVERGED, "step {n}: not converged after recovery");
    }
    assert!(killed >= 8 * 5, "only {killed} kill points");
}

#[test]
fn a_second_apply_waits_for_the_lock_or_fails_clearly() {
    use nix::fcntl::{Flock, FlockArg};
    let root = example_root();
    let r = root.path();
    // Offline, the lock is on the image's root directory: nothing is written into the image.
    let f = std::fs::File::open(r).unwrap();
    let lock = Flock::lock(f, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap();
    let before = snapshot(r);
    let o = apply(r, &["--lock-timeout", "1"]);
    assert_eq!(code(&o), 4);
    assert!(
        stderr(&o).contains("waiting for another guestprep apply"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("not waiting longer"), "{}", stderr(&o));
    assert_same(&before, &snapshot(r), "changed while locked out");

    // Released while the second one waits: it goes on.
    let child = std::process::Command::new(BIN)
        .args([
            "apply",
            "--root",
            r.to_str().unwrap(),
            "--policy",
            policies().to_str().unwrap(),
            "--lock-timeout",
            "30",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    drop(lock);
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), CONVERGED, "{}", stderr(&o));
    assert!(stderr(&o).contains("waiting for another guestprep apply"));
    assert!(
        !r.join("run/guestprep").exists(),
        "an offline apply left run/guestprep in the image"
    );
}

#[test]
fn an_item_that_cannot_be_checked_is_an_error_and_exit_5() {
    let root = example_root();
    let r = root.path();
    assert_eq!(code(&apply(r, &[])), CONVERGED);
    // A directory where a managed file should be: cannot be checked, must not be "fixed".
    std::fs::remove_file(r.join("etc/containerd/config.toml")).unwrap();
    std::fs::create_dir(r.join("etc/containerd/config.toml")).unwrap();
    let (c, rep) = verify_json(r);
    assert_eq!(c, 5);
    assert_eq!(rep["exitCode"], 5);
    let it = item(&rep, "file:/etc/containerd/config.toml");
    assert_eq!(it["status"], "error");
    assert!(
        it["message"]
            .as_str()
            .unwrap()
            .contains("not a regular file"),
        "{it}"
    );
    assert_eq!(rep["compliant"], false);
    let o = apply(r, &[]);
    assert_eq!(code(&o), 4, "apply cannot converge an unreadable item");
    assert!(r.join("etc/containerd/config.toml").is_dir(), "left alone");
}

#[test]
fn human_output_is_one_line_per_item_and_a_summary() {
    let root = example_root();
    let r = root.path();
    let o = guestprep(&[
        "verify",
        "--root",
        r.to_str().unwrap(),
        "--policy",
        policies().to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 1);
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    let (_, rep) = verify_json(r);
    let n = rep["summary"]["total"].as_u64().unwrap() as usize;
    assert_eq!(lines.len(), n + 1, "{out}");
    assert!(
        lines[n].starts_with("NOT compliant: 39 items:"),
        "{}",
        lines[n]
    );
    assert!(lines.iter().any(|l| l.starts_with("drift ")
        && l.contains("file:/etc/sysctl.d/90-guestprep.conf")
        && l.contains("missing")));
    assert!(!out.contains('\x1b'), "no colour when not a terminal");
}

/// chrony.conf without the conf.d line is drift with the fix (not "could not be checked");
/// chrony or sshd not installed: skipped, not compliant.
#[test]
fn missing_confdir_is_drift_and_absent_daemons_are_skipped() {
    let root = example_root();
    let r = root.path();
    let conf = r.join("etc/chrony/chrony.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    let without: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("confdir"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(text, without, "precondition: the example reads conf.d");
    std::fs::write(&conf, without).unwrap();
    let (c, rep) = verify_json(r);
    assert_eq!(c, 1);
    let i = item(&rep, "chrony:confdir");
    assert_eq!(i["status"], "drift", "{i}");
    assert!(
        i["message"]
            .as_str()
            .unwrap()
            .contains("add the line `confdir /etc/chrony/conf.d`"),
        "{i}"
    );

    std::fs::remove_file(&conf).unwrap();
    std::fs::remove_file(r.join("etc/ssh/sshd_config")).unwrap();
    let (_, rep) = verify_json(r);
    for id in ["chrony:confdir", "ssh:effective"] {
        let i = item(&rep, id);
        assert_eq!(i["status"], "skipped", "{i}");
        assert!(
            i["message"].as_str().unwrap().contains("not installed"),
            "{i}"
        );
    }
}

/// A module built into the running kernel (in /sys/module, not in /proc/modules) is loaded:
/// found independently on this machine, checked live and read-only.
#[test]
fn a_built_in_module_is_loaded() {
    let proc_modules = std::fs::read_to_string("/proc/modules").unwrap_or_default();
    let listed: std::collections::BTreeSet<&str> = proc_modules
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let builtin = std::fs::read_dir("/sys/module")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| {
            !listed.contains(n.as_str())
                && !Path::new("/sys/module").join(n).join("initstate").exists()
                && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .expect("this kernel has built-in modules in /sys/module");
    let dir = tempfile::tempdir().unwrap();
    let pol = dir.path().join("p.toml");
    std::fs::write(&pol, format!("[modules]\nload = [\"{builtin}\"]\n")).unwrap();
    let o = guestprep(&["verify", "--json", "--policy", pol.to_str().unwrap()]);
    let rep = json(&o);
    let i = item(&rep, &format!("module:{builtin}"));
    eprintln!("built-in module {builtin}: {i}");
    assert_eq!(i["actual"]["loaded"], true, "{i}");
}

/// `verify | head -1`: the reader going away is not an item error; the exit code is the verdict.
#[test]
fn a_closed_stdout_keeps_the_verdict() {
    use std::os::fd::OwnedFd;
    let root = example_root();
    for verb in [&["verify"][..], &["apply", "--check"][..]] {
        let (read, write): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
        drop(read); // nobody reads: every write is EPIPE
        let o = std::process::Command::new(BIN)
            .args(verb)
            .args([
                "--root",
                root.path().to_str().unwrap(),
                "--policy",
                policies().to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::from(write))
            .output()
            .unwrap();
        // verify: drift (1); apply --check: would change (1).
        assert_eq!(code(&o), 1, "{verb:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("Broken pipe"), "{}", stderr(&o));
    }
}

/// Logs go to files, CI logs and cloud-init's output log: no escape codes off a terminal.
#[test]
fn logs_are_plain_off_a_terminal() {
    let root = example_root();
    let o = std::process::Command::new(BIN)
        .args([
            "-v",
            "apply",
            "--root",
            root.path().to_str().unwrap(),
            "--policy",
        ])
        .arg(policies())
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(err.contains("converging"), "{err}");
    assert!(!err.contains('\x1b'), "escape codes in the log: {err:?}");
}

/// The actions of an apply report's changes, in order.
fn actions(report: &serde_json::Value) -> Vec<String> {
    report["apply"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c["item"].as_str().unwrap(),
                c["action"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn check_lists_every_write_apply_makes_the_time_zone_included() {
    // An image whose /etc/localtime is a copied zone file and that still has /etc/timezone.
    let root = example_root();
    let r = root.path();
    std::fs::create_dir_all(r.join("usr/share/zoneinfo/Europe")).unwrap();
    std::fs::write(r.join("usr/share/zoneinfo/Europe/Berlin"), b"TZif2 Berlin").unwrap();
    std::fs::write(r.join("usr/share/zoneinfo/UTC"), b"TZif2 UTC").unwrap();
    std::fs::write(r.join("etc/localtime"), b"TZif2 UTC").unwrap();
    std::fs::write(r.join("etc/timezone"), "Etc/UTC\n").unwrap();
    let pol = tempfile::tempdir().unwrap();
    let p = pol.path().join("time.toml");
    std::fs::write(
        &p,
        "[time]\ntimezone = \"Europe/Berlin\"\n\n[sysctl]\n\"vm.swappiness\" = 10\n",
    )
    .unwrap();
    let (rs, ps) = (r.to_str().unwrap(), p.to_str().unwrap());
    let before = snapshot(r);
    let o = guestprep(&[
        "apply", "--root", rs, "--policy", ps, "--check", "--diff", "--json",
    ]);
    assert_same(&before, &snapshot(r), "apply --check changed the root");
    let planned: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let planned = actions(&planned);
    for want in [
        "time:timezone remove /etc/localtime",
        "time:timezone link /etc/localtime -> ../usr/share/zoneinfo/Europe/Berlin",
        "time:timezone update /etc/timezone",
    ] {
        assert!(
            planned.iter().any(|a| a == want),
            "{want} not in {planned:#?}"
        );
    }
    let o = guestprep(&["apply", "--root", rs, "--policy", ps, "--json"]);
    let done: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        actions(&done),
        planned,
        "apply did other writes than --check listed"
    );
    assert_eq!(
        std::fs::read_link(r.join("etc/localtime")).unwrap(),
        std::path::Path::new("../usr/share/zoneinfo/Europe/Berlin")
    );
    assert_eq!(
        std::fs::read_to_string(r.join("etc/timezone")).unwrap(),
        "Europe/Berlin\n"
    );
    // Every file that changed under the root is one of the listed writes.
    let after = snapshot(r);
    let changed: Vec<&String> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, _)| k)
        .chain(before.keys().filter(|k| !after.contains_key(*k)))
        .collect();
    for path in changed {
        let shown = format!("/{}", path.trim_start_matches('/'));
        assert!(
            planned.iter().any(|a| a.contains(&shown)),
            "{shown} changed but --check did not list it: {planned:#?}"
        );
    }
}
