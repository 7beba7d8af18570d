//! GRUB's arguments on an offline image are never a silent success: plain `apply --root` cannot
//! run update-grub and leaves exit 3 with the item naming the step that makes them true;
//! `apply --root --chroot` runs the image's own update-grub inside it (with /proc, /sys and /dev
//! mounted for it, and nothing left mounted afterwards, even when update-grub fails). The chroot
//! part runs on the VM test root, a Debian 13 root with grub-pc installed.

use crate::common;
use common::container::{rootfs_tar, unpack};
use common::*;

use std::path::Path;

/// The seed example's arguments (the script's `sed` of GRUB_CMDLINE_LINUX_DEFAULT).
const ARGS: &str = "intel_iommu=on i915.enable_guc=3";

fn seed_example() -> String {
    repo()
        .join("examples/seed-template")
        .to_str()
        .unwrap()
        .to_string()
}

/// Mount points at or under `dir`, as this process's mount namespace sees them.
fn mounts_under(dir: &Path) -> Vec<String> {
    let d = dir.to_str().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| *m == d || m.starts_with(&format!("{d}/")))
        .map(str::to_string)
        .collect()
}

/// The arguments of the first `linux` line of grub.cfg.
fn first_linux(root: &Path) -> String {
    let cfg = std::fs::read_to_string(root.join("boot/grub/grub.cfg")).unwrap();
    cfg.lines()
        .map(str::trim_start)
        .find(|l| l.starts_with("linux"))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn offline_apply_without_chroot_is_pending_and_says_what_makes_it_true() {
    let root = example_root();
    let r = root.path().to_str().unwrap();
    let o = on_root("apply", root.path(), &["--json"]);
    let rep = json(&o);
    assert_eq!(code(&o), 3, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(rep["exitCode"], 3);
    let it = item(&rep, "grub:grub.cfg");
    assert_eq!(it["status"], "pending-reboot", "{it:#}");
    let msg = it["message"].as_str().unwrap();
    assert!(
        msg.starts_with("/boot/grub/grub.cfg lacks intel_iommu=on"),
        "{msg}"
    );
    assert!(msg.contains("without --chroot"), "{msg}");
    let fix = it["remediation"].as_str().unwrap();
    assert!(
        fix.contains(&format!("guestprep apply --root {r} --chroot")),
        "{fix}"
    );
    assert!(fix.contains("at its first boot"), "{fix}");
    // Every other item converged: the arguments are the only thing pending.
    let others: Vec<String> = rep["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| !matches!(i["status"].as_str(), Some("compliant" | "skipped")))
        .map(|i| format!("{} {}", i["id"], i["status"]))
        .collect();
    assert_eq!(others, ["\"grub:grub.cfg\" \"pending-reboot\""]);
    // verify says the same, and so does a second apply: never 0 while grub.cfg lacks them.
    assert_eq!(code(&on_root("verify", root.path(), &[])), 3);
    assert_eq!(code(&on_root("apply", root.path(), &[])), 3);
    // Before apply, the drop-in is not there either: that is drift, not pending.
    let fresh = example_root();
    let rep = json(&on_root("verify", fresh.path(), &["--json"]));
    assert_eq!(item(&rep, "grub:grub.cfg")["status"], "drift");
}

#[test]
fn apply_with_chroot_runs_update_grub_inside_and_leaves_nothing_mounted() {
    let dir = unpack(&rootfs_tar("vm"));
    let r = dir.path();
    // The VM root has GRUB installed but no grub.cfg yet (the VM test's disk gets one from
    // grub-install): make the one an installed system has, without the arguments.
    let setup = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-ec"])
        .arg("mount -t proc proc \"$1/proc\"; mount --rbind /sys \"$1/sys\"; mount --rbind /dev \"$1/dev\"; exec chroot \"$1\" update-grub")
        .arg("sh")
        .arg(r)
        .output()
        .unwrap();
    assert!(setup.status.success(), "{}", stderr(&setup));
    assert!(!first_linux(r).contains("intel_iommu=on"));
    let ex = seed_example();
    let apply = |extra: &[&str]| {
        let mut a = vec![
            "apply",
            "--json",
            "--root",
            r.to_str().unwrap(),
            "--policy",
            &ex,
            "--only",
            "grub",
        ];
        a.extend_from_slice(extra);
        guestprep(&a)
    };

    let o = apply(&["--chroot"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let rep = json(&o);
    assert_eq!(item(&rep, "grub:grub.cfg")["status"], "compliant");
    let ran: Vec<String> = rep["apply"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert!(
        ran.iter().any(|c| c.contains("run /usr/sbin/update-grub")),
        "{ran:#?}"
    );
    let linux = first_linux(r);
    assert!(linux.contains(ARGS), "update-grub in the chroot: {linux}");
    assert_eq!(mounts_under(r), Vec::<String>::new(), "left mounted");
    assert_eq!(
        code(&apply(&["--chroot"])),
        0,
        "a second run changes nothing"
    );

    // update-grub fails (a grub.d file that stops grub-mkconfig): an error, exit 4, and still
    // nothing left mounted.
    std::fs::write(
        r.join("etc/default/grub.d/50-broken.cfg"),
        "echo broken on purpose >&2; exit 7\n",
    )
    .unwrap();
    std::fs::write(
        r.join("etc/default/grub.d/99-guestprep.cfg"),
        "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n",
    )
    .unwrap();
    std::fs::remove_file(r.join("boot/grub/grub.cfg")).unwrap();
    std::fs::write(
        r.join("boot/grub/grub.cfg"),
        "menuentry 'Debian' {\n\tlinux\t/boot/vmlinuz root=/dev/vda ro quiet\n}\n",
    )
    .unwrap();
    let o = apply(&["--chroot"]);
    assert_eq!(code(&o), 4, "{}{}", stdout(&o), stderr(&o));
    let it = item(&json(&o), "grub:grub.cfg").clone();
    assert_eq!(it["status"], "error", "{it:#}");
    assert!(
        it["message"]
            .as_str()
            .unwrap()
            .contains("broken on purpose"),
        "{it:#}"
    );
    assert_eq!(mounts_under(r), Vec::<String>::new(), "left mounted");
    eprintln!("update-grub ran in the chroot of the VM root; its failure was reported: {it:#}");
}
