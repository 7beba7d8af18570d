//! `[units]` against real systemd: a Debian 13 root booted with systemd-nspawn, guestprep run
//! inside it talking to systemd over D-Bus, and the result checked with systemd's own
//! `systemctl is-enabled` / `is-active`. Also: offline apply on a plain copy of the same root gives
//! the same symlinks; the blocking unit file; an unknown unit; no bus; a chroot without systemd.
//! One boot for all the live phases (a boot is the slow part).

use crate::common;
use common::container::{Container, rootfs_tar, unpack};
use common::*;

use std::collections::BTreeMap;
use std::path::Path;

const P1: &str = r#"
[units]
mask = ["dkms.service", "systemd-timesyncd.service"]
enable = ["chrony.service"]
disable = ["cron.service"]
now = true
"#;

const P2: &str = r#"
[units]
enable = ["cron.service"]
now = true
"#;

/// systemd-timesyncd refuses to run in a container (ConditionVirtualization=!container); reset its
/// conditions so there is a really running unit to mask and stop.
fn let_timesyncd_run(root: &Path) {
    let d = root.join("etc/systemd/system/systemd-timesyncd.service.d");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("test.conf"),
        "[Unit]\nConditionVirtualization=\nConditionCapability=\n",
    )
    .unwrap();
}

fn write_policy(root: &Path, name: &str, text: &str) -> String {
    std::fs::write(root.join("root").join(name), text).unwrap();
    format!("/root/{name}")
}

fn symlinks(root: &Path) -> BTreeMap<String, String> {
    let base = root.join("etc/systemd/system");
    let mut out = BTreeMap::new();
    let mut stack = vec![base.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.file_type().is_symlink() {
                out.insert(
                    p.strip_prefix(&base).unwrap().display().to_string(),
                    std::fs::read_link(&p).unwrap().display().to_string(),
                );
            } else if m.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

#[test]
fn units_through_dbus_on_real_systemd() {
    let tar = rootfs_tar("systemd");
    let dir = unpack(&tar);
    let_timesyncd_run(dir.path());
    let c = Container::boot(dir);
    assert_eq!(
        c.systemctl("is-active", "systemd-timesyncd.service"),
        "active",
        "precondition: timesyncd runs"
    );
    assert_eq!(c.systemctl("is-active", "cron.service"), "active");
    assert_eq!(c.systemctl("is-enabled", "chrony.service"), "disabled");
    let p1 = write_policy(c.root(), "p1.toml", P1);

    // Drift first, then converge.
    let o = c.exec(&["guestprep", "verify", "--json", "--policy", &p1]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let o = c.exec(&["guestprep", "apply", "--json", "--policy", &p1]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let rep = json(&o);
    assert_eq!(rep["mode"], "live");
    let changes = rep["apply"]["changes"].as_array().unwrap();
    let details: Vec<&str> = changes
        .iter()
        .flat_map(|c| c["details"].as_array().into_iter().flatten())
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(
        details.contains(&"symlink /etc/systemd/system/systemd-timesyncd.service → /dev/null"),
        "{details:#?}"
    );
    assert!(
        details.contains(&"stop job of systemd-timesyncd.service: done"),
        "{details:#?}"
    );
    assert!(
        details
            .iter()
            .any(|d| d
                .starts_with("unlink /etc/systemd/system/multi-user.target.wants/cron.service")),
        "{details:#?}"
    );

    // systemd's own view.
    assert_eq!(
        c.systemctl("is-enabled", "dkms.service"),
        "masked",
        "masked, not installed"
    );
    assert_eq!(
        c.systemctl("is-enabled", "systemd-timesyncd.service"),
        "masked"
    );
    assert_eq!(
        c.systemctl("is-active", "systemd-timesyncd.service"),
        "inactive"
    );
    assert_eq!(c.systemctl("is-enabled", "chrony.service"), "enabled");
    assert_eq!(c.systemctl("is-enabled", "cron.service"), "disabled");
    assert_eq!(c.systemctl("is-active", "cron.service"), "inactive");

    let o = c.exec(&["guestprep", "verify", "--json", "--policy", &p1]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let rep = json(&o);
    assert_eq!(rep["compliant"], true);
    let chrony = item(&rep, "unit:chrony.service");
    assert!(
        chrony["message"]
            .as_str()
            .unwrap()
            .contains("ConditionCapability=CAP_SYS_TIME"),
        "{chrony}"
    );
    assert_eq!(
        item(&rep, "unit:systemd-timesyncd.service")["actual"]["activeState"],
        "inactive"
    );

    // After a daemon-reload systemd forgets which condition failed (each condition's state is
    // reset) but keeps ConditionResult: the verdict must not change.
    let shown = |c: &Container| {
        let o = c.exec(&[
            "systemctl",
            "show",
            "-p",
            "ConditionResult",
            "chrony.service",
        ]);
        stdout(&o).trim().to_string()
    };
    assert_eq!(shown(&c), "ConditionResult=no");
    let o = c.exec(&["systemctl", "daemon-reload"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        shown(&c),
        "ConditionResult=no",
        "systemd still says skipped"
    );
    let o = c.exec(&["guestprep", "verify", "--json", "--policy", &p1]);
    let rep = json(&o);
    let chrony = item(&rep, "unit:chrony.service");
    assert_eq!(code(&o), 0, "after daemon-reload: {chrony}");
    assert_eq!(chrony["status"], "compliant", "{chrony}");
    assert!(
        chrony["message"]
            .as_str()
            .unwrap()
            .contains("ConditionCapability=CAP_SYS_TIME"),
        "the condition is still named after daemon-reload: {chrony}"
    );
    eprintln!("after daemon-reload: {}", chrony["message"]);

    // Second apply: nothing to do.
    let o = c.exec(&["guestprep", "apply", "--json", "--policy", &p1]);
    assert_eq!(code(&o), 0);
    assert_eq!(json(&o)["apply"]["changes"], serde_json::json!([]));

    // The same policy offline on a plain copy of the same root: the same symlinks.
    let off = unpack(&tar);
    let pol = off.path().join("p1.toml");
    std::fs::write(&pol, P1).unwrap();
    let o = guestprep(&[
        "apply",
        "--root",
        off.path().to_str().unwrap(),
        "--policy",
        pol.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert_eq!(
        symlinks(c.root()),
        symlinks(off.path()),
        "online and offline end states differ"
    );

    // Drift made from outside is seen.
    c.exec(&["systemctl", "unmask", "systemd-timesyncd.service"]);
    let o = c.exec(&["guestprep", "verify", "--json", "--policy", &p1]);
    assert_eq!(code(&o), 1);
    assert_eq!(
        item(&json(&o), "unit:systemd-timesyncd.service")["status"],
        "drift"
    );

    // Start through a job and its JobRemoved signal.
    let p2 = write_policy(c.root(), "p2.toml", P2);
    let o = c.exec(&["guestprep", "apply", "--policy", &p2]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert_eq!(c.systemctl("is-enabled", "cron.service"), "enabled");
    assert_eq!(c.systemctl("is-active", "cron.service"), "active");

    // A real unit file blocks masking: an error with what to do, and the file is kept.
    let blocker = c.root().join("etc/systemd/system/blocker.service");
    std::fs::write(&blocker, "[Service]\nExecStart=/bin/true\n").unwrap();
    let p3 = write_policy(
        c.root(),
        "p3.toml",
        "[units]\nmask = [\"blocker.service\"]\nenable = [\"nope.service\"]\n",
    );
    let o = c.exec(&["guestprep", "apply", "--json", "--policy", &p3]);
    assert_eq!(code(&o), 4);
    let rep = json(&o);
    let b = item(&rep, "unit:blocker.service");
    assert_eq!(b["status"], "error");
    assert!(
        b["message"].as_str().unwrap().contains("blocks masking"),
        "{b}"
    );
    assert!(blocker.is_file(), "the user's unit file was kept");
    let n = item(&rep, "unit:nope.service");
    assert_eq!(n["status"], "error");
    assert!(
        n["message"]
            .as_str()
            .unwrap()
            .contains("nope.service not found"),
        "{n}"
    );

    // No system bus: a clear error naming it, and the hint.
    let o = c.exec_env(
        &[("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/run/no-bus-here")],
        &["guestprep", "verify", "--json", "--policy", &p2],
    );
    assert_eq!(code(&o), 5);
    let msg = item(&json(&o), "unit:cron.service")["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("unix:path=/run/no-bus-here") && msg.contains("--root"),
        "{msg}"
    );
}

/// In a chroot (a live root without systemd running), units cannot be managed live: the error says
/// so and points to --root; nothing falls back to systemctl.
#[test]
fn chroot_without_systemd_is_a_clear_error() {
    let dir = unpack(&rootfs_tar("systemd"));
    std::fs::write(dir.path().join("root/p.toml"), P2).unwrap();
    let o = std::process::Command::new("chroot")
        .arg(dir.path())
        .args([
            "/usr/local/bin/guestprep",
            "verify",
            "--json",
            "--policy",
            "/root/p.toml",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&o), 5, "{}{}", stdout(&o), stderr(&o));
    let msg = item(&json(&o), "unit:cron.service")["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("systemd is not running here") && msg.contains("--root DIR"),
        "{msg}"
    );
}

/// `verify --wait`: right after a start job is queued (as on a freshly booted clone), a unit reads
/// as drift; with `--wait` guestprep waits for systemd's job queue to empty (over D-Bus) and
/// verifies again until compliant, saying what it waits for, and the report says how long.
#[test]
fn verify_waits_for_systemd_to_settle() {
    let dir = unpack(&rootfs_tar("systemd"));
    let units = dir.path().join("etc/systemd/system");
    // A service whose start job waits behind another's (ordering), as on a booting clone.
    for (name, blocker, secs) in [("slow", "blocker", 6), ("slower", "blocker2", 60)] {
        std::fs::write(
            units.join(format!("{blocker}.service")),
            format!("[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sleep {secs}\n"),
        )
        .unwrap();
        std::fs::write(
            units.join(format!("{name}.service")),
            format!(
                "[Unit]\nAfter={blocker}.service\n\n[Service]\nExecStart=/bin/sleep infinity\n\n[Install]\nWantedBy=multi-user.target\n"
            ),
        )
        .unwrap();
    }
    let c = Container::boot(dir);
    let pol = write_policy(
        c.root(),
        "wait.toml",
        "[units]\nenable = [\"slow.service\"]\nnow = true\n",
    );
    assert!(
        c.exec(&["systemctl", "enable", "slow.service"])
            .status
            .success()
    );
    assert!(
        c.exec(&[
            "systemctl",
            "start",
            "--no-block",
            "blocker.service",
            "slow.service"
        ])
        .status
        .success()
    );
    let o = c.exec(&["guestprep", "verify", "--json", "--policy", &pol]);
    let now = c.systemctl("is-active", "slow.service");
    eprintln!(
        "without --wait: {} (systemctl is-active: {now})",
        item(&json(&o), "unit:slow.service")["status"]
    );
    assert_eq!(now, "inactive");
    assert_eq!(code(&o), 1, "a queued start reads as drift: {}", stdout(&o));

    let t = std::time::Instant::now();
    let o = c.exec(&[
        "guestprep",
        "verify",
        "--wait=60s",
        "--json",
        "--policy",
        &pol,
    ]);
    eprintln!("verify --wait took {:?}: {}", t.elapsed(), stderr(&o));
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let rep = json(&o);
    assert_eq!(item(&rep, "unit:slow.service")["status"], "compliant");
    assert_eq!(c.systemctl("is-active", "slow.service"), "active");
    let w = &rep["waited"];
    assert_eq!(w["settled"], true, "{w}");
    assert!(w["seconds"].as_f64().unwrap() >= 2.0, "{w}");
    assert!(
        stderr(&o).contains("waiting for systemd to settle: state ")
            && stderr(&o).contains("slow.service (start)"),
        "{}",
        stderr(&o)
    );

    // What a CI job sees (the README shows this output): a drifted verify with a waiver, a
    // filter and --wait, in human form.
    for cmd in [
        &["systemctl", "stop", "slow.service"][..],
        &["systemctl", "restart", "--no-block", "blocker.service"],
        &["systemctl", "start", "--no-block", "slow.service"],
    ] {
        assert!(c.exec(cmd).status.success(), "{cmd:?}");
    }
    let ci = write_policy(
        c.root(),
        "ci.toml",
        "[units]\nenable = [\"slow.service\"]\nnow = true\n\n[sysctl]\n\"net.ipv4.ip_forward\" = 1\n\"vm.swappiness\" = 10\n\n\
         [[waivers]]\nitems = [\"sysctl:net.ipv4.ip_forward\"]\nreason = \"routing is the CNI's job here\"\nexpires = 2099-12-31\n",
    );
    let o = c.exec(&[
        "guestprep",
        "verify",
        "--wait=15s",
        "--only",
        "sysctl",
        "--only",
        "unit:slow*",
        "--policy",
        &ci,
    ]);
    eprintln!("README sample:\n{}{}", stderr(&o), stdout(&o));
    assert_eq!(code(&o), 1, "vm.swappiness drifts: {}", stdout(&o));
    assert!(
        stdout(&o).contains("waived ")
            && stdout(&o).contains("--only sysctl --only unit:slow*, waited ")
    );

    // A span that ends first: verify stops waiting, reports what it found and says so.
    assert!(
        c.exec(&[
            "systemctl",
            "start",
            "--no-block",
            "blocker2.service",
            "slower.service"
        ])
        .status
        .success()
    );
    let pol2 = write_policy(
        c.root(),
        "wait2.toml",
        "[units]\nenable = [\"slower.service\"]\nnow = true\n",
    );
    assert!(
        c.exec(&["systemctl", "enable", "slower.service"])
            .status
            .success()
    );
    let t = std::time::Instant::now();
    let o = c.exec(&[
        "guestprep",
        "verify",
        "--wait=3s",
        "--json",
        "--policy",
        &pol2,
    ]);
    let took = t.elapsed();
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    let w = &json(&o)["waited"];
    assert_eq!(w["settled"], false, "{w}");
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");
    assert_eq!(c.systemctl("is-active", "slower.service"), "inactive");
}

/// `[time] timezone`: live through systemd-timedated's D-Bus API (checked with `timedatectl` and
/// the link), offline by writing the link as timedated does (checked with readlink).
#[test]
fn timezone_live_through_timedated_and_offline() {
    let tar = rootfs_tar("systemd");
    let c = Container::boot(unpack(&tar));
    let pol = write_policy(
        c.root(),
        "tz.toml",
        "[time]\ntimezone = \"Europe/Berlin\"\n",
    );
    let o = c.exec(&["guestprep", "verify", "--json", "--policy", &pol]);
    assert_eq!(code(&o), 1);
    assert_eq!(
        item(&json(&o), "time:timezone")["message"],
        "/etc/localtime is Etc/UTC"
    );
    let o = c.exec(&["guestprep", "apply", "--json", "--policy", &pol]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let tz = stdout(&c.exec(&["timedatectl", "show", "-p", "Timezone", "--value"]));
    assert_eq!(tz.trim(), "Europe/Berlin", "timedated says");
    let date = stdout(&c.exec(&["date", "+%Z"]));
    assert!(matches!(date.trim(), "CET" | "CEST"), "{date}");
    let o = c.exec(&["guestprep", "apply", "--json", "--policy", &pol]);
    assert_eq!(json(&o)["apply"]["changes"].as_array().unwrap().len(), 0);
    drop(c);

    // Offline: the link timedated would write, and an unknown zone is an error, nothing changed.
    let dir = unpack(&tar);
    let r = dir.path().to_str().unwrap();
    let p = dir.path().join("root/tz.toml");
    std::fs::write(
        &p,
        "[time]\ntimezone = \"America/Argentina/Buenos_Aires\"\n",
    )
    .unwrap();
    let o = guestprep(&["apply", "--root", r, "--policy", p.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        std::fs::read_link(dir.path().join("etc/localtime")).unwrap(),
        Path::new("../usr/share/zoneinfo/America/Argentina/Buenos_Aires")
    );
    std::fs::write(&p, "[time]\ntimezone = \"Mars/Olympus\"\n").unwrap();
    let o = guestprep(&[
        "verify",
        "--json",
        "--root",
        r,
        "--policy",
        p.to_str().unwrap(),
    ]);
    assert_eq!(item(&json(&o), "time:timezone")["status"], "error");
}

/// `[locale]`: generated with the real locale-gen (checked with `locale -a`), LANG set live
/// through systemd-localed's D-Bus API (checked with `localectl` and /etc/default/locale).
#[test]
fn locales_generated_and_lang_through_localed() {
    let c = Container::boot(unpack(&rootfs_tar("systemd")));
    let pol = write_policy(
        c.root(),
        "locale.toml",
        "[locale]\ngenerate = [\"en_US.UTF-8\", \"de_DE.UTF-8\"]\nlang = \"de_DE.UTF-8\"\n",
    );
    let locales = |c: &Container| stdout(&c.exec(&["locale", "-a"]));
    assert!(!locales(&c).contains("de_DE.utf8"));
    let o = c.exec(&["guestprep", "verify", "--json", "--policy", &pol]);
    assert_eq!(code(&o), 1);
    let g = item(&json(&o), "locale:generate").clone();
    assert!(
        g["message"]
            .as_str()
            .unwrap()
            .contains("not generated: en_US.UTF-8, de_DE.UTF-8"),
        "{g}"
    );
    let o = c.exec(&["guestprep", "apply", "--json", "--policy", &pol]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let all = locales(&c);
    assert!(
        all.contains("en_US.utf8") && all.contains("de_DE.utf8"),
        "locale -a: {all}"
    );
    let status = stdout(&c.exec(&["localectl", "status"]));
    assert!(status.contains("LANG=de_DE.UTF-8"), "localectl: {status}");
    // Debian 13: /etc/default/locale links to /etc/locale.conf, read through the link here.
    let file = std::fs::read_to_string(c.root().join("etc/default/locale")).unwrap();
    assert!(file.contains("LANG=de_DE.UTF-8"), "{file}");
    let rep = json(&o);
    assert_eq!(item(&rep, "locale:generate")["status"], "compliant");
    assert_eq!(item(&rep, "locale:lang")["status"], "compliant");
    let o = c.exec(&["guestprep", "apply", "--json", "--policy", &pol]);
    assert_eq!(
        json(&o)["apply"]["changes"].as_array().unwrap().len(),
        0,
        "{}",
        stdout(&o)
    );
}
