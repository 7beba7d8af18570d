//! `guestprep daemon` on a scratch copy of the example root, through the real binary: readiness
//! and status over a real NOTIFY_SOCKET, the report following changes both ways, enforce mode,
//! SIGHUP with a bad and a good policy, SIGTERM, and the Prometheus textfile checked by real
//! parsers (promtool and the Python prometheus_client).

use crate::common;
use common::daemon::Daemon;
use common::*;

use std::path::Path;
use std::process::Command;

use nix::sys::signal::Signal;

const CHRONY: &str = "etc/chrony/conf.d/50-guestprep.conf";
const CHRONY_ID: &str = "file:/etc/chrony/conf.d/50-guestprep.conf";

fn status_of(r: &serde_json::Value, id: &str) -> String {
    item(r, id)["status"].as_str().unwrap().to_string()
}

fn fragment(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn report_follows_changes_both_ways_and_systemd_hears_of_it() {
    let root = converged_root();
    let pol = policies();
    let mut d = Daemon::start(root.path(), &[&pol]);
    let ready = d.messages[0].clone();
    assert!(
        ready.contains("READY=1")
            && ready.contains("STATUS=compliant 32/39, 1 pending reboot, 6 skipped"),
        "{ready}"
    );
    let (first, _) = d.wait_report(|r| r["compliant"] == true, "compliant");
    assert_eq!(first["apiVersion"], "guestprep.io/v1");
    assert_eq!(first["mode"], "offline");
    let mode = std::fs::metadata(&d.report).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o644
    );
    // The daemon's report is the same document `verify --json` makes.
    let v = guestprep(&[
        "verify",
        "--json",
        "--root",
        root.path().to_str().unwrap(),
        "--policy",
        pol.to_str().unwrap(),
    ]);
    let mut a = json(&v);
    let mut b = first.clone();
    for k in ["generatedAt", "durationMs"] {
        a[k] = serde_json::Value::Null;
        b[k] = serde_json::Value::Null;
    }
    assert_eq!(a, b, "daemon report differs from verify --json");

    // Break a managed file: the report says so.
    let path = root.path().join(CHRONY);
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{good}server rogue.example.com iburst\n")).unwrap();
    let (r, took) = d.wait_report(|r| status_of(r, CHRONY_ID) == "drift", "the drift");
    eprintln!("drift reported {took:?} after the change");
    assert_eq!(r["compliant"], false);
    assert_eq!(r["exitCode"], 1);
    d.wait_message(
        |m| m.contains("STATUS=drift: 1 item (file:/etc/chrony/conf.d/50-guestprep.conf)"),
        "drift status",
    );

    // Put it back: compliant again.
    std::fs::write(&path, &good).unwrap();
    let (_, took) = d.wait_report(
        |r| r["compliant"] == true && status_of(r, CHRONY_ID) == "compliant",
        "compliance again",
    );
    eprintln!("compliance reported {took:?} after the fix");
    // Report-only by default: the daemon never wrote the file.
    assert_eq!(std::fs::read_to_string(&path).unwrap(), good);

    // Deleting a file the checks read (not one guestprep owns) counts too.
    std::fs::remove_file(root.path().join("etc/sysctl.d/90-guestprep.conf")).unwrap();
    d.wait_report(
        |r| status_of(r, "file:/etc/sysctl.d/90-guestprep.conf") == "drift",
        "the removed sysctl file",
    );

    let st = d.stop();
    assert!(st.success(), "SIGTERM exit: {st}");
    assert!(d.messages.iter().any(|m| m.contains("STOPPING=1")));
    let log = d.log();
    assert!(
        log.contains("changed: /etc/chrony/conf.d/50-guestprep.conf"),
        "{log}"
    );
}

#[test]
fn enforce_mode_repairs_file_drift_and_logs_it() {
    let root = converged_root();
    let extra = tempfile::tempdir().unwrap();
    fragment(extra.path(), "99-agent.toml", "[agent]\nenforce = true\n");
    let pol = policies();
    let mut d = Daemon::start(root.path(), &[&pol, extra.path()]);
    d.wait_report(|r| r["compliant"] == true, "compliant");

    let path = root.path().join(CHRONY);
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, "server rogue.example.com iburst\n").unwrap();
    // Repaired: the file is back, byte for byte, and the report is compliant.
    let start = std::time::Instant::now();
    while std::fs::read_to_string(&path).unwrap() != good {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "not repaired; log:\n{}",
            d.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    eprintln!("repaired {:?} after the change", start.elapsed());
    d.wait_report(
        |r| r["compliant"] == true && status_of(r, CHRONY_ID) == "compliant",
        "compliance after repair",
    );
    // The round logs after its write: the repaired file can be seen before the log line is.
    let start = std::time::Instant::now();
    while !d
        .log()
        .contains("enforced: update /etc/chrony/conf.d/50-guestprep.conf")
    {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "{}",
            d.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // A removed file is recreated too.
    std::fs::remove_file(&path).unwrap();
    let start = std::time::Instant::now();
    while std::fs::read_to_string(&path).ok().as_deref() != Some(good.as_str()) {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "not recreated"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(d.stop().success());
}

#[test]
fn sighup_with_a_bad_policy_keeps_the_running_one_and_a_good_one_takes_over() {
    let root = converged_root();
    let pol = tempfile::tempdir().unwrap();
    copy_tree(&policies(), pol.path());
    let mut d = Daemon::start(root.path(), &[pol.path()]);
    let (before, _) = d.wait_report(|r| r["compliant"] == true, "compliant");

    let bad = fragment(
        pol.path(),
        "99-local.toml",
        "[agent]\ninterval = \"soon\"\n[sysctl]\n\"vm.swappiness\" = \"10\"\n",
    );
    d.signal(Signal::SIGHUP);
    d.wait_message(|m| m.contains("reload failed"), "the failed reload status");
    assert!(d.is_running(), "the daemon died on a bad policy");
    let log = d.log();
    assert!(
        log.contains("reload failed, keeping the running policy")
            && log.contains("99-local.toml:2:12: `agent.interval`"),
        "{log}"
    );
    // Still serving, with the old policy.
    std::fs::write(root.path().join(CHRONY), "x\n").unwrap();
    let (r, _) = d.wait_report(|r| status_of(r, CHRONY_ID) == "drift", "drift");
    assert_eq!(r["policyDigest"], before["policyDigest"]);

    // A valid policy is taken on the next SIGHUP: its new item appears.
    std::fs::write(&bad, "[sysctl]\n\"vm.swappiness\" = \"10\"\n").unwrap();
    d.signal(Signal::SIGHUP);
    let (r, _) = d.wait_report(
        |r| r["policyDigest"] != before["policyDigest"],
        "the new policy",
    );
    assert!(
        r["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["id"] == "sysctl:vm.swappiness"),
        "{r}"
    );
    assert!(
        d.messages
            .iter()
            .any(|m| m.contains("RELOADING=1") && m.contains("MONOTONIC_USEC="))
    );
    assert!(d.stop().success());
}

#[test]
fn prometheus_textfile_is_valid_for_promtool_and_the_python_client() {
    let root = converged_root();
    let extra = tempfile::tempdir().unwrap();
    fragment(
        extra.path(),
        "99-agent.toml",
        "[agent]\nprometheus_textfile = \"/var/lib/prometheus/node-exporter/guestprep.prom\"\n",
    );
    let pol = policies();
    let mut d = Daemon::start(root.path(), &[&pol, extra.path()]);
    d.wait_report(|r| r["compliant"] == true, "compliant");
    let prom = root
        .path()
        .join("var/lib/prometheus/node-exporter/guestprep.prom");
    let text = std::fs::read_to_string(&prom).expect("the textfile is written");
    assert!(text.contains("guestprep_compliant 1\n"), "{text}");
    assert!(
        text.contains(
            "guestprep_item_status{id=\"file:/etc/chrony/conf.d/50-guestprep.conf\",kind=\"chrony\",status=\"compliant\"} 1"
        ),
        "{text}"
    );
    check_prometheus(&text, 0);

    // Drift shows in the textfile too.
    std::fs::write(root.path().join(CHRONY), "x\n").unwrap();
    d.wait_report(|r| r["compliant"] == false, "drift");
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(&prom)
        .unwrap()
        .contains("guestprep_compliant 0\n")
    {
        assert!(start.elapsed() < std::time::Duration::from_secs(20));
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    check_prometheus(&std::fs::read_to_string(&prom).unwrap(), 1);
    assert!(d.stop().success());
}

/// Runs a Python script (Debian's python3, where the parser packages are) on a file; returns the
/// numbers it prints.
fn python_numbers(script: &str, file: &Path, parser: &str) -> Vec<u64> {
    let o = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{parser}: {}", stderr(&o));
    stdout(&o)
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect()
}

/// Lints with promtool and parses with prometheus_client; checks the drift count it reads.
fn check_prometheus(text: &str, drift: u64) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    let o = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(file.path()).unwrap())
        .output()
        .expect("promtool (Debian package prometheus; tests/run installs it)");
    assert!(
        o.status.success() && o.stdout.is_empty() && o.stderr.is_empty(),
        "promtool check metrics: {}{}",
        stdout(&o),
        stderr(&o)
    );
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
fams = {f.name: f for f in text_string_to_metric_families(open(sys.argv[1]).read())}
drift = [s.value for s in fams["guestprep_items"].samples if s.labels["status"] == "drift"][0]
per_item = [s for s in fams["guestprep_item_status"].samples if s.value == 1]
print(int(drift), len(per_item), len(fams["guestprep_item_status"].samples))
"#;
    let nums = python_numbers(
        script,
        file.path(),
        "prometheus_client (python3-prometheus-client; tests/run installs it)",
    );
    assert_eq!(nums[0], drift, "drift count parsed");
    assert_eq!(
        nums[1] * 6,
        nums[2],
        "one current status per item, six series each (waived among them)"
    );
}

#[test]
fn junit_output_parses_with_junitparser_and_matches_the_report() {
    let root = example_root();
    let args = |f: &str| {
        guestprep(&[
            "verify",
            "--root",
            root.path().to_str().unwrap(),
            "--policy",
            policies().to_str().unwrap(),
            "--format",
            f,
        ])
    };
    let j = args("junit");
    let r = json(&args("json"));
    assert_eq!(code(&j), 1, "junit keeps verify's exit code");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &j.stdout).unwrap();
    // junitparser: the parser of EnricoMi/publish-unit-test-result-action and others.
    let script = r#"
import sys
from junitparser import JUnitXml, Failure, Error, Skipped
x = JUnitXml.fromfile(sys.argv[1])
tests = failures = errors = skipped = 0
for suite in x:
    for case in suite:
        tests += 1
        for res in case.result:
            failures += isinstance(res, Failure)
            errors += isinstance(res, Error)
            skipped += isinstance(res, Skipped)
print(tests, failures, errors, skipped, x.tests, x.failures)
"#;
    let n = python_numbers(
        script,
        file.path(),
        "junitparser (python3-junitparser; tests/run installs it)",
    );
    let s = &r["summary"];
    let want = [
        s["total"].as_u64().unwrap(),
        s["drift"].as_u64().unwrap(),
        s["error"].as_u64().unwrap(),
        s["skipped"].as_u64().unwrap(),
        s["total"].as_u64().unwrap(),
        s["drift"].as_u64().unwrap(),
    ];
    assert_eq!(n, want, "junitparser's counts vs the report's summary");
    assert!(want[1] > 0, "the example root has drift to show");
}

#[test]
fn a_notify_socket_nobody_reads_never_freezes_the_daemon() {
    let root = converged_root();
    let pol = policies();
    let mut d = Daemon::start(root.path(), &[&pol]);
    d.stop_reading_notifications();
    // More status messages than a datagram queue holds (net.unix.max_dgram_qlen, 10 by default).
    let path = root.path().join(CHRONY);
    let good = std::fs::read_to_string(&path).unwrap();
    for i in 0..30 {
        let compliant = i % 2 == 1;
        let text = if compliant {
            good.clone()
        } else {
            "x\n".to_string()
        };
        std::fs::write(&path, text).unwrap();
        d.wait_report(
            |r| r["compliant"] == compliant,
            &format!("report {i} with a full notify queue"),
        );
    }
    assert!(d.stop().success());
}

#[test]
fn an_apply_that_changed_something_wakes_the_daemon() {
    // Live values apply sets (/proc/sys, loaded modules, started units) have no inotify events:
    // apply's stamp stands for them. Here, a real apply on the root, with a fragment whose only
    // file lives where the daemon has no other reason to look.
    use std::os::unix::fs::MetadataExt;
    let root = converged_root();
    let pol = policies();
    let mut d = Daemon::start(root.path(), &[&pol]);
    d.wait_report(|r| r["compliant"] == true, "compliant");
    let inode = || std::fs::metadata(&d.report).unwrap().ino();
    let before = inode();
    // Control: that directory changing by itself does not wake the daemon.
    std::fs::create_dir_all(root.path().join("var/lib/guestprep-test")).unwrap();
    std::fs::write(root.path().join("var/lib/guestprep-test/other"), "y\n").unwrap();
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(inode(), before, "the daemon re-verified without a reason");

    let extra = tempfile::tempdir().unwrap();
    let frag = fragment(
        extra.path(),
        "99-extra.toml",
        "[[files]]\npath = \"/var/lib/guestprep-test/marker\"\ncontent = \"x\\n\"\n",
    );
    let apply = || {
        guestprep(&[
            "apply",
            "--root",
            root.path().to_str().unwrap(),
            "--policy",
            pol.to_str().unwrap(),
            "--policy",
            frag.to_str().unwrap(),
        ])
    };
    let o = apply();
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let text = std::fs::read_to_string(root.path().join("run/guestprep/applied")).unwrap();
    assert!(text.ends_with(" 1 change(s)\n"), "{text}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while inode() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon did not re-verify after apply: {}",
            d.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // A second apply changes nothing and leaves the stamp alone.
    let o = apply();
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(root.path().join("run/guestprep/applied")).unwrap(),
        text
    );
    assert!(d.stop().success());
}

/// A real glibc locale archive holding `locale`, made by the real `localedef` into `root`.
fn locale_archive(root: &Path, locale: &str) {
    std::fs::create_dir_all(root.join("usr/lib/locale")).unwrap();
    let (name, charset) = locale.split_once('.').unwrap();
    let o = Command::new("localedef")
        .args(["-i", name, "-f", charset, "--prefix"])
        .arg(root)
        .arg(locale)
        .output()
        .expect("localedef (libc-bin)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The daemon watches everything a check read, through the one door (`System`): a changed
/// /etc/localtime link or locale archive reaches the report without waiting for the hour-long
/// timer.
#[test]
fn a_changed_time_zone_or_locale_archive_reaches_the_report_without_the_timer() {
    let root = example_root();
    let r = root.path();
    for zone in ["Europe/Paris", "Etc/UTC"] {
        let z = r.join("usr/share/zoneinfo").join(zone);
        std::fs::create_dir_all(z.parent().unwrap()).unwrap();
        std::fs::write(&z, b"TZif2 test zone\n").unwrap();
    }
    std::os::unix::fs::symlink(
        "../usr/share/zoneinfo/Europe/Paris",
        r.join("etc/localtime"),
    )
    .unwrap();
    std::fs::write(r.join("etc/locale.gen"), "en_US.UTF-8 UTF-8\n").unwrap();
    locale_archive(r, "en_US.UTF-8");
    let dir = tempfile::tempdir().unwrap();
    let p = fragment(
        dir.path(),
        "p.toml",
        "[agent]\ninterval = \"1h\"\n[time]\ntimezone = \"Europe/Paris\"\n\
         [locale]\ngenerate = [\"en_US.UTF-8\"]\n",
    );
    let mut d = Daemon::start(r, &[&p]);
    let rep = d.read_report().unwrap();
    assert_eq!(status_of(&rep, "time:timezone"), "compliant", "{rep:#}");
    assert_eq!(status_of(&rep, "locale:generate"), "compliant", "{rep:#}");

    // timedatectl's way: the link replaced.
    std::fs::remove_file(r.join("etc/localtime")).unwrap();
    std::os::unix::fs::symlink("../usr/share/zoneinfo/Etc/UTC", r.join("etc/localtime")).unwrap();
    let (_, took) = d.wait_report(
        |r| status_of(r, "time:timezone") == "drift",
        "time:timezone drift",
    );
    eprintln!("a changed /etc/localtime reached the report in {took:?} (timer: 1h)");

    // locale-gen's way: the archive rebuilt without the locale (localedef into a scratch root,
    // then moved into place).
    let other = tempfile::tempdir().unwrap();
    locale_archive(other.path(), "de_DE.UTF-8");
    std::fs::copy(
        other.path().join("usr/lib/locale/locale-archive"),
        r.join("usr/lib/locale/.new-archive"),
    )
    .unwrap();
    std::fs::rename(
        r.join("usr/lib/locale/.new-archive"),
        r.join("usr/lib/locale/locale-archive"),
    )
    .unwrap();
    let (_, took) = d.wait_report(
        |r| status_of(r, "locale:generate") == "drift",
        "locale:generate drift",
    );
    eprintln!("a rebuilt locale archive reached the report in {took:?} (timer: 1h)");
    assert!(d.stop().success());
}
