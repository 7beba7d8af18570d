//! Unit tests of the fragment merge: keyed lists, removals, `_add`/`_replace`, the warnings.

use super::*;
use std::path::Path;

fn parse(name: &str, text: &str) -> Table {
    super::super::tree::parse_fragment(Path::new(name), text).expect("valid TOML")
}

fn merged(frags: &[(&str, &str)]) -> (Table, Notes) {
    let mut t = Table::default();
    let mut notes = Notes::default();
    for (n, text) in frags {
        t.merge_noted(parse(n, text), &mut notes);
    }
    (t, notes)
}

fn list<'a>(t: &'a Table, path: &[&str]) -> &'a [Node] {
    let mut e = t.get(path[0]).unwrap();
    for k in &path[1..] {
        let Value::Table(sub) = &e.node.value else {
            panic!("{k}")
        };
        e = sub.get(k).unwrap();
    }
    match &e.node.value {
        Value::Array(a) => a,
        _ => panic!("not a list"),
    }
}

fn field(n: &Node, k: &str) -> String {
    let Value::Table(t) = &n.value else { panic!() };
    to_toml(&t.get(k).unwrap().node)
}

#[test]
fn plain_lists_replace_and_warn_about_what_they_drop() {
    let (t, notes) = merged(&[
        ("a.toml", "[chrony]\nservers=['a','b']\nrtcsync=true\n"),
        ("b.toml", "[chrony]\nservers=['c', 'a']\n"),
    ]);
    let Value::Table(c) = &t.get("chrony").unwrap().node.value else {
        panic!()
    };
    let servers = list(&t, &["chrony", "servers"]);
    assert_eq!(servers.len(), 2);
    assert_eq!(servers[0].origin.file.to_str(), Some("b.toml"));
    assert_eq!(
        c.get("rtcsync").unwrap().node.origin.file.to_str(),
        Some("a.toml")
    );
    assert_eq!(notes.warnings.len(), 1, "{:?}", notes.warnings);
    let w = notes.warnings[0].to_string();
    assert_eq!(
        w,
        "b.toml:2:1: `chrony.servers`: replaces the list from a.toml:2:9, dropping \"b\" (`servers_add` adds to the list instead)"
    );
    // Nothing dropped, nothing said.
    let (_, notes) = merged(&[("a.toml", "x=['a']\n"), ("b.toml", "x=['a','b']\n")]);
    assert!(notes.warnings.is_empty());
}

#[test]
fn keyed_lists_merge_by_key_in_place() {
    let (t, notes) = merged(&[
        (
            "a.toml",
            "[[files]]\npath='/a'\ncontent='1'\n[[files]]\npath='/b'\ncontent='2'\n",
        ),
        (
            "b.toml",
            "[[files]]\npath='/c'\ncontent='3'\n[[files]]\npath='/a'\nstate='absent'\n",
        ),
    ]);
    let f = list(&t, &["files"]);
    let paths: Vec<String> = f.iter().map(|n| field(n, "path")).collect();
    assert_eq!(paths, ["\"/a\"", "\"/b\"", "\"/c\""]);
    assert_eq!(f[0].origin.file.to_str(), Some("b.toml"), "replaced whole");
    assert_eq!(field(&f[0], "state"), "\"absent\"");
    let Value::Table(a) = &f[0].value else {
        panic!()
    };
    assert!(
        a.get("content").is_none(),
        "no field of the old entry stays"
    );
    assert_eq!(f[1].origin.file.to_str(), Some("a.toml"));
    assert!(notes.warnings.is_empty() && notes.errors.is_empty());
}

#[test]
fn nested_and_two_field_keys() {
    let (t, _) = merged(&[
        (
            "a.toml",
            "[[units.dropins]]\nunit='a.service'\nname='x'\ncontent='1'\n[[units.dropins]]\nunit='b.service'\nname='x'\ncontent='2'\n[[packages.deb]]\nname='p'\nversion='1'\n",
        ),
        (
            "b.toml",
            "[[units.dropins]]\nunit='b.service'\nname='x'\ncontent='3'\n[[packages.deb]]\nname='q'\nversion='2'\n[[waivers]]\nitems=['b','a']\nreason='r'\n",
        ),
        ("c.toml", "[[waivers]]\nitems=['a','b']\nreason='s'\n"),
    ]);
    let d = list(&t, &["units", "dropins"]);
    assert_eq!(d.len(), 2);
    assert_eq!(field(&d[1], "content"), "\"3\"");
    assert_eq!(list(&t, &["packages", "deb"]).len(), 2);
    let w = list(&t, &["waivers"]);
    assert_eq!(
        w.len(),
        1,
        "the same items in another order are the same waiver"
    );
    assert_eq!(field(&w[0], "reason"), "\"s\"");
}

#[test]
fn remove_takes_one_entry_out() {
    let (t, notes) = merged(&[
        (
            "a.toml",
            "[[files]]\npath='/a'\ncontent='1'\n[[files]]\npath='/b'\ncontent='2'\n",
        ),
        (
            "b.toml",
            "[[files]]\npath='/a'\nremove=true\n[[files]]\npath='/z'\nremove=true\n",
        ),
    ]);
    let paths: Vec<String> = list(&t, &["files"])
        .iter()
        .map(|n| field(n, "path"))
        .collect();
    assert_eq!(paths, ["\"/b\""]);
    assert!(notes.errors.is_empty());
    assert_eq!(notes.warnings.len(), 1);
    assert!(
        notes.warnings[0]
            .message
            .contains("`remove = true` for path = \"/z\": no earlier fragment has this entry"),
        "{}",
        notes.warnings[0]
    );
    // `remove = false` is an ordinary entry.
    let (t, _) = merged(&[(
        "a.toml",
        "[[files]]\npath='/a'\ncontent='1'\nremove=false\n",
    )]);
    let Value::Table(f) = &list(&t, &["files"])[0].value else {
        panic!()
    };
    assert!(f.get("remove").is_none());
}

#[test]
fn a_removal_that_contradicts_itself_is_an_error() {
    let (_, notes) = merged(&[(
        "a.toml",
        "[[files]]\npath='/a'\ncontent='1'\n[[files]]\npath='/a'\nremove=true\n",
    )]);
    assert_eq!(notes.errors.len(), 1);
    assert!(
        notes.errors[0]
            .message
            .contains("which this fragment also sets (at a.toml:")
    );
    let (_, notes) = merged(&[("a.toml", "[[files]]\npath='/a'\nremove=true\nmode='0644'\n")]);
    assert_eq!(
        notes.errors[0].message,
        "an entry with `remove = true` has only its key (path): `mode` would be ignored"
    );
    let (_, notes) = merged(&[("a.toml", "[[files]]\npath='/a'\nremove='yes'\n")]);
    assert_eq!(notes.errors[0].key, "files[0].remove");
}

#[test]
fn replace_and_add_on_keyed_lists() {
    let a = "[[files]]\npath='/a'\ncontent='1'\n[[files]]\npath='/b'\ncontent='2'\n";
    let (t, notes) = merged(&[
        ("a.toml", a),
        ("b.toml", "[[files_replace]]\npath='/b'\ncontent='3'\n"),
    ]);
    let f = list(&t, &["files"]);
    assert_eq!(f.len(), 1);
    assert_eq!(notes.warnings.len(), 1);
    let w = notes.warnings[0].to_string();
    assert!(
        w.starts_with("b.toml:1:3: `files_replace`: replaces the list from a.toml:"),
        "{w}"
    );
    assert!(w.contains("dropping path = \"/a\" (a.toml:"), "{w}");
    let (t, notes) = merged(&[
        ("a.toml", a),
        ("b.toml", "[[files_add]]\npath='/b'\ncontent='4'\n"),
    ]);
    let f = list(&t, &["files"]);
    assert_eq!(f.len(), 2);
    assert_eq!(field(&f[1], "content"), "\"4\"");
    assert!(notes.warnings.is_empty());
    // A list of plain values replaced explicitly: the drop is still said.
    let (_, notes) = merged(&[
        ("a.toml", "[packages]\ninstall=['x','y']\n"),
        ("b.toml", "[packages]\ninstall_replace=['z']\n"),
    ]);
    assert_eq!(notes.warnings[0].key, "packages.install_replace");
}

#[test]
fn a_fragment_merged_over_itself_is_itself() {
    let text = "[[files]]\npath='/a'\ncontent='1'\n[[files]]\npath='/z'\nremove=true\n[packages]\ninstall_add=['x']\n";
    let (once, _) = merged(&[("a.toml", text)]);
    let (twice, _) = merged(&[("a.toml", text), ("b.toml", text)]);
    assert!(same(
        &Value::Table(once.clone()),
        &Value::Table(twice.clone())
    ));
    assert_eq!(list(&twice, &["files"]).len(), 1);
}
