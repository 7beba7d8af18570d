//! `verify` as CI and compliance people use it, running the binary on the example root with the
//! shipped policies: waivers (with expiry), `--only`/`--skip`, each item's origin and remediation,
//! several outputs in one run (JUnit checked with a real JUnit parser, Prometheus with promtool),
//! conflicting flags, `-q`, options before the verb. `--wait` against real systemd is in
//! tests/it/systemd.rs.

use crate::common;
use common::*;

use std::path::Path;
use std::process::Command;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

const WAIVERS: &str = r#"
[[waivers]]
items = ["sysctl:net.ipv4.ip_forward", "sysctl:net.bridge.*"]
reason = "routing is the CNI's job on these nodes"
expires = 2099-12-31

[[waivers]]
items = ["file:/etc/sysctl.d/90-guestprep.conf"]
reason = "an old exception"
expires = 2020-01-01
"#;

#[test]
fn waivers_accept_drift_until_they_lapse() {
    let root = example_root();
    let r = root.path().to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let w = write(tmp.path(), "w.toml", WAIVERS);
    let pol = policies();
    let p = pol.to_str().unwrap();
    let o = guestprep(&[
        "verify", "--root", r, "--policy", p, "--policy", &w, "--json", "--only", "sysctl",
    ]);
    let rep = json(&o);
    let it = item(&rep, "sysctl:net.ipv4.ip_forward");
    assert_eq!(it["status"], "waived", "{it}");
    assert_eq!(
        it["actual"]["status"], "drift",
        "the real status stays: {it}"
    );
    assert_eq!(it["waiver"]["status"], "drift");
    assert_eq!(it["waiver"]["expires"], "2099-12-31");
    assert_eq!(it["waiver"]["lapsed"], false);
    assert!(
        it["waiver"]["origin"]
            .as_str()
            .unwrap()
            .ends_with("w.toml:2:1"),
        "{it}"
    );
    assert!(
        it["message"]
            .as_str()
            .unwrap()
            .starts_with("waived (until 2099-12-31): routing is the CNI's job"),
        "{it}"
    );
    // The file item's waiver lapsed: it counts again, and says so.
    let f = item(&rep, "file:/etc/sysctl.d/90-guestprep.conf");
    assert_eq!(f["status"], "drift");
    assert_eq!(f["waiver"]["lapsed"], true);
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .starts_with("the waiver lapsed on 2020-01-01"),
        "{f}"
    );
    assert_eq!(rep["summary"]["waived"], 3);
    assert_eq!(rep["summary"]["drift"], 1);
    assert_eq!(code(&o), 1, "the lapsed waiver's item still fails");

    // Only waived drift: verify passes.
    let o = guestprep(&[
        "verify", "--root", r, "--policy", p, "--policy", &w, "--only", "sysctl:*",
    ]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(stdout(&o).contains(", 3 waived ("), "{}", stdout(&o));

    // JUnit: waived is skipped with the reason (read by a real JUnit parser); Prometheus has
    // the status label (checked by promtool).
    let xml = tmp.path().join("r.xml");
    let prom = tmp.path().join("r.prom");
    let o = guestprep(&[
        "verify",
        "--root",
        r,
        "--policy",
        p,
        "--policy",
        &w,
        "--output",
        &format!("junit={}", xml.display()),
        "--output",
        &format!("prometheus={}", prom.display()),
        "--output",
        "human",
    ]);
    assert_eq!(code(&o), 1);
    // The Debian python3 that has python3-junitparser (tests/run installs it).
    let parsed = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import sys, junitparser\n\
             for suite in junitparser.JUnitXml.fromfile(sys.argv[1]):\n\
             \x20   for case in suite:\n\
             \x20       for r in case.result:\n\
             \x20           print(case.name, type(r).__name__, r.message)",
            xml.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(parsed.status.success(), "{}", stderr(&parsed));
    assert!(
        stdout(&parsed).lines().any(|l| l
            == "sysctl:net.ipv4.ip_forward Skipped waived: routing is the CNI's job on these nodes"),
        "{}",
        stdout(&parsed)
    );
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(
        text.contains(
            "guestprep_item_status{id=\"sysctl:net.ipv4.ip_forward\",kind=\"sysctl\",status=\"waived\"} 1"
        ),
        "{text}"
    );
    let check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&prom).unwrap())
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", stderr(&check));
}

#[test]
fn waiver_mistakes_are_named() {
    let root = example_root();
    let r = root.path().to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let bad = write(
        tmp.path(),
        "bad.toml",
        "[[waivers]]\nitems = [\"sysctl:x\"]\nexpires = \"soon\"\n",
    );
    let o = guestprep(&["policy", "check", "--root", r, "--policy", &bad]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("bad.toml:1:1: `waivers[0].reason`: missing required key `reason`"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("bad.toml:3:11: `waivers[0].expires`: expected a TOML date"),
        "{}",
        stderr(&o)
    );
    // A waiver that matches nothing is a warning, not an error.
    let unused = write(
        tmp.path(),
        "unused.toml",
        "[[waivers]]\nitems = [\"unit:nothing-*\", \"sysctl:net.ipv4.ip_forward\"]\nreason = \"r\"\n",
    );
    let pol = policies();
    let o = guestprep(&[
        "policy",
        "check",
        "--root",
        r,
        "--policy",
        pol.to_str().unwrap(),
        "--policy",
        &unused,
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stderr(&o)
            .contains("unused.toml:1:1: waiver `unit:nothing-*` matches no item of this policy"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("`sysctl:net.ipv4.ip_forward` matches no item"));
}

#[test]
fn only_and_skip_select_items_for_verify_and_apply() {
    let root = example_root();
    let r = root.path();
    let o = on_root(
        "verify",
        r,
        &["--json", "--only", "sysctl", "--only", "unit:chrony*"],
    );
    let rep = json(&o);
    let ids: Vec<&str> = rep["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"sysctl:net.ipv4.ip_forward") && ids.contains(&"unit:chrony.service"));
    assert!(
        ids.iter().all(|i| i.starts_with("sysctl:")
            || i.starts_with("unit:chrony")
            || *i == "file:/etc/sysctl.d/90-guestprep.conf"),
        "{ids:?}"
    );
    assert_eq!(
        rep["filter"]["only"],
        serde_json::json!(["sysctl", "unit:chrony*"])
    );
    assert_eq!(rep["summary"]["total"], ids.len());
    // --skip leaves out; the exit code covers what is selected.
    let o = on_root(
        "verify",
        r,
        &[
            "--json", "--skip", "sysctl", "--skip", "file", "--skip", "unit", "--skip", "package*",
            "--only", "swap",
        ],
    );
    let rep = json(&o);
    assert!(
        rep["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["kind"] == "swap"),
        "{rep}"
    );
    // apply --only converges one thing and leaves the rest as it was.
    let before = snapshot(r);
    let o = on_root("apply", r, &["--json", "--only", "sysctl"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let after = snapshot(r);
    let changed: Vec<&String> = after
        .keys()
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    assert_eq!(
        changed,
        [&"etc/sysctl.d/90-guestprep.conf".to_string()],
        "{changed:?}"
    );
    assert_eq!(json(&o)["filter"]["only"], serde_json::json!(["sysctl"]));
    let o = on_root("verify", r, &["--only", "sysctl"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(
        stdout(&o).contains("--only sysctl"),
        "the verdict line names the filter"
    );
}

#[test]
fn items_say_where_they_come_from_and_what_fixes_them() {
    let root = example_root();
    let r = root.path();
    let rep = json(&on_root("verify", r, &["--json"]));
    let ip = item(&rep, "sysctl:net.ipv4.ip_forward");
    assert!(
        ip["origin"]
            .as_str()
            .unwrap()
            .ends_with("policies/20-sysctl.toml:9:1"),
        "{ip}"
    );
    let unit = item(&rep, "unit:dkms.service");
    assert!(
        unit["origin"]
            .as_str()
            .unwrap()
            .contains("policies/80-units.toml:"),
        "{unit}"
    );
    // Remediation is what apply --check says it would do.
    let check = json(&on_root("apply", r, &["--check", "--json"]));
    let planned: Vec<(String, String)> = check["apply"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["item"].as_str().unwrap().to_string(),
                c["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for it in rep["items"].as_array().unwrap() {
        let id = it["id"].as_str().unwrap();
        match it["status"].as_str().unwrap() {
            "compliant" | "skipped" => assert!(it.get("remediation").is_none(), "{it}"),
            "drift" => {
                let rem = it["remediation"].as_str().unwrap_or_else(|| panic!("{it}"));
                let actions: Vec<&str> = planned
                    .iter()
                    .filter(|(i, _)| i == id)
                    .map(|(_, a)| a.as_str())
                    .collect();
                if actions.is_empty() {
                    // Fixed through an earlier item (the file it reads): that item's changes
                    // are planned. Otherwise apply cannot change it.
                    match rem.strip_prefix("through ") {
                        Some(rest) => {
                            let other = rest.split(' ').next().unwrap();
                            assert!(planned.iter().any(|(i, _)| i == other), "{it}");
                        }
                        None => assert!(rem.starts_with("apply cannot change this here"), "{it}"),
                    }
                } else {
                    assert_eq!(rem, actions.join("; "), "{id}");
                }
            }
            _ => {}
        }
    }
}

#[test]
fn outputs_flags_and_quiet() {
    let root = example_root();
    let r = root.path();
    let tmp = tempfile::tempdir().unwrap();
    let j = tmp.path().join("r.json");
    let x = tmp.path().join("r.xml");
    let o = on_root(
        "verify",
        r,
        &[
            "--output",
            &format!("json={}", j.display()),
            "--output",
            &format!("junit={}", x.display()),
        ],
    );
    assert_eq!(code(&o), 1);
    // Human on stdout when no output goes there; both files from the one verification.
    assert!(stdout(&o).starts_with("drift ") || stdout(&o).contains("\nNOT compliant: "));
    let rep: serde_json::Value = serde_json::from_slice(&std::fs::read(&j).unwrap()).unwrap();
    let xml = std::fs::read_to_string(&x).unwrap();
    assert!(
        xml.contains(&format!("tests=\"{}\"", rep["summary"]["total"])),
        "{xml}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&j).unwrap().permissions().mode() & 0o777,
        0o644
    );

    // Conflicting or impossible output flags: exit 2, nothing written.
    for args in [
        vec!["--json", "--format", "junit"],
        vec!["--output", "json", "--output", "human"],
        vec!["--output", "yaml"],
        vec!["--output", "json="],
    ] {
        let o = on_root("verify", r, &args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(stdout(&o).is_empty(), "{args:?}");
    }
    let o = on_root("verify", r, &["--json", "--format", "json"]);
    assert_eq!(code(&o), 1, "--json --format json agree");

    // -q: the verdict line; -qq: nothing, the exit code says it.
    let o = on_root("verify", r, &["-q"]);
    assert_eq!(stdout(&o).lines().count(), 1);
    assert!(stdout(&o).starts_with("NOT compliant: "));
    let o = on_root("verify", r, &["-qq"]);
    assert_eq!((code(&o), stdout(&o)), (1, String::new()));

    // apply -q too: the verdict line only, and the change still made.
    let scratch = example_root();
    let o = on_root("apply", scratch.path(), &["-q", "--only", "sysctl"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 1, "{}", stdout(&o));
    assert!(stdout(&o).starts_with("compliant: "), "{}", stdout(&o));
    assert!(
        scratch
            .path()
            .join("etc/sysctl.d/90-guestprep.conf")
            .exists()
    );

    // Options where people put them: before the verb.
    let pol = policies();
    let o = guestprep(&[
        "--root",
        r.to_str().unwrap(),
        "--policy",
        pol.to_str().unwrap(),
        "-q",
        "verify",
    ]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stdout(&o).starts_with("NOT compliant: "), "{}", stdout(&o));

    // Compliant lines end without trailing spaces.
    let o = on_root("verify", r, &[]);
    for l in stdout(&o).lines() {
        assert_eq!(l, l.trim_end(), "trailing space: {l:?}");
    }
}
