//! Tests of the sshd_config reader on temp roots (and, for the bounds, in memory). Each asserts
//! the reading and how much work it took (files read, walks through a file's lines), not time.
//! `tests/it/sshd.rs` holds the same cases against the real sshd.

use super::model::{MemTree, sshd_algorithm};
use super::*;
use crate::engine::System;
use crate::report::Status;
use crate::root::Root;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Writes `text` at `abs` inside the root.
    fn file(&self, abs: &str, text: &str) -> &Self {
        let p = self.dir.path().join(abs.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        self
    }

    fn sys(&self) -> System {
        System::new(Root::offline(self.dir.path()).unwrap())
    }

    fn read(&self) -> Reading {
        read(&self.sys(), "/etc/ssh/sshd_config").unwrap().unwrap()
    }
}

/// `/etc/ssh/sshd_config` → f1 → … → f`n`, the last setting `last`.
fn chain(n: usize, last: &str) -> Fixture {
    let f = Fixture::new();
    f.file("/etc/ssh/sshd_config", "Include chain/f1\n");
    for i in 1..n {
        f.file(
            &format!("/etc/ssh/chain/f{i}"),
            &format!("Include chain/f{}\n", i + 1),
        );
    }
    f.file(&format!("/etc/ssh/chain/f{n}"), last);
    f
}

fn will_not_start(r: &Reading) -> &str {
    match &r.problem {
        Some(Problem::WillNotStart(why)) => why,
        other => panic!("expected sshd not to start, got {other:?}"),
    }
}

#[test]
fn a_file_that_includes_itself_stops_sshd_and_is_read_once() {
    let f = Fixture::new();
    f.file(
        "/etc/ssh/sshd_config",
        "Ciphers aes256-ctr\nInclude /etc/ssh/sshd_config\n",
    );
    let r = f.read();
    let why = will_not_start(&r);
    assert!(
        why.contains("Too many recursive configuration includes"),
        "{why}"
    );
    assert!(
        why.contains("/etc/ssh/sshd_config → /etc/ssh/sshd_config"),
        "{why}"
    );
    assert_eq!((r.files, r.walks), (1, 1));
}

#[test]
fn a_glob_that_matches_its_own_file_stops_sshd_without_exponential_work() {
    // Ten drop-ins, each including the whole directory: sshd recurses into a cycle at once; the
    // reader of depth 8 that this replaces went through 10^8 files.
    let f = Fixture::new();
    f.file(
        "/etc/ssh/sshd_config",
        "Include /etc/ssh/sshd_config.d/*.conf\n",
    );
    for i in 0..10 {
        f.file(
            &format!("/etc/ssh/sshd_config.d/{i:02}.conf"),
            "Include /etc/ssh/sshd_config.d/*\n",
        );
    }
    let r = f.read();
    let why = will_not_start(&r);
    assert!(
        why.contains("/etc/ssh/sshd_config.d/00.conf includes itself"),
        "{why}"
    );
    assert_eq!((r.files, r.walks), (2, 2));
}

#[test]
fn a_directory_a_glob_matches_reads_as_an_empty_file() {
    let f = Fixture::new();
    f.file("/etc/ssh/sshd_config", "Include /etc/ssh/d/*\n")
        .file("/etc/ssh/d/a.dir/x.conf", "Ciphers aes128-ctr\n")
        .file("/etc/ssh/d/b.conf", "Ciphers aes256-ctr\n");
    let r = f.read();
    assert_eq!(r.problem, None);
    assert_eq!(r.get("Ciphers").unwrap().at, "/etc/ssh/d/b.conf:1");
    assert_eq!(r.files, 3, "sshd_config, the directory, b.conf");
}

#[test]
fn sixteen_levels_are_read_and_seventeen_stop_sshd() {
    let r = chain(16, "Ciphers aes128-ctr\n").read();
    assert_eq!(r.problem, None);
    let s = r.get("ciphers").unwrap();
    assert_eq!(
        (s.value.as_str(), s.at.as_str()),
        ("aes128-ctr", "/etc/ssh/chain/f16:1")
    );
    assert_eq!((r.files, r.walks), (17, 17));
    // An Include at level 16 that matches nothing is no level 17.
    let r = chain(16, "Include chain/none*\n").read();
    assert_eq!(r.problem, None);

    let r = chain(17, "Ciphers aes128-ctr\n").read();
    let why = will_not_start(&r);
    assert!(
        why.contains("/etc/ssh/chain/f17 is the 17th level of Include"),
        "{why}"
    );
    assert!(r.get("ciphers").is_none(), "nothing from beyond the limit");
    assert_eq!(r.files, 17, "f17 itself is never read");
}

#[test]
fn a_weak_cipher_ten_levels_deep_is_drift_and_too_deep_is_an_error_item() {
    let policy = crate::policy::Ssh {
        ciphers: vec!["aes256-gcm@openssh.com".into()],
        ..Default::default()
    };
    let check = |f: &Fixture| {
        let items = super::super::ssh::resources(&policy);
        let eff = items.iter().find(|r| r.id() == "ssh:effective").unwrap();
        eff.check(&f.sys()).unwrap()
    };
    let obs = check(&chain(10, "Ciphers 3des-cbc\n"));
    assert_eq!(obs.status, Status::Drift, "{}", obs.message);
    assert!(
        obs.message
            .contains("Ciphers is 3des-cbc from /etc/ssh/chain/f10:1"),
        "{}",
        obs.message
    );
    let obs = check(&chain(17, "Ciphers aes256-gcm@openssh.com\n"));
    assert_eq!(obs.status, Status::Error);
    assert!(
        obs.message.starts_with("sshd will not start"),
        "{}",
        obs.message
    );
}

#[test]
fn a_file_included_twice_at_every_level_is_gone_through_once() {
    // Each level includes the next twice: sshd parses 2^13 - 1 files; the reader reads 13 once.
    let f = Fixture::new();
    f.file("/etc/ssh/sshd_config", "Include l/1 l/1\n");
    for i in 1..12 {
        f.file(
            &format!("/etc/ssh/l/{i}"),
            &format!("Include l/{0}\nInclude l/{0}\n", i + 1),
        );
    }
    f.file("/etc/ssh/l/12", "MaxAuthTries 2\n");
    let r = f.read();
    assert_eq!(r.problem, None);
    assert_eq!(r.get("maxauthtries").unwrap().at, "/etc/ssh/l/12:1");
    assert_eq!((r.files, r.walks), (13, 13));
    // sshd's own algorithm, file by file: the same values, 2^13 - 1 parses.
    let main = "/etc/ssh/sshd_config";
    assert_eq!(sshd_algorithm(&f.sys(), main, (1 << 13) - 2), None);
    let (settings, starts) = sshd_algorithm(&f.sys(), main, (1 << 13) - 1).unwrap();
    assert_eq!((settings, starts), (r.settings, true));
}

#[test]
fn the_depth_below_a_file_counts_wherever_it_is_included_again() {
    // `deep` has 10 levels below it: fine at level 1, too deep at level 8 (sshd reads it again
    // there; the reader knows its depth already).
    let f = chain(11, "Ciphers aes128-ctr\n");
    f.file("/etc/ssh/sshd_config", "Include chain/f1\nInclude x/1\n");
    for i in 1..7 {
        f.file(
            &format!("/etc/ssh/x/{i}"),
            &format!("Include x/{}\n", i + 1),
        );
    }
    f.file("/etc/ssh/x/7", "Include chain/f1\n");
    let r = f.read();
    let why = will_not_start(&r);
    assert!(
        why.contains("/etc/ssh/chain/f1, at Include level 8") && why.contains("10 levels"),
        "{why}"
    );
    assert_eq!(
        r.walks, 19,
        "sshd_config, 11 in the chain, 7 in x/: chain/f1 not again"
    );
}

#[test]
fn a_thousand_drop_ins_are_each_read_once() {
    let f = Fixture::new();
    f.file(
        "/etc/ssh/sshd_config",
        "Include /etc/ssh/sshd_config.d/*.conf\nPermitRootLogin yes\n",
    );
    for i in 0..1000 {
        f.file(
            &format!("/etc/ssh/sshd_config.d/{i:04}.conf"),
            &format!("ClientAliveInterval {i}\nSetting{i} x\n"),
        );
    }
    let r = f.read();
    assert_eq!(r.problem, None);
    assert_eq!(r.get("clientaliveinterval").unwrap().value, "0");
    assert_eq!(
        r.get("setting999").unwrap().at,
        "/etc/ssh/sshd_config.d/0999.conf:2"
    );
    assert_eq!(
        r.get("permitrootlogin").unwrap().at,
        "/etc/ssh/sshd_config:2"
    );
    assert_eq!((r.files, r.walks), (1001, 1001));
}

#[test]
fn a_bracket_class_selects_files_as_sshds_glob_does() {
    let f = Fixture::new();
    f.file("/etc/ssh/sshd_config", "Include d/[ab].conf\n")
        .file("/etc/ssh/d/0.conf", "Ciphers aes192-ctr\n")
        .file("/etc/ssh/d/b.conf", "Ciphers aes128-ctr\n")
        .file("/etc/ssh/d/c.conf", "Ciphers aes256-ctr\n");
    let r = f.read();
    assert_eq!(r.get("ciphers").unwrap().at, "/etc/ssh/d/b.conf:1");
    assert_eq!(r.files, 2);
}

#[test]
fn match_ends_with_its_file_and_match_all_is_global_again() {
    let f = Fixture::new();
    f.file("/etc/ssh/sshd_config", "Include a.conf b.conf\nMatch user bob\nX11Forwarding yes\nInclude c.conf\nMatch all\nMaxAuthTries 3\n")
        .file("/etc/ssh/a.conf", "Match user bob\nPermitRootLogin no\n")
        .file("/etc/ssh/b.conf", "PermitRootLogin yes\n")
        .file("/etc/ssh/c.conf", "Match all\nClientAliveInterval 5\n");
    let r = f.read();
    assert_eq!(r.problem, None);
    assert_eq!(r.get("permitrootlogin").unwrap().at, "/etc/ssh/b.conf:1");
    assert!(r.get("x11forwarding").is_none());
    assert!(
        r.get("clientaliveinterval").is_none(),
        "inside a Match, an included Match all stays a Match"
    );
    assert_eq!(r.get("maxauthtries").unwrap().at, "/etc/ssh/sshd_config:6");
}

#[test]
fn what_sshd_refuses_is_named() {
    let f = Fixture::new();
    f.file("/etc/ssh/sshd_config", "Include d/*\n");
    std::fs::create_dir_all(f.dir.path().join("etc/ssh/d")).unwrap();
    std::os::unix::fs::symlink("/nowhere", f.dir.path().join("etc/ssh/d/x.conf")).unwrap();
    let why = will_not_start(&f.read()).to_string();
    assert!(
        why.contains("/etc/ssh/d/x.conf is included but cannot be opened"),
        "{why}"
    );

    for (text, says) in [
        (
            "PermitRootLogin\n",
            "line 1: no argument after keyword \"PermitRootLogin\"",
        ),
        ("Include \"a.conf\n", "line 1: invalid quotes"),
        ("Include # nothing\n", "Include missing filename argument"),
        ("Match all user x\n", "'all' cannot be combined"),
    ] {
        let f = Fixture::new();
        f.file("/etc/ssh/sshd_config", text);
        let r = f.read();
        assert!(
            will_not_start(&r).contains(says),
            "{text:?}: {:?}",
            r.problem
        );
    }
}

#[test]
fn quoted_and_relative_include_arguments() {
    let f = Fixture::new();
    f.file(
        "/etc/ssh/sshd_config",
        "Include \"my dir/*.conf\" other\\ dir/x.conf\n",
    )
    .file("/etc/ssh/my dir/a.conf", "Ciphers aes128-ctr\n")
    .file("/etc/ssh/other dir/x.conf", "MACs hmac-sha2-256\n");
    let r = f.read();
    assert_eq!(r.get("ciphers").unwrap().at, "/etc/ssh/my dir/a.conf:1");
    assert_eq!(r.get("macs").unwrap().at, "/etc/ssh/other dir/x.conf:1");
}

#[test]
fn the_bounds_stop_the_reading_with_a_limit() {
    let mut t = MemTree::default();
    t.files.insert(
        "/etc/ssh/sshd_config".into(),
        "Include /etc/ssh/d/*\n".into(),
    );
    for i in 0..MAX_FILES {
        t.files.insert(format!("/etc/ssh/d/{i:05}"), String::new());
    }
    let r = read(&t, "/etc/ssh/sshd_config").unwrap().unwrap();
    assert!(
        matches!(&r.problem, Some(Problem::Limit(m)) if m.contains("more than 4096 files")),
        "{:?}",
        r.problem
    );
    assert_eq!(r.files, MAX_FILES);
    // The same tree without the main file's 4096th drop-in is read whole.
    t.files.remove("/etc/ssh/d/04095");
    let r = read(&t, "/etc/ssh/sshd_config").unwrap().unwrap();
    assert_eq!((r.problem, r.files), (None, MAX_FILES));
}

#[test]
fn a_missing_main_file_is_none() {
    let f = Fixture::new();
    assert!(read(&f.sys(), "/etc/ssh/sshd_config").unwrap().is_none());
}
