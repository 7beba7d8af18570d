//! The daemon as a real systemd service: the shipped units/guestprep.service (Type=notify, fully
//! sandboxed) in a Debian 13 root booted with systemd-nspawn, after guestprep-apply.service
//! converged the root, then with the enforce drop-in. Readiness and the status line as
//! systemd shows them; a unit masked and stopped from outside, seen through systemd's D-Bus
//! signals; reload and stop through systemctl; and a real qemu-ga inside the container, so
//! `guestprep qga` on this host reads the daemon's report and runs verify through the agent.
//! One boot for all of it.

use crate::common;
use common::container::{Container, rootfs_tar, unpack};
use common::*;

use std::time::{Duration, Instant};

const POLICY: &str = r#"
[units]
mask = ["dkms.service"]
enable = ["cron.service"]
now = true

[chrony]
servers = ["ntp.example.internal"]
"#;

fn report(c: &Container) -> Option<serde_json::Value> {
    let o = c.exec(&["cat", "/run/guestprep/report.json"]);
    if !o.status.success() {
        return None;
    }
    Some(serde_json::from_slice(&o.stdout).expect("whole JSON"))
}

#[track_caller]
fn wait_report(c: &Container, pred: impl Fn(&serde_json::Value) -> bool, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        if report(c).is_some_and(|r| pred(&r)) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "report never showed {what}: {:?}\n{}",
            report(c),
            stdout(&c.exec(&["journalctl", "-u", "guestprep", "--no-pager"]))
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn unit_status(r: &serde_json::Value, unit: &str) -> String {
    item(r, &format!("unit:{unit}"))["status"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn daemon_as_a_sandboxed_notify_service_with_dbus_signals_and_qemu_ga() {
    let dir = unpack(&rootfs_tar("systemd"));
    let root = dir.path().to_path_buf();
    std::fs::copy(BIN, root.join("usr/bin/guestprep")).unwrap();
    for unit in [
        "guestprep.service",
        "guestprep-apply.service",
        "guestprep-ssh-keygen.service",
    ] {
        std::fs::copy(
            repo().join("units").join(unit),
            root.join("etc/systemd/system").join(unit),
        )
        .unwrap();
    }
    std::fs::create_dir_all(root.join("etc/guestprep/policy.d")).unwrap();
    std::fs::write(root.join("etc/guestprep/policy.d/50-test.toml"), POLICY).unwrap();
    let c = Container::boot(dir);

    // systemd's own check of the shipped units (ssh-keygen's ExecStart is not in this root: it is
    // only run when /usr/bin/ssh-keygen exists).
    let o = c.exec(&[
        "systemd-analyze",
        "verify",
        "--man=no",
        "guestprep.service",
        "guestprep-apply.service",
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let o = c.exec(&["systemctl", "start", "guestprep-ssh-keygen.service"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cond = stdout(&c.exec(&[
        "systemctl",
        "show",
        "-P",
        "ConditionResult",
        "guestprep-ssh-keygen.service",
    ]));
    assert_eq!(cond.trim(), "no", "no ssh-keygen here: the unit is skipped");

    // The apply unit converges the root (oneshot, RemainAfterExit).
    let o = c.exec(&["systemctl", "start", "guestprep-apply.service"]);
    assert!(
        o.status.success(),
        "{}\n{}",
        stderr(&o),
        stdout(&c.exec(&["journalctl", "-u", "guestprep-apply", "--no-pager"]))
    );
    assert_eq!(
        c.systemctl("is-active", "guestprep-apply.service"),
        "active"
    );
    let o = c.exec(&["guestprep", "verify"]);
    assert_eq!(code(&o), 0, "after guestprep-apply.service: {}", stdout(&o));

    // Type=notify: `systemctl start` returns once the daemon said READY=1, report written.
    let t = Instant::now();
    let o = c.exec(&["systemctl", "start", "guestprep.service"]);
    assert!(
        o.status.success(),
        "start: {}\n{}",
        stderr(&o),
        stdout(&c.exec(&["journalctl", "-u", "guestprep", "--no-pager"]))
    );
    eprintln!(
        "systemctl start guestprep (Type=notify, until READY=1): {:?}",
        t.elapsed()
    );
    assert_eq!(c.systemctl("is-active", "guestprep.service"), "active");
    let r = report(&c).expect("the report exists once the service is started");
    assert_eq!(r["compliant"], true, "{r}");
    assert_eq!(r["mode"], "live");
    let status = stdout(&c.exec(&["systemctl", "show", "-P", "StatusText", "guestprep.service"]));
    // chrony's files are unpacked without its postinst, which makes /etc/chrony/chrony.conf:
    // chrony:confdir is skipped ("not installed").
    assert_eq!(status.trim(), "compliant 4/5, 1 skipped", "StatusText");
    let perms = stdout(&c.exec(&["stat", "-c", "%a", "/run/guestprep/report.json"]));
    assert_eq!(perms.trim(), "644");

    // Masked from outside: UnitFilesChanged reaches the daemon, no timer involved (15 min).
    let o = c.exec(&["systemctl", "mask", "cron.service"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let took = wait_report(
        &c,
        |r| unit_status(r, "cron.service") == "drift",
        "cron masked",
    );
    eprintln!("mask from outside reported after {took:?}");
    c.exec(&["systemctl", "unmask", "cron.service"]);
    wait_report(&c, |r| r["compliant"] == true, "compliant after unmask");

    // Stopped from outside: the unit's PropertiesChanged (ActiveState) reaches it.
    c.exec(&["systemctl", "stop", "cron.service"]);
    let took = wait_report(
        &c,
        |r| unit_status(r, "cron.service") == "drift",
        "cron stopped",
    );
    eprintln!("stop from outside reported after {took:?}");
    let status = stdout(&c.exec(&["systemctl", "show", "-P", "StatusText", "guestprep.service"]));
    assert!(
        status.starts_with("drift: 1 item (unit:cron.service)"),
        "{status}"
    );
    c.exec(&["systemctl", "start", "cron.service"]);
    wait_report(&c, |r| r["compliant"] == true, "compliant after start");

    // The system bus restarts under the daemon: it subscribes again, and a unit masked afterwards
    // still reaches the report through the signals (the timer is 15 min away).
    let o = c.exec(&["systemctl", "restart", "dbus.service"]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::thread::sleep(Duration::from_secs(2));
    let o = c.exec(&["systemctl", "mask", "cron.service"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let took = wait_report(
        &c,
        |r| unit_status(r, "cron.service") == "drift",
        "cron masked after dbus restarted",
    );
    eprintln!("mask after a dbus restart reported after {took:?}");
    let log = stdout(&c.exec(&["journalctl", "-u", "guestprep", "--no-pager", "-o", "cat"]));
    assert!(log.contains("connection was lost"), "{log}");
    c.exec(&["systemctl", "unmask", "cron.service"]);
    wait_report(&c, |r| r["compliant"] == true, "compliant after unmask");

    // A real qemu-ga in the guest; this host reads through it, as Proxmox would.
    let o = c.exec(&[
        "systemd-run",
        "--unit=qga-test",
        "qemu-ga",
        "-m",
        "unix-listen",
        "-p",
        "/var/lib/qga.sock",
        "-t",
        "/var/lib",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let sock = root.join("var/lib/qga.sock");
    let start = Instant::now();
    while !sock.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "qemu-ga never listened in the guest"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let qga = |args: &[&str]| {
        let mut all = vec!["qga", "--socket", sock.to_str().unwrap()];
        all.extend_from_slice(args);
        guestprep(&all)
    };
    let o = qga(&["--json", "report"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let via_agent = json(&o);
    assert_eq!(
        via_agent,
        report(&c).unwrap(),
        "the agent's file-read gives the daemon's report"
    );
    let o = qga(&["--json", "verify"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json(&o)["policyDigest"], via_agent["policyDigest"]);

    // Drift seen through the agent, with the verify exit code.
    std::fs::write(root.join("etc/chrony/conf.d/50-guestprep.conf"), "x\n").unwrap();
    wait_report(&c, |r| r["compliant"] == false, "chrony drift");
    assert_eq!(code(&qga(&["report", "--max-age", "1min"])), 1);

    // systemctl reload (SIGHUP) with a bad policy: still running, still serving.
    std::fs::write(
        root.join("etc/guestprep/policy.d/60-bad.toml"),
        "[units]\nmask = 1\n",
    )
    .unwrap();
    let o = c.exec(&["systemctl", "reload", "guestprep.service"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(c.systemctl("is-active", "guestprep.service"), "active");
    let journal = stdout(&c.exec(&["journalctl", "-u", "guestprep", "--no-pager"]));
    assert!(
        journal.contains("reload failed, keeping the running policy"),
        "{journal}"
    );

    // Stop: clean exit, not a failure.
    let o = c.exec(&["systemctl", "stop", "guestprep.service"]);
    assert!(o.status.success());
    let result = stdout(&c.exec(&["systemctl", "show", "-P", "Result", "guestprep.service"]));
    assert_eq!(result.trim(), "success");

    // The sandbox, as systemd scores it: "SAFE" or "OK" is the goal.
    let o = c.exec(&[
        "systemd-analyze",
        "security",
        "--no-pager",
        "guestprep.service",
    ]);
    let verdict = stdout(&o).lines().last().unwrap_or("").to_string();
    eprintln!("systemd-analyze security guestprep.service: {verdict}");
    assert!(
        verdict.contains("SAFE") || verdict.contains(" OK"),
        "{verdict}"
    );

    // Enforce mode: the shipped unit alone keeps /etc read-only, so the repair fails and says so;
    // with the shipped drop-in (linked as its header says) the agent repairs the file.
    std::fs::remove_file(root.join("etc/guestprep/policy.d/60-bad.toml")).unwrap();
    std::fs::write(
        root.join("etc/guestprep/policy.d/70-enforce.toml"),
        "[agent]\nenforce = true\n",
    )
    .unwrap();
    let chrony = root.join("etc/chrony/conf.d/50-guestprep.conf");
    assert_eq!(std::fs::read_to_string(&chrony).unwrap(), "x\n");
    let o = c.exec(&["systemctl", "start", "guestprep.service"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let journal = || stdout(&c.exec(&["journalctl", "-u", "guestprep", "--no-pager"]));
    let start = Instant::now();
    while !journal().contains("enforcing failed") {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no failed repair under the read-only sandbox: {}",
            journal()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(journal().contains("Read-only file system"), "{}", journal());
    assert_eq!(std::fs::read_to_string(&chrony).unwrap(), "x\n");
    c.exec(&["systemctl", "stop", "guestprep.service"]);

    std::fs::create_dir_all(root.join("usr/share/guestprep")).unwrap();
    std::fs::copy(
        repo().join("units/guestprep-enforce.conf"),
        root.join("usr/share/guestprep/guestprep-enforce.conf"),
    )
    .unwrap();
    for cmd in [
        &["mkdir", "-p", "/etc/systemd/system/guestprep.service.d"][..],
        &[
            "ln",
            "-s",
            "/usr/share/guestprep/guestprep-enforce.conf",
            "/etc/systemd/system/guestprep.service.d/",
        ],
        &["systemctl", "daemon-reload"],
        &["systemctl", "start", "guestprep.service"],
    ] {
        let o = c.exec(cmd);
        assert!(o.status.success(), "{cmd:?}: {}", stderr(&o));
    }
    wait_report(&c, |r| r["compliant"] == true, "compliant after enforcing");
    let repaired = std::fs::read_to_string(&chrony).unwrap();
    assert!(
        repaired.contains("server ntp.example.internal"),
        "{repaired}"
    );
    assert!(journal().contains("enforced: "), "{}", journal());
    let o = c.exec(&[
        "systemd-analyze",
        "security",
        "--no-pager",
        "guestprep.service",
    ]);
    eprintln!(
        "systemd-analyze security guestprep.service with the enforce drop-in: {}",
        stdout(&o).lines().last().unwrap_or("")
    );
}
