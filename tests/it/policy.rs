//! Policy loading through the real binary: the bad-policy corpus (every error at once, with file,
//! line, column and key; exit 2; nothing changed), the drop-in order, `policy show`.

use crate::common;
use common::*;

use std::os::unix::fs::symlink;

#[test]
fn bad_policy_corpus_reports_every_error_and_changes_nothing() {
    let dir = repo().join("tests/fixtures/bad-policies");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let expects: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expects.is_empty(),
            "{} has no `# expect:` line",
            path.display()
        );
        let p = path.to_str().unwrap();

        let o = guestprep(&["policy", "check", "--policy", p]);
        assert_eq!(code(&o), 2, "{p}: {}", stderr(&o));
        let err = stderr(&o);
        for e in &expects {
            assert!(err.contains(e), "{p}: expected `{e}` in:\n{err}");
        }

        // apply with the same policy: exit 2 and the root is untouched.
        let root = example_root();
        let before = snapshot(root.path());
        let o = guestprep(&[
            "apply",
            "--root",
            root.path().to_str().unwrap(),
            "--policy",
            p,
        ]);
        assert_eq!(code(&o), 2, "{p}: {}", stderr(&o));
        assert!(stderr(&o).contains("nothing was changed"));
        assert_same(
            &before,
            &snapshot(root.path()),
            &format!("{p}: apply changed the root"),
        );
        n += 1;
    }
    assert!(n >= 10, "corpus has only {n} cases");
}

#[test]
fn shipped_policies_are_valid() {
    let o = guestprep(&["policy", "check", "--policy", policies().to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("policy valid: 11 fragment(s), sha256:"));
}

#[test]
fn missing_policy_path_is_a_usage_error() {
    let o = guestprep(&["policy", "check", "--policy", "/nonexistent/policy.toml"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("/nonexistent/policy.toml"));
}

/// The documented order: usr/lib and etc policy.d sorted together by name, etc replacing a vendor
/// file of the same name, /dev/null masking it, then etc/guestprep/policy.toml; later keys win,
/// lists replace.
#[test]
fn drop_in_order_is_as_documented() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    let vendor = r.join("usr/lib/guestprep/policy.d");
    let admin = r.join("etc/guestprep/policy.d");
    std::fs::create_dir_all(&vendor).unwrap();
    std::fs::create_dir_all(&admin).unwrap();
    std::fs::write(
        vendor.join("10-a.toml"),
        "[chrony]\nservers = ['vendor-a']\nrtcsync = true\n[sysctl]\n\"net.ipv4.ip_forward\" = 1\n",
    )
    .unwrap();
    std::fs::write(vendor.join("20-b.toml"), "[chrony]\npools = ['vendor-b']\n").unwrap();
    std::fs::write(vendor.join("30-c.toml"), "[grub]\ncmdline = ['vendor-c']\n").unwrap();
    std::fs::write(
        vendor.join("40-d.toml"),
        "[ssh]\nciphers = ['aes256-ctr']\n",
    )
    .unwrap();
    // etc: replaces 20-b, masks 30-c, and sorts between vendor files (15 < 20).
    std::fs::write(admin.join("20-b.toml"), "[chrony]\npools = ['admin-b']\n").unwrap();
    symlink("/dev/null", admin.join("30-c.toml")).unwrap();
    std::fs::write(
        admin.join("15-x.toml"),
        "[chrony]\nservers = ['admin-x1', 'admin-x2']\n",
    )
    .unwrap();
    std::fs::write(
        admin.join("50-e.toml"),
        "[sysctl]\n\"net.ipv4.ip_forward\" = 0\n",
    )
    .unwrap();
    std::fs::write(
        r.join("etc/guestprep/policy.toml"),
        "[ssh]\nciphers = ['aes128-ctr']\n",
    )
    .unwrap();

    let o = guestprep(&["policy", "show", "--json", "--root", r.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    let sources: Vec<String> = v["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    let names: Vec<String> = sources
        .iter()
        .map(|s| {
            s.strip_prefix(r.canonicalize().unwrap().to_str().unwrap())
                .unwrap_or(s)
                .to_string()
        })
        .collect();
    assert_eq!(
        names,
        [
            "/usr/lib/guestprep/policy.d/10-a.toml",
            "/etc/guestprep/policy.d/15-x.toml",
            "/etc/guestprep/policy.d/20-b.toml",
            "/usr/lib/guestprep/policy.d/40-d.toml",
            "/etc/guestprep/policy.d/50-e.toml",
            "/etc/guestprep/policy.toml",
        ]
    );
    let p = &v["policy"];
    assert_eq!(
        p["chrony"]["servers"],
        serde_json::json!(["admin-x1", "admin-x2"]),
        "list replaced, not appended"
    );
    assert_eq!(p["chrony"]["pools"], serde_json::json!(["admin-b"]));
    assert_eq!(
        p["chrony"]["rtcsync"], true,
        "key from an earlier fragment kept"
    );
    assert!(p.get("grub").is_none(), "masked fragment ignored");
    assert_eq!(p["sysctl"]["net.ipv4.ip_forward"], "0");
    assert_eq!(
        p["ssh"]["ciphers"],
        serde_json::json!(["aes128-ctr"]),
        "policy.toml last"
    );
    let origin = v["origins"]["chrony.servers"].as_str().unwrap();
    assert!(
        origin.ends_with("/etc/guestprep/policy.d/15-x.toml:2:11"),
        "{origin}"
    );

    // Human form names the origin of each value too.
    let o = guestprep(&["policy", "show", "--root", r.to_str().unwrap()]);
    assert!(stdout(&o).contains("rtcsync = true  # "), "{}", stdout(&o));
    assert!(stdout(&o).contains("10-a.toml:3:11"));
}

#[test]
fn digest_is_independent_of_fragment_layout() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(
        t.path().join("one.toml"),
        "[swap]\nenabled = false\n[sysctl]\n\"net.ipv4.ip_forward\" = 1\n",
    )
    .unwrap();
    let d = t.path().join("split");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("a.toml"), "[sysctl]\n\"net.ipv4.ip_forward\" = 1\n").unwrap();
    std::fs::write(d.join("b.toml"), "[swap]\nenabled = false\n").unwrap();
    let digest = |p: &std::path::Path| {
        let o = guestprep(&["policy", "show", "--json", "--policy", p.to_str().unwrap()]);
        json(&o)["policyDigest"].as_str().unwrap().to_string()
    };
    assert_eq!(digest(&t.path().join("one.toml")), digest(&d));
}

/// Usage problems are exit 2 with the reason, for every command, and change nothing: a `--root`
/// that does not exist, no policy anywhere, a fragment that is not UTF-8 (with line and column).
#[test]
fn usage_errors_are_exit_2_and_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let nope = dir.path().join("nope");
    let pol = policies();
    for verb in [
        &["verify"][..],
        &["apply"],
        &["seal", "--yes"],
        &["policy", "show"],
        &["policy", "check"],
    ] {
        let mut args: Vec<&str> = verb.to_vec();
        args.extend([
            "--root",
            nope.to_str().unwrap(),
            "--policy",
            pol.to_str().unwrap(),
        ]);
        let o = guestprep(&args);
        assert_fails(&o, 2, "no such directory");
    }

    // An empty root: no fragment anywhere. Not "compliant: 0 items".
    let empty = tempfile::tempdir().unwrap();
    let r = empty.path().to_str().unwrap();
    for verb in [&["verify"][..], &["apply"], &["policy", "check"]] {
        let mut args: Vec<&str> = verb.to_vec();
        args.extend(["--root", r]);
        let o = guestprep(&args);
        assert_fails(&o, 2, "no policy: no fragment found in");
        assert!(
            stderr(&o).contains("usr/lib/guestprep/policy.d"),
            "{}",
            stderr(&o)
        );
    }
    assert_eq!(
        std::fs::read_dir(empty.path()).unwrap().count(),
        0,
        "nothing written"
    );

    // Not UTF-8: exit 2 with line and column, for apply too, and the root untouched.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, b"[chrony]\nservers = [\"t\xffx\"]\n").unwrap();
    let root = example_root();
    let before = snapshot(root.path());
    for verb in ["policy", "apply"] {
        let mut args = if verb == "policy" {
            vec!["policy", "check"]
        } else {
            vec!["apply", "--root", root.path().to_str().unwrap()]
        };
        args.extend(["--policy", bad.to_str().unwrap()]);
        let o = guestprep(&args);
        assert_fails(&o, 2, "bad.toml:2:14: not UTF-8 (byte 0xff)");
    }
    assert_same(
        &before,
        &snapshot(root.path()),
        "apply with a non-UTF-8 policy",
    );

    // A duplicate key names the key and both lines; an unterminated string is one error.
    let dup = dir.path().join("dup.toml");
    std::fs::write(&dup, "[sysctl]\n\"a.b\" = 1\nx = 2\n\"a.b\" = 3\n").unwrap();
    let o = guestprep(&["policy", "check", "--policy", dup.to_str().unwrap()]);
    assert_fails(
        &o,
        2,
        "dup.toml:4:1: TOML syntax: duplicate key `a.b`: first defined at line 2",
    );
    let unterminated = dir.path().join("unterminated.toml");
    std::fs::write(
        &unterminated,
        "[chrony]\nservers = [\"a]\npools = []\n[ssh]\nciphers = [\"x\"\n",
    )
    .unwrap();
    let o = guestprep(&[
        "policy",
        "check",
        "--policy",
        unterminated.to_str().unwrap(),
    ]);
    assert_fails(&o, 2, "unterminated.toml:2:");
    assert!(
        stderr(&o).contains("invalid policy: 1 error\n"),
        "{}",
        stderr(&o)
    );
}

/// `policy show` prints TOML that parses back to the same policy, whatever the strings hold
/// (the fuzz target checks the same property on generated input).
#[test]
fn policy_show_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let tricky = dir.path().join("50-tricky.toml");
    std::fs::write(
        &tricky,
        "[[files]]\npath = \"/etc/x.conf\"\ncontent = \"a '''b''' \\\"\\\"\\\" c\\\\d\\n\\ttab \\u001b\\n\"\n",
    )
    .unwrap();
    for pol in [policies(), tricky.clone()] {
        let o = guestprep(&["policy", "show", "--policy", pol.to_str().unwrap()]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let shown = dir.path().join("shown.toml");
        std::fs::write(&shown, &o.stdout).unwrap();
        let digest = |p: &std::path::Path| {
            let o = guestprep(&["policy", "show", "--json", "--policy", p.to_str().unwrap()]);
            assert_eq!(code(&o), 0, "{}\n{}", stderr(&o), stdout(&o));
            json(&o)["policyDigest"].as_str().unwrap().to_string()
        };
        assert_eq!(digest(&pol), digest(&shown), "{}", stdout(&o));
    }
}

/// `KEY_add` appends to a list of earlier fragments instead of replacing it: strings and arrays
/// of tables alike, each element keeping its own origin; an element already there is not added
/// twice, and a later plain `KEY` still replaces everything.
#[test]
fn add_suffix_appends_to_lists() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("10-base.toml"),
        "[ssh]\nciphers = [\"chacha20-poly1305@openssh.com\"]\n\n[modules]\nload = [\"overlay\"]\n\n[[files]]\npath = \"/etc/a\"\ncontent = \"a\\n\"\n",
    )
    .unwrap();
    std::fs::write(
        d.join("20-site.toml"),
        "[ssh]\nciphers_add = [\"aes256-gcm@openssh.com\", \"chacha20-poly1305@openssh.com\"]\n\n[modules]\nload_add = [\"br_netfilter\"]\n\n[[files_add]]\npath = \"/etc/b\"\ncontent = \"b\\n\"\n",
    )
    .unwrap();
    let o = guestprep(&["policy", "show", "--json", "--policy", d.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(
        v["policy"]["ssh"]["ciphers"],
        serde_json::json!(["chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com"])
    );
    assert_eq!(
        v["policy"]["modules"]["load"],
        serde_json::json!(["overlay", "br_netfilter"])
    );
    let paths: Vec<&str> = v["policy"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/etc/a", "/etc/b"]);
    // The human rendering names each element's own file.
    let o = guestprep(&["policy", "show", "--policy", d.to_str().unwrap()]);
    assert!(stdout(&o).contains("20-site.toml"), "{}", stdout(&o));
    // A later plain key replaces what came before, additions included.
    std::fs::write(d.join("30-final.toml"), "[modules]\nload = [\"i915\"]\n").unwrap();
    let o = guestprep(&["policy", "show", "--json", "--policy", d.to_str().unwrap()]);
    assert_eq!(
        json(&o)["policy"]["modules"]["load"],
        serde_json::json!(["i915"])
    );
    // `_add` to a key that is not a list is an error at the line that wrote it.
    std::fs::write(d.join("40-bad.toml"), "[ssh]\nrestart_add = [true]\n").unwrap();
    let o = guestprep(&["policy", "check", "--policy", d.to_str().unwrap()]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("40-bad.toml:2:15: `ssh.restart`: expected a boolean"),
        "{}",
        stderr(&o)
    );
}

/// The fuzz target's property with `_add`: a fragment merged over itself is the same policy.
#[test]
fn add_suffix_merged_over_itself_changes_nothing() {
    use guestprep::policy::load_texts;
    use std::path::PathBuf;
    let text = "[modules]\nload = [\"overlay\"]\nload_add = [\"br_netfilter\", \"overlay\"]\n\n[[files_add]]\npath = \"/etc/b\"\ncontent = \"b\\n\"\n";
    let one = load_texts(&[(PathBuf::from("a.toml"), text.to_string())]).unwrap();
    let two = load_texts(&[
        (PathBuf::from("a.toml"), text.to_string()),
        (PathBuf::from("b.toml"), text.to_string()),
    ])
    .unwrap();
    assert_eq!(one.digest(), two.digest());
    assert_eq!(one.policy.files.len(), 1);
    assert_eq!(
        one.policy.modules.unwrap().load,
        ["overlay", "br_netfilter"]
    );
}

/// The issue-26 case: the seed-template example dropped into /etc/guestprep/policy.d next to the
/// shipped (vendor) fragments. 70-containerd.toml sorts after the example's 50-files.toml; its
/// `[[files]]` entry replaces the example's entry of the same path and keeps the example's other
/// entries (it used to replace the whole list, silently). `policy show` names each entry's
/// fragment, and `policy check` warns about the lists of plain values a fragment replaced.
#[test]
fn lists_of_tables_merge_by_key_and_drops_are_warned_about() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    let vendor = r.join("usr/lib/guestprep/policy.d");
    let admin = r.join("etc/guestprep/policy.d");
    std::fs::create_dir_all(&vendor).unwrap();
    std::fs::create_dir_all(&admin).unwrap();
    copy_tree(&policies(), &vendor);
    copy_tree(&repo().join("examples/seed-template"), &admin);
    let root = r.to_str().unwrap();
    let o = guestprep(&["policy", "show", "--json", "--root", root]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    let files: Vec<(&str, &str)> = v["policy"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let origin = v["origins"][format!("files[{i}]")].as_str().unwrap();
            let name = origin.rsplit('/').next().unwrap();
            (f["path"].as_str().unwrap(), name)
        })
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(files[0].0, "/etc/containerd/config.toml");
    assert!(files[0].1.starts_with("70-containerd.toml:"), "{files:?}");
    assert_eq!(files[1].0, "/etc/logrotate.d/custom-logs");
    assert!(files[1].1.starts_with("50-files.toml:"), "{files:?}");
    // The human form names each entry's fragment on its header.
    let o = guestprep(&["policy", "show", "--root", root]);
    let shown = stdout(&o);
    assert!(
        shown.contains("[[files]]  # ") && shown.contains("70-containerd.toml:"),
        "{shown}"
    );
    // policy check: valid, with a warning for each list of plain values a later fragment
    // replaced without some of an earlier one's elements.
    let o = guestprep(&["policy", "check", "--root", root]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let err = stderr(&o);
    // The vendor's 50-ssh.toml sorts after the example's 40-ssh.toml: its ciphers replace the
    // example's, without the script's aes128-gcm.
    assert!(
        err.contains(
            "/usr/lib/guestprep/policy.d/50-ssh.toml:8:1: `ssh.ciphers`: replaces the list from "
        ) && err.contains("/etc/guestprep/policy.d/40-ssh.toml:")
            && err.contains(
                "dropping \"aes128-gcm@openssh.com\" (`ciphers_add` adds to the list instead)"
            ),
        "{err}"
    );
    assert!(
        !err.contains("`files`"),
        "no [[files]] entry is dropped: {err}"
    );
}

/// A later fragment changes one entry of each keyed list and removes another, by key, and the
/// rest stay: `[[files]]` by path, `[[packages.deb]]` by name, `[[units.dropins]]` by unit and
/// name, `[[apt.sources]]` by name, `[[waivers]]` by their items. `KEY_replace` replaces a list
/// whole, with a warning naming what it dropped; a removal of nothing is a warning too.
#[test]
fn a_later_fragment_changes_or_removes_one_entry_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let deb = |name: &str, version: &str| {
        format!(
            "[[packages.deb]]\nname = \"{name}\"\nversion = \"{version}\"\nurl = \"https://example.org/{name}_{version}_amd64.deb\"\nsha256 = \"{}\"\n",
            "a".repeat(64)
        )
    };
    let src = |name: &str, suite: &str| {
        format!(
            "[[apt.sources]]\nname = \"{name}\"\nuris = [\"http://deb.debian.org/debian\"]\nsuites = [\"{suite}\"]\n"
        )
    };
    let dropin = |unit: &str, name: &str, content: &str| {
        format!(
            "[[units.dropins]]\nunit = \"{unit}\"\nname = \"{name}\"\ncontent = \"{content}\"\n"
        )
    };
    let base = [
        "[[files]]\npath = \"/etc/a\"\ncontent = \"a\\n\"\n".to_string(),
        "[[files]]\npath = \"/etc/b\"\ncontent = \"b\\n\"\n".into(),
        "[[files]]\npath = \"/etc/c\"\ncontent = \"c\\n\"\n".into(),
        deb("one", "1.0"),
        deb("two", "1.0"),
        dropin("a.service", "x", "[Unit]\\n"),
        dropin("b.service", "x", "[Unit]\\n"),
        src("backports", "trixie-backports"),
        src("site", "trixie"),
        "[[waivers]]\nitems = [\"sysctl:*\", \"unit:*\"]\nreason = \"base\"\n".into(),
        "[[waivers]]\nitems = [\"grub:*\"]\nreason = \"base\"\n".into(),
    ]
    .join("\n");
    std::fs::write(d.join("10-base.toml"), base).unwrap();
    let site = [
        "[[files]]\npath = \"/etc/b\"\ncontent = \"site\\n\"\n".to_string(),
        "[[files]]\npath = \"/etc/c\"\nremove = true\n".into(),
        "[[files]]\npath = \"/etc/nothing\"\nremove = true\n".into(),
        deb("one", "2.0"),
        dropin("b.service", "x", "[Service]\\n"),
        "[[units.dropins]]\nunit = \"a.service\"\nname = \"x\"\nremove = true\n".into(),
        src("site", "trixie-updates"),
        "[[waivers]]\nitems = [\"unit:*\", \"sysctl:*\"]\nreason = \"site\"\n".into(),
    ]
    .join("\n");
    std::fs::write(d.join("20-site.toml"), site).unwrap();
    let p = d.to_str().unwrap();
    let o = guestprep(&["policy", "show", "--json", "--policy", p]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    let pol = &v["policy"];
    let field = |list: &serde_json::Value, k: &str| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|e| e[k].to_string().trim_matches('"').to_string())
            .collect()
    };
    assert_eq!(field(&pol["files"], "path"), ["/etc/a", "/etc/b"]);
    assert_eq!(pol["files"][1]["content"], "site\n");
    assert_eq!(field(&pol["packages"]["deb"], "version"), ["2.0", "1.0"]);
    assert_eq!(field(&pol["units"]["dropins"], "unit"), ["b.service"]);
    assert_eq!(pol["units"]["dropins"][0]["content"], "[Service]\n");
    assert_eq!(
        field(&pol["apt"]["sources"], "suites"),
        ["[\"trixie-backports\"]", "[\"trixie-updates\"]"]
    );
    assert_eq!(field(&pol["waivers"], "reason"), ["site", "base"]);
    let o = guestprep(&["policy", "check", "--policy", p]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("`files`: `remove = true` for path = \"/etc/nothing\": no earlier fragment has this entry, nothing is removed"),
        "{err}"
    );
    assert_eq!(err.matches("`remove = true`").count(), 1, "{err}");
    assert!(
        !err.contains("replaces the list"),
        "nothing else dropped: {err}"
    );

    // `files_replace`: the whole list, and policy check says what it dropped.
    std::fs::write(
        d.join("30-final.toml"),
        "[[files_replace]]\npath = \"/etc/z\"\ncontent = \"z\\n\"\n",
    )
    .unwrap();
    let o = guestprep(&["policy", "check", "--policy", p]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("30-final.toml:1:3: `files_replace`: replaces the list from ")
            && err.contains("dropping path = \"/etc/a\" (")
            && err.contains("path = \"/etc/b\" ("),
        "{err}"
    );
    let o = guestprep(&["policy", "show", "--json", "--policy", p]);
    assert_eq!(field(&json(&o)["policy"]["files"], "path"), ["/etc/z"]);
}

#[test]
fn a_fragment_applies_only_where_its_platform_says() {
    let ubuntu = example_root();
    std::fs::write(
        ubuntu.path().join("etc/os-release"),
        "ID=ubuntu\nVERSION_ID=\"24.04\"\nPRETTY_NAME=\"Ubuntu 24.04.1 LTS\"\n",
    )
    .unwrap();
    let r = ubuntu.path().to_str().unwrap();
    let p = policies();
    let o = guestprep(&[
        "policy",
        "show",
        "--root",
        r,
        "--policy",
        p.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let shown = stdout(&o);
    assert!(shown.contains("linux-headers-virtual"), "{shown}");
    assert!(
        !shown.contains("linux-headers-amd64"),
        "Debian's fragment applied on Ubuntu: {shown}"
    );
    assert!(shown.contains("never_restart"), "{shown}");
    // On Debian (the example root's own os-release), the other way round.
    let debian = example_root();
    let o = guestprep(&[
        "policy",
        "show",
        "--root",
        debian.path().to_str().unwrap(),
        "--policy",
        p.to_str().unwrap(),
    ]);
    assert!(
        stdout(&o).contains("linux-headers-amd64") && !stdout(&o).contains("linux-headers-virtual")
    );
    // A malformed [platform] is an error naming file and line.
    let bad = tempfile::tempdir().unwrap();
    let f = bad.path().join("x.toml");
    std::fs::write(
        &f,
        "[platform]\nos = [\"Ubuntu 24.04\"]\n\n[sysctl]\n\"vm.swappiness\" = 10\n",
    )
    .unwrap();
    let o = guestprep(&["policy", "check", "--policy", f.to_str().unwrap()]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("x.toml:2:7: `platform.os[0]`"),
        "{}",
        stderr(&o)
    );
}
