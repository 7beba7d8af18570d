//! Fuzz target: sshd's configuration as guestprep reads it (`resources::sshd_config`), on a tree
//! in memory. The input is the main file, then further files, each after a line `@@ PATH` (under
//! /etc/ssh unless absolute; a PATH ending in `/` is an empty directory). Properties, for any
//! input:
//! - the reading ends, without a panic or an error (the tree cannot fail);
//! - it reads each file (or directory) once and goes through a file's lines at most twice;
//! - where sshd's own algorithm (every file parsed again at every Include) finishes within a
//!   budget, it agrees: sshd starts exactly when guestprep finds no reason it would not, and then
//!   with the same first values from the same file:line;
//! - every first value comes from a file of the tree, at a line it has.
#![no_main]

use guestprep::resources::sshd_config::model::{MemTree, sshd_algorithm};
use guestprep::resources::sshd_config::{MAX_FILES, Problem, normalize, read};
use libfuzzer_sys::fuzz_target;

const MAIN: &str = "/etc/ssh/sshd_config";

fn tree(text: &str) -> MemTree {
    let mut t = MemTree::default();
    let mut path = MAIN.to_string();
    let mut body = String::new();
    for line in text.split_inclusive('\n') {
        if let Some(p) = line.strip_prefix("@@ ") {
            t.files.entry(path).or_insert(body);
            body = String::new();
            let p = p.trim_end_matches('\n');
            let abs = if p.starts_with('/') {
                p.to_string()
            } else {
                format!("/etc/ssh/{p}")
            };
            path = normalize(&abs);
            if p.ends_with('/') && path != "/" {
                path.push('/');
            }
        } else {
            body.push_str(line);
        }
    }
    t.files.entry(path).or_insert(body);
    t.files.remove("/");
    t
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let t = tree(text);
    let r = read(&t, MAIN)
        .expect("an in-memory tree cannot fail")
        .expect("the main file is always there");
    assert!(r.files <= MAX_FILES, "{} files", r.files);
    assert!(r.walks <= 2 * r.files, "{} walks of {} files", r.walks, r.files);
    for s in &r.settings {
        let (file, line) = s.at.rsplit_once(':').expect("file:line");
        let n: usize = line.parse().expect("a line number");
        let body = t.files.get(&normalize(file)).unwrap_or_else(|| panic!("{} is no file", s.at));
        assert!(n >= 1 && n <= body.split('\n').count(), "{}", s.at);
    }
    if matches!(r.problem, Some(Problem::Limit(_))) {
        return;
    }
    if let Some((settings, starts)) = sshd_algorithm(&t, MAIN, 300) {
        assert_eq!(starts, r.problem.is_none(), "sshd starts: {starts}; guestprep: {:?}", r.problem);
        if starts {
            assert_eq!(settings, r.settings, "first values");
        }
    }
});
