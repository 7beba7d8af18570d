//! The floors of `src/`, as ARCHITECTURE.md's table draws them: every `crate::` path in a source
//! file (outside its `#[cfg(test)]` module) names a module on the same floor or below, no two
//! modules import each other through any chain, and every module has a floor. A failure names the
//! file and line of the import that goes up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `module -> floor` from the `## Floors` table (`| 3 | `boot`, `packages` | … |`).
fn floors() -> BTreeMap<String, u32> {
    let doc = std::fs::read_to_string(Path::new(ROOT).join("ARCHITECTURE.md")).unwrap();
    let table = doc
        .split("## Floors")
        .nth(1)
        .expect("ARCHITECTURE.md has a `## Floors` section");
    let mut out = BTreeMap::new();
    for line in table.lines().skip_while(|l| !l.starts_with('|')) {
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Ok(floor) = cells.get(1).unwrap_or(&"").parse::<u32>() else {
            continue;
        };
        for m in cells[2].split(',') {
            let m = m.trim().trim_matches('`').trim_end_matches('/');
            let m = m.trim_end_matches(".rs");
            assert!(!m.is_empty(), "empty module name on floor {floor}: {line}");
            assert!(
                out.insert(m.to_string(), floor).is_none(),
                "{m} is on two floors"
            );
        }
    }
    assert!(out.len() > 10, "the floor table was not found: {out:?}");
    out
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to (`src/engine/system.rs` → `engine`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// What `lib.rs` re-exports at the crate root (`pub use usecase::{open, …}`): name → module.
fn root_reexports(lib: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for l in lib.lines() {
        let Some(rest) = l.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, names)) = rest.split_once("::") else {
            continue;
        };
        let names = names.trim_end_matches(';').trim_matches(['{', '}']);
        for n in names.split(',') {
            out.insert(n.trim().to_string(), module.to_string());
        }
    }
    out
}

/// The modules a line names through `crate::` (and `crate::{a, b::c}`).
fn named(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let id: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !id.is_empty() {
                    out.push(id);
                }
            }
        } else {
            let id: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !id.is_empty() {
                out.push(id);
            }
        }
        rest = after;
    }
    out
}

/// The imports that go up a floor and the circles, for files given as (path, module, text).
fn violations(
    files: &[(String, String, String)],
    floors: &BTreeMap<String, u32>,
    reexports: &BTreeMap<String, String>,
) -> (Vec<String>, BTreeMap<String, BTreeSet<String>>) {
    let mut errors = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, m, text) in files {
        let Some(&floor) = floors.get(m) else {
            errors.push(format!(
                "{path}: module `{m}` is not in ARCHITECTURE.md's floor table (give it a floor)"
            ));
            continue;
        };
        // A file's own tests may use what they like: they are not what the file builds on.
        let code = text
            .find("#[cfg(test)]\nmod tests")
            .map_or(text.as_str(), |i| &text[..i]);
        for (n, line) in code.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for name in named(line) {
                let target = if floors.contains_key(&name) {
                    name.clone()
                } else if let Some(m) = reexports.get(&name) {
                    m.clone()
                } else {
                    continue;
                };
                if &target == m {
                    continue;
                }
                edges.entry(m.clone()).or_default().insert(target.clone());
                let to = floors[&target];
                if to > floor {
                    errors.push(format!(
                        "{path}:{}: `crate::{name}` goes up from floor {floor} ({m}) to floor {to} ({target})",
                        n + 1
                    ));
                }
            }
        }
    }
    // No circle, on one floor either: a module another reaches must not reach it back.
    for (a, outs) in &edges {
        for b in outs {
            let mut seen = BTreeSet::new();
            let mut stack = vec![b.clone()];
            while let Some(x) = stack.pop() {
                if !seen.insert(x.clone()) {
                    continue;
                }
                if &x == a {
                    errors.push(format!("circle: {a} imports {b}, which reaches {a} again"));
                    break;
                }
                stack.extend(edges.get(&x).into_iter().flatten().cloned());
            }
        }
    }
    (errors, edges)
}

#[test]
fn imports_only_go_down_a_floor_and_no_module_circle_remains() {
    let floors = floors();
    let src = Path::new(ROOT).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let reexports = root_reexports(&lib);
    let mut paths = Vec::new();
    sources(&src, &mut paths);
    paths.sort();
    let files: Vec<(String, String, String)> = paths
        .iter()
        .map(|f| {
            (
                f.strip_prefix(ROOT).unwrap().display().to_string(),
                module_of(&src, f),
                std::fs::read_to_string(f).unwrap(),
            )
        })
        .filter(|(_, m, _)| m != "lib" && m != "main")
        .collect();
    let modules: BTreeSet<&String> = files.iter().map(|(_, m, _)| m).collect();
    for m in floors.keys() {
        assert!(
            modules.contains(m),
            "ARCHITECTURE.md's floor table names `{m}`, which is not a module of src/"
        );
    }
    let (errors, edges) = violations(&files, &floors, &reexports);
    let edge_count: usize = edges.values().map(BTreeSet::len).sum();
    println!(
        "floors: {} modules on {} floors, {edge_count} imports between modules, {} problems",
        modules.len(),
        floors.values().collect::<BTreeSet<_>>().len(),
        errors.len()
    );
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// The one door: a check reads the machine through `System`'s recorded methods, so the daemon
/// watches everything a check read. No resource reaches past them to the root (guestprep's own
/// initramfs memo under /run is the one exception: a cache, not a reading of the system).
#[test]
fn resources_read_the_machine_only_through_the_recorded_door() {
    let dir = Path::new(ROOT).join("src/resources");
    let mut paths = Vec::new();
    sources(&dir, &mut paths);
    let mut bad = Vec::new();
    for p in &paths {
        let name = p.file_name().unwrap().to_string_lossy();
        if name == "initramfs_memo.rs" || name.ends_with("_tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(p).unwrap();
        let code = text
            .find("#[cfg(test)]\nmod tests")
            .map_or(text.as_str(), |i| &text[..i]);
        // `sys.root()` and the field, whatever the line breaks between them.
        let flat: String = code.split_whitespace().collect::<Vec<_>>().join(" ");
        for needle in [
            ".root()",
            "sys .root",
            "sys.root",
            "crate::fsutil::",
            "std::fs::write",
            "std::fs::read",
        ] {
            if flat.contains(needle) {
                bad.push(format!(
                    "{}: `{needle}`",
                    p.strip_prefix(ROOT).unwrap().display()
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "past the door (use `System`'s methods and `Change`):\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_floor_test_sees_an_import_that_goes_up_and_a_circle() {
    assert_eq!(
        named("use crate::{engine, root::Root};"),
        ["engine", "root"]
    );
    assert_eq!(
        named("    let x = crate::resources::time::set(sys);"),
        ["resources"]
    );
    assert!(named("let x = 1;").is_empty());
    let floors: BTreeMap<String, u32> = [
        ("text", 1),
        ("engine", 7),
        ("resources", 8),
        ("usecase", 10),
    ]
    .map(|(m, f)| (m.to_string(), f))
    .into();
    let reexports: BTreeMap<String, String> = [("open".to_string(), "usecase".to_string())].into();
    let file = |p: &str, m: &str, t: &str| (p.to_string(), m.to_string(), t.to_string());
    let (errors, _) = violations(
        &[
            file(
                "src/engine/mod.rs",
                "engine",
                "use crate::text;\n\nfn f() { crate::resources::time::set(); }\n",
            ),
            file(
                "src/text.rs",
                "text",
                "// crate::engine in a comment\nfn g() { crate::open(); }\n#[cfg(test)]\nmod tests { use crate::engine; }\n",
            ),
            file(
                "src/resources/a.rs",
                "resources",
                "use crate::engine::System;\n",
            ),
        ],
        &floors,
        &reexports,
    );
    assert_eq!(
        errors[..2],
        [
            "src/engine/mod.rs:3: `crate::resources` goes up from floor 7 (engine) to floor 8 (resources)",
            "src/text.rs:2: `crate::open` goes up from floor 1 (text) to floor 10 (usecase)",
        ],
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("circle: engine imports resources")),
        "{errors:#?}"
    );
    let (errors, _) = violations(&[file("src/new.rs", "new", "")], &floors, &reexports);
    assert!(
        errors[0].contains("not in ARCHITECTURE.md's floor table"),
        "{errors:?}"
    );
}
