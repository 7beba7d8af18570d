//! `guestprep fleet` against a node of real guest agents (tests/it/common/fleet.rs: 50 real
//! `qemu-ga` processes, each in its own mount namespace with its own report bind-mounted at
//! /run/guestprep): compliant, drifted, pending-reboot, erroring, stale, without a report,
//! without guestprep, with a broken report, hung by SIGSTOP; plus a socket nothing listens on, a
//! VM with its agent option off and a stopped one. Every VM must be classified as what it is,
//! the hung one must cost its timeout once, and the textfile must pass `promtool check metrics`.

use crate::common;

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::fleet::{Bed, Guest, variant};
use common::{code, guestprep, stderr, stdout};

const BIN: &str = env!("CARGO_BIN_EXE_guestprep");

/// A real report of the example root (as a daemon writes it), made now.
fn base_report() -> serde_json::Value {
    let root = common::example_root();
    let o = common::on_root("verify", root.path(), &["--json"]);
    common::json(&o)
}

fn now() -> String {
    guestprep::report::rfc3339(std::time::SystemTime::now())
}

fn run(mut c: Command) -> Output {
    c.stdin(Stdio::null()).output().unwrap()
}

/// The node: VM id → the state `fleet` must find.
fn node() -> (Bed, BTreeMap<u32, &'static str>) {
    let base = base_report();
    let mut bed = Bed::new();
    let mut want = BTreeMap::new();
    let fresh = now();
    for i in 0..50u32 {
        let vmid = 1000 + i;
        let name = format!("k8s-node-{i}");
        let (guest, state) = match i {
            0..=35 => (
                Guest::Report(variant(&base, 0, 0, &fresh, &name)),
                "compliant",
            ),
            36..=38 => (
                Guest::Report(variant(&base, 3, 0, &fresh, &name)),
                "pending-reboot",
            ),
            39..=42 => (Guest::Report(variant(&base, 1, 2, &fresh, &name)), "drift"),
            43 => (Guest::Report(variant(&base, 5, 0, &fresh, &name)), "error"),
            // Made long before this machine booted: no daemon has run since.
            44 => (
                Guest::Report(variant(&base, 0, 0, "2020-01-01T00:00:00Z", &name)),
                "stale",
            ),
            45 => (Guest::NoReport { installed: true }, "no-report"),
            46 => (Guest::NoReport { installed: false }, "not-installed"),
            47 => (Guest::Garbage, "invalid-report"),
            // 48 hangs (below); 49 is compliant and answers after it.
            48 | 49 => (
                Guest::Report(variant(&base, 0, 0, &fresh, &name)),
                if i == 48 { "no-answer" } else { "compliant" },
            ),
            _ => unreachable!(),
        };
        let pid = bed.agent(vmid, &name, guest);
        if i == 48 {
            bed.wait_ready();
            bed.hang(pid);
        }
        want.insert(vmid, state);
    }
    bed.refused(1050, "k8s-crashed");
    want.insert(1050, "no-answer");
    bed.agent_off(1051, "win-build");
    want.insert(1051, "agent-off");
    bed.stopped(1052, "k8s-spare");
    want.insert(1052, "stopped");
    bed.wait_ready();
    (bed, want)
}

#[test]
fn fifty_real_agents_are_classified_concurrently_within_one_timeout() {
    let (bed, want) = node();
    let timeout = 5;
    let prom = bed.dir.path().join("textfile/guestprep-fleet.prom");
    std::fs::create_dir(prom.parent().unwrap()).unwrap();
    let start = Instant::now();
    let o = run(bed.fleet(
        BIN,
        &[
            "--json",
            "--timeout",
            &timeout.to_string(),
            "--prometheus-textfile",
            prom.to_str().unwrap(),
        ],
    ));
    let elapsed = start.elapsed();
    assert_eq!(code(&o), 6, "a hung agent: exit 6\n{}", stderr(&o));
    let list: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let got: BTreeMap<u32, String> = list
        .iter()
        .map(|v| {
            (
                v["vmid"].as_u64().unwrap() as u32,
                v["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want_s: BTreeMap<u32, String> = want.iter().map(|(k, v)| (*k, v.to_string())).collect();
    assert_eq!(got, want_s, "every VM classified as what it is");
    for v in &list {
        let state = v["state"].as_str().unwrap();
        let vmid = v["vmid"].as_u64().unwrap();
        // Names from the configurations' current section, not the snapshot's.
        assert!(
            v["name"].as_str().unwrap().starts_with("k8s-") || vmid == 1051,
            "{v}"
        );
        let fresh = matches!(state, "compliant" | "pending-reboot" | "drift" | "error");
        assert_eq!(
            v["compliant"].as_bool(),
            Some(matches!(state, "compliant" | "pending-reboot")),
            "{v}"
        );
        // A fresh report is there whole; without one, the reason.
        if fresh {
            assert!(v["reason"].is_null(), "{v}");
            assert_eq!(v["report"]["apiVersion"], "guestprep.io/v1", "{v}");
            assert_eq!(
                v["report"]["host"]["hostname"].as_str(),
                v["name"].as_str(),
                "each agent answered with its own report: {v}"
            );
            assert!(v["reportAgeSeconds"].as_f64().unwrap() < 600.0, "{v}");
        } else {
            assert_eq!(v["reason"].as_str(), Some(state), "{v}");
            assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        }
    }
    let by_id = |id: u64| list.iter().find(|v| v["vmid"] == id).unwrap();
    assert_eq!(by_id(1041)["summary"]["drift"], 2);
    for (id, needle) in [
        (1044, "before the guest's last boot"),
        (1045, "daemon running"),
        (1046, "not installed"),
        (1048, "did not answer"),
        (1050, "cannot connect"),
    ] {
        let m = by_id(id)["message"].as_str().unwrap();
        assert!(m.contains(needle), "{id}: {m}");
    }
    assert_eq!(by_id(1048)["up"], false);
    assert_eq!(by_id(1046)["up"], true);
    // The hung agent cost its timeout, once; everyone else answered meanwhile.
    let hung_ms = by_id(1048)["durationMs"].as_u64().unwrap();
    println!(
        "fleet: 53 VMs (50 real agents, one hung) in {:.2} s with --timeout {timeout}; the hung one took {hung_ms} ms",
        elapsed.as_secs_f64()
    );
    assert!(
        (timeout * 1000 - 100..timeout * 1000 + 2000).contains(&hung_ms),
        "the hung agent took {hung_ms} ms"
    );
    assert!(
        elapsed < Duration::from_secs(2 * timeout),
        "one hung agent must cost one timeout, not more: {elapsed:?}"
    );

    // The textfile: accepted by Prometheus's own checker, one series per VM as the JSON says.
    let text = std::fs::read_to_string(&prom).unwrap();
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; tests/run installs it)");
    std::io::Write::write_all(&mut check.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let checked = check.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&prom).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o644);
    for (vmid, state) in &want {
        let name = list.iter().find(|v| v["vmid"] == *vmid).unwrap()["name"]
            .as_str()
            .unwrap()
            .to_string();
        let labels = format!("{{vmid=\"{vmid}\",name=\"{name}\"}}");
        let expects_agent = !matches!(*state, "agent-off" | "stopped");
        let compliant = matches!(*state, "compliant" | "pending-reboot");
        let line = format!("guestprep_vm_compliant{labels} {}\n", u8::from(compliant));
        assert_eq!(text.contains(&line), expects_agent, "{line} in\n{text}");
        let up = !matches!(*state, "no-answer" | "agent-off" | "stopped");
        let line = format!("guestprep_vm_up{labels} {}\n", u8::from(up));
        assert_eq!(text.contains(&line), expects_agent, "{line}");
        let line =
            format!("guestprep_vm_state{{vmid=\"{vmid}\",name=\"{name}\",state=\"{state}\"}} 1\n");
        assert!(text.contains(&line), "{line}");
        let has_items = text.contains(&format!(
            "guestprep_vm_items{{vmid=\"{vmid}\",name=\"{name}\",status=\"drift\"}}"
        ));
        assert_eq!(
            has_items,
            matches!(
                *state,
                "compliant" | "pending-reboot" | "drift" | "error" | "stale"
            ),
            "items of {vmid}"
        );
    }
    assert!(
        text.contains(
            "guestprep_vm_items{vmid=\"1040\",name=\"k8s-node-40\",status=\"drift\"} 2\n"
        )
    );
    assert!(text.contains("guestprep_vm_report_age_seconds{vmid=\"1000\",name=\"k8s-node-0\"} "));
}

#[test]
fn selection_table_and_exit_codes() {
    let (bed, _) = node();
    let t = ["--timeout", "3"];
    // Only compliant and pending-reboot VMs: 0.
    let o = run(bed.fleet(
        BIN,
        &[&t[..], &["--vmid", "1000,1001", "--vmid", "1036"]].concat(),
    ));
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    let rows: Vec<_> = out
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("10"))
        .collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert!(
        rows[2].starts_with("1036  k8s-node-36  pending-reboot"),
        "{out}"
    );
    assert!(
        out.ends_with("3 VMs: 2 compliant, 1 pending-reboot (")
            || out.contains("3 VMs: 2 compliant, 1 pending-reboot ("),
        "{out}"
    );
    // A drifting one among them: 1. The agent-off and stopped VMs count for nothing.
    let o = run(bed.fleet(BIN, &[&t[..], &["--vmid", "1000,1040,1051,1052"]].concat()));
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    let o = run(bed.fleet(BIN, &[&t[..], &["--vmid", "1000,1051,1052"]].concat()));
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(
        stdout(&o).contains("1051: the VM's guest agent option is off"),
        "{}",
        stdout(&o)
    );
    // Stale, no report, no guestprep, broken report: 1, not 6 (the agents answered).
    for id in ["1044", "1045", "1046", "1047"] {
        let o = run(bed.fleet(BIN, &[&t[..], &["--vmid", id]].concat()));
        assert_eq!(code(&o), 1, "{id}: {}", stdout(&o));
    }
    // A hung agent accepts no connection, and each earlier client left one pending in its listen
    // backlog: once it is full, connecting must still give up at the timeout (it used to block).
    for round in 0..4 {
        let start = Instant::now();
        let o = run(bed.fleet(BIN, &["--timeout", "1", "--vmid", "1048", "--json"]));
        assert_eq!(code(&o), 6, "round {round}: {}", stderr(&o));
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "round {round} against the hung agent took {:?}",
            start.elapsed()
        );
    }
    // --name globs and --only-running.
    let o = run(bed.fleet(
        BIN,
        &[
            &t[..],
            &["--name", "k8s-node-4?", "--name", "k8s-spare", "--json"],
        ]
        .concat(),
    ));
    let list: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let ids: Vec<u64> = list.iter().map(|v| v["vmid"].as_u64().unwrap()).collect();
    assert_eq!(ids, (1040..=1049).chain([1052]).collect::<Vec<_>>());
    assert_eq!(code(&o), 6, "1048 hangs");
    let o = run(bed.fleet(
        BIN,
        &[&t[..], &["--name", "k8s-spare", "--only-running", "--json"]].concat(),
    ));
    assert_eq!(stdout(&o).trim(), "[]");
    assert_eq!(code(&o), 0);
    // --max-age: a fresh report older than the limit is stale.
    std::thread::sleep(Duration::from_millis(2100));
    let o = run(bed.fleet(
        BIN,
        &[&t[..], &["--vmid", "1000", "--max-age", "1s", "--json"]].concat(),
    ));
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    let list: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list[0]["state"], "stale", "{}", stdout(&o));
    assert!(list[0]["message"].as_str().unwrap().contains("--max-age"));
    // -q: the summary line alone.
    let o = run(bed.fleet(BIN, &[&t[..], &["--vmid", "1000", "-q"]].concat()));
    assert!(
        stdout(&o).starts_with("1 VM: 1 compliant ("),
        "{}",
        stdout(&o)
    );
    assert_eq!(stdout(&o).lines().count(), 1);
}

#[test]
fn usage_errors_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let o = guestprep(&[
        "fleet",
        "--qga-dir",
        dir.path().join("absent").to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("--qga-dir"), "{}", stderr(&o));
    let o = guestprep(&[
        "fleet",
        "--qga-dir",
        dir.path().to_str().unwrap(),
        "--prometheus-textfile",
        dir.path().join("no/such/dir/x.prom").to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    for bad in [["--timeout", "0"], ["--parallel", "0"], ["--vmid", "x"]] {
        let o = guestprep(
            &[
                &["fleet", "--qga-dir", dir.path().to_str().unwrap()],
                &bad[..],
            ]
            .concat(),
        );
        assert_eq!(code(&o), 2, "{bad:?}: {}", stderr(&o));
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );
    // An empty node: nothing to ask, compliant, an empty list.
    let o = guestprep(&[
        "fleet",
        "--qga-dir",
        dir.path().to_str().unwrap(),
        "--config-dir",
        dir.path().to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code(&o), 0);
    assert_eq!(stdout(&o).trim(), "[]");
}

/// The alert rule in the docs is valid and behaves as documented (promtool's own rule tests).
#[test]
fn alert_rules_check_and_test_with_promtool() {
    let dir = common::fleet::repo().join("docs/prometheus");
    let o = Command::new("promtool")
        .args(["check", "rules", "guestprep.rules.yml"])
        .current_dir(&dir)
        .output()
        .expect("promtool");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let o = Command::new("promtool")
        .args(["test", "rules", "guestprep.rules.test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    // The test can fail: the same rule firing after 5 minutes instead of 15 breaks it.
    let tmp = tempfile::tempdir().unwrap();
    let rules = std::fs::read_to_string(dir.join("guestprep.rules.yml")).unwrap();
    assert!(rules.contains("for: 15m"));
    std::fs::write(
        tmp.path().join("guestprep.rules.yml"),
        rules.replacen("for: 15m", "for: 5m", 1),
    )
    .unwrap();
    std::fs::copy(
        dir.join("guestprep.rules.test.yml"),
        tmp.path().join("guestprep.rules.test.yml"),
    )
    .unwrap();
    let o = Command::new("promtool")
        .args(["test", "rules", "guestprep.rules.test.yml"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(
        !o.status.success(),
        "a 5-minute rule passed the 15-minute test"
    );
}

/// Talos' os-release (v1.9), as a Talos node with only the qemu-guest-agent extension has it.
const TALOS: &str = "NAME=\"Talos\"\nID=talos\nVERSION_ID=v1.9.0\nPRETTY_NAME=\"Talos (v1.9.0)\"\nHOME_URL=\"https://www.talos.dev/\"\nBUG_REPORT_URL=\"https://github.com/siderolabs/talos/issues\"\nVENDOR_NAME=\"Sidero Labs\"\n";

#[test]
fn a_system_guestprep_does_not_manage_is_unmanaged_not_a_missing_install() {
    let mut bed = Bed::new();
    bed.agent(301, "talos-cp-1", Guest::Unmanaged(TALOS));
    bed.agent(302, "debian-worker", Guest::NoReport { installed: false });
    bed.wait_ready();
    let textfile = bed.dir.path().join("fleet.prom");
    let o = run(bed.fleet(
        BIN,
        &[
            "--json",
            "--prometheus-textfile",
            textfile.to_str().unwrap(),
        ],
    ));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let state = |vmid: u64| {
        j.as_array()
            .unwrap()
            .iter()
            .find(|v| v["vmid"] == vmid)
            .map(|v| {
                (
                    v["state"].as_str().unwrap().to_string(),
                    v["message"].to_string(),
                )
            })
            .unwrap()
    };
    let (talos, msg) = state(301);
    assert_eq!(talos, "unmanaged", "{j:#}");
    assert!(msg.contains("Talos (v1.9.0) (id talos)"), "{msg}");
    assert_eq!(state(302).0, "not-installed", "{j:#}");
    // The missing install is what makes the exit code 1; the Talos node does not.
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let prom = std::fs::read_to_string(&textfile).unwrap();
    assert!(
        prom.contains("guestprep_vm_state{vmid=\"301\",name=\"talos-cp-1\",state=\"unmanaged\"} 1"),
        "{prom}"
    );
    assert!(
        !prom.contains("guestprep_vm_compliant{vmid=\"301\""),
        "{prom}"
    );
    assert!(
        prom.contains("guestprep_vm_compliant{vmid=\"302\",name=\"debian-worker\"} 0"),
        "{prom}"
    );
    // The Talos node alone: nothing to alert on.
    let o = run(bed.fleet(BIN, &["--vmid", "301"]));
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    // `qga report` says the same of it.
    let o = guestprep(&[
        "qga",
        "--socket",
        bed.socket(301).to_str().unwrap(),
        "report",
    ]);
    assert!(
        stderr(&o).contains("unmanaged: Talos (v1.9.0) (id talos)"),
        "{}",
        stderr(&o)
    );
    println!(
        "fleet: a Talos guest is `unmanaged` (exit 0, no compliant series); a Debian guest without guestprep stays `not-installed` (exit 1)"
    );
}
