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
