//! What the policy says about each item of a report, beyond its check: where the policy asked
//! for it (`origin`, from the merged tree's file:line) and the `[[waivers]]` that accept its
//! deviation until a date (InSpec's waivers): a waived item gets status `waived`, keeps its real
//! status in `waiver.status` and `actual.status`, and does not fail verify; after `expires` it
//! counts again and says the waiver lapsed.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::policy::tree::{Node, Origin, Table, Value as TomlValue};
use crate::policy::{Loaded, Waiver};
use crate::report::{Item, Status, WaiverInfo};

pub use crate::text::glob;

/// Today's date, UTC, as `YYYY-MM-DD`.
pub fn today() -> String {
    crate::clock::rfc3339(std::time::SystemTime::now())[..10].to_string()
}

/// Applies the waivers to the items, as of `today` (`YYYY-MM-DD`). The first waiver whose
/// pattern matches an item's id is the one that counts. Only drift, error and pending-reboot
/// are waived: a compliant or skipped item has nothing to accept.
pub fn apply(items: &mut [Item], waivers: &[Waiver], today: &str) {
    for it in items.iter_mut() {
        if !matches!(
            it.status,
            Status::Drift | Status::Error | Status::PendingReboot
        ) {
            continue;
        }
        let Some(w) = waivers
            .iter()
            .find(|w| w.items.iter().any(|p| glob(p, &it.id)))
        else {
            continue;
        };
        let lapsed = w.expires.as_deref().is_some_and(|e| e < today);
        it.waiver = Some(WaiverInfo {
            reason: w.reason.clone(),
            expires: w.expires.clone(),
            status: it.status,
            lapsed,
            origin: w.origin.as_ref().map(ToString::to_string),
        });
        if lapsed {
            it.message = format!(
                "the waiver lapsed on {} ({}): {}",
                w.expires.as_deref().unwrap_or(""),
                w.reason,
                it.message
            );
            continue;
        }
        let until = match &w.expires {
            Some(e) => format!("until {e}"),
            None => "no expiry".to_string(),
        };
        it.message = format!(
            "waived ({until}): {}; it is {}: {}",
            w.reason,
            it.status.as_str(),
            it.message
        );
        let real = json!(it.status.as_str());
        match &mut it.actual {
            Value::Object(m) if !m.contains_key("status") => {
                m.insert("status".into(), real);
            }
            other => *other = json!({"status": real, "value": other.take()}),
        }
        it.status = Status::Waived;
    }
}

/// The waivers' patterns that match no item: (waiver, pattern), for `policy check`.
pub fn unused<'a>(waivers: &'a [Waiver], ids: &[String]) -> Vec<(&'a Waiver, &'a str)> {
    waivers
        .iter()
        .flat_map(|w| w.items.iter().map(move |p| (w, p.as_str())))
        .filter(|(_, p)| !ids.iter().any(|id| glob(p, id)))
        .collect()
}

/// Where in the policy an item comes from: the policy key or list element that names it (the
/// part of its id after `KIND:`), else its section, else none. `file:line:column`.
pub fn origin(tree: &Table, item: &Item) -> Option<String> {
    Origins::new(tree).of(item)
}

/// The sections an item's origin is looked for in, in order.
fn sections_of(kind: &str) -> Vec<&str> {
    // The item's section: its kind, with the kinds that live in another section mapped there.
    let section = match kind {
        "file" => "files",
        "service" => "units",
        "initramfs" => "modules",
        k => k,
    };
    match section {
        // A managed file may come from any section that renders one.
        "files" => vec![
            "files", "chrony", "ssh", "sysctl", "modules", "grub", "kernel", "units",
        ],
        s => vec![s, "packages", "kernel"],
    }
}

/// The origins of a policy tree, indexed once: for each section, every key and string value
/// with the place of its first occurrence in a depth-first walk (a key before its value). An
/// item's origin is then two look-ups per section instead of a walk of the section, so
/// annotating a report costs the size of the tree plus the number of items.
pub struct Origins<'a> {
    tree: &'a Table,
    sections: HashMap<&'a str, HashMap<&'a str, (usize, &'a Origin)>>,
}

impl<'a> Origins<'a> {
    pub fn new(tree: &'a Table) -> Self {
        let sections = tree
            .entries
            .iter()
            .map(|(name, e)| {
                let mut index = HashMap::new();
                let mut pos = 0;
                walk(&e.node, &mut pos, &mut index);
                (name.as_str(), index)
            })
            .collect();
        Origins { tree, sections }
    }

    /// As [`origin`].
    pub fn of(&self, item: &Item) -> Option<String> {
        let name = item.id.split_once(':').map_or("", |(_, n)| n);
        let sections = sections_of(&item.kind);
        for s in &sections {
            if let Some(o) = self.sections.get(s).and_then(|i| first(i, name)) {
                return Some(o.to_string());
            }
        }
        sections
            .iter()
            .find_map(|s| self.tree.get(s))
            .map(|e| e.key_origin.to_string())
    }
}

/// Records each key and string value under `node` not seen before, numbered in the order
/// [`first`] must find them.
fn walk<'a>(node: &'a Node, pos: &mut usize, index: &mut HashMap<&'a str, (usize, &'a Origin)>) {
    fn note<'a>(
        index: &mut HashMap<&'a str, (usize, &'a Origin)>,
        s: &'a str,
        o: &'a Origin,
        pos: &mut usize,
    ) {
        index.entry(s).or_insert((*pos, o));
        *pos += 1;
    }
    match &node.value {
        TomlValue::String(s) => note(index, s, &node.origin, pos),
        TomlValue::Table(t) => {
            for (k, e) in &t.entries {
                note(index, k, &e.key_origin, pos);
                walk(&e.node, pos, index);
            }
        }
        TomlValue::Array(a) => {
            for n in a {
                walk(n, pos, index);
            }
        }
        _ => {}
    }
}

/// The origin of the first key or string value of a section equal to `name` (or to the last
/// part of a `/`-separated name, or naming `name`'s file): the earlier of the two in the walk.
fn first<'a>(index: &HashMap<&str, (usize, &'a Origin)>, name: &str) -> Option<&'a Origin> {
    if name.is_empty() {
        return None;
    }
    let short = name.rsplit(['/', ':']).next().unwrap_or(name);
    let whole = index.get(name);
    let part = (!short.is_empty()).then(|| index.get(short)).flatten();
    match (whole, part) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a.1 } else { b.1 }),
        (a, b) => a.or(b).map(|x| x.1),
    }
}

/// Sets each item's origin and applies the waivers as of today.
pub fn annotate(items: &mut [Item], loaded: &Loaded) {
    let origins = Origins::new(&loaded.tree);
    for it in items.iter_mut() {
        it.origin = origins.of(it);
    }
    apply(items, &loaded.policy.waivers, &today());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, status: Status) -> Item {
        Item {
            id: id.into(),
            kind: id.split(':').next().unwrap().into(),
            status,
            expected: json!(1),
            actual: json!({"configured": "0"}),
            message: "configured 0".into(),
            origin: None,
            remediation: None,
            waiver: None,
        }
    }

    fn waiver(items: &[&str], expires: Option<&str>) -> Waiver {
        Waiver {
            items: items.iter().map(|s| s.to_string()).collect(),
            reason: "CNI routes".into(),
            expires: expires.map(String::from),
            origin: None,
        }
    }

    #[test]
    fn globs() {
        assert!(glob(
            "unit:prometheus-*",
            "unit:prometheus-node-exporter.service"
        ));
        assert!(glob(
            "sysctl:net.ipv4.ip_forward",
            "sysctl:net.ipv4.ip_forward"
        ));
        assert!(glob("*:net.ipv4.*", "sysctl:net.ipv4.ip_forward"));
        assert!(glob("unit:?ron.service", "unit:cron.service"));
        assert!(!glob("unit:prometheus-*", "unit:chrony.service"));
        assert!(!glob("sysctl:net", "sysctl:net.ipv4"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXXbYYc") && !glob("a*b*c", "aXXbYY"));
    }

    #[test]
    fn waives_until_it_lapses() {
        let mut items = vec![
            item("sysctl:net.ipv4.ip_forward", Status::Drift),
            item("sysctl:vm.swappiness", Status::Drift),
            item("unit:prometheus-node-exporter.service", Status::Compliant),
        ];
        let ws = [waiver(
            &["sysctl:net.ipv4.ip_forward", "unit:prometheus-*"],
            Some("2026-12-31"),
        )];
        apply(&mut items, &ws, "2026-12-31");
        assert_eq!(items[0].status, Status::Waived);
        assert_eq!(items[0].actual["status"], "drift");
        assert_eq!(items[0].actual["configured"], "0");
        assert_eq!(items[0].waiver.as_ref().unwrap().status, Status::Drift);
        assert!(
            items[0]
                .message
                .starts_with("waived (until 2026-12-31): CNI routes; it is drift")
        );
        assert_eq!(items[1].status, Status::Drift);
        assert_eq!(items[2].status, Status::Compliant);
        assert!(items[2].waiver.is_none());

        let mut items = vec![item("sysctl:net.ipv4.ip_forward", Status::Drift)];
        apply(&mut items, &ws, "2027-01-01");
        assert_eq!(items[0].status, Status::Drift);
        assert!(items[0].waiver.as_ref().unwrap().lapsed);
        assert!(
            items[0]
                .message
                .starts_with("the waiver lapsed on 2026-12-31 (CNI routes)")
        );

        let ids = vec!["sysctl:net.ipv4.ip_forward".to_string()];
        let unused = unused(&ws, &ids);
        assert_eq!(unused.len(), 1);
        assert_eq!(unused[0].1, "unit:prometheus-*");
    }
    /// The walk `origin` did before the index (kept here as the reference): the first key or
    /// string value in `node`, depth first, equal to `name` or to its last part.
    fn walked(node: &Node, name: &str) -> Option<String> {
        if name.is_empty() {
            return None;
        }
        let short = name.rsplit(['/', ':']).next().unwrap_or(name);
        let hit = |s: &str| s == name || (!short.is_empty() && s == short);
        match &node.value {
            TomlValue::String(s) if hit(s) => Some(node.origin.to_string()),
            TomlValue::Table(t) => t.entries.iter().find_map(|(k, e)| {
                if hit(k) {
                    Some(e.key_origin.to_string())
                } else {
                    walked(&e.node, name)
                }
            }),
            TomlValue::Array(a) => a.iter().find_map(|n| walked(n, name)),
            _ => None,
        }
    }

    fn walked_origin(tree: &Table, item: &Item) -> Option<String> {
        let name = item.id.split_once(':').map_or("", |(_, n)| n);
        let sections = sections_of(&item.kind);
        for s in &sections {
            if let Some(o) = tree.get(s).and_then(|e| walked(&e.node, name)) {
                return Some(o);
            }
        }
        sections
            .iter()
            .find_map(|s| tree.get(s))
            .map(|e| e.key_origin.to_string())
    }

    fn strings(node: &Node, out: &mut Vec<String>) {
        match &node.value {
            TomlValue::String(s) => out.push(s.clone()),
            TomlValue::Table(t) => {
                for (k, e) in &t.entries {
                    out.push(k.clone());
                    strings(&e.node, out);
                }
            }
            TomlValue::Array(a) => a.iter().for_each(|n| strings(n, out)),
            _ => {}
        }
    }

    #[test]
    fn the_index_finds_what_the_walk_found() {
        // The shipped policies, then a fragment where a name is first a value, later a key; a
        // short name (after `/`) written before the whole one; a name in two sections.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let mut paths: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        let mut tree = Table::default();
        for p in &paths {
            let text = std::fs::read_to_string(p).unwrap();
            tree.merge(crate::policy::tree::parse_fragment(p, &text).unwrap());
        }
        let extra = r#"
[units]
enable_add = ["x.service", "ssh.service"]
mask_add = ["config.toml"]
[kernel]
"ssh.service" = "a key named like a value"
[[files_add]]
path = "/etc/x/ssh.service"
content = "config.toml"
"#;
        let extra_path = std::path::Path::new("99-extra.toml");
        tree.merge(crate::policy::tree::parse_fragment(extra_path, extra).unwrap());

        let mut names = Vec::new();
        for e in tree.entries.values() {
            strings(&e.node, &mut names);
        }
        names.extend(
            ["", "nothing", "/etc/x/config.toml", "a/b:ssh.service", "x/"].map(String::from),
        );
        let kinds = [
            "file",
            "service",
            "initramfs",
            "units",
            "sysctl",
            "modules",
            "kernel",
            "packages",
            "chrony",
            "ssh",
            "grub",
            "swap",
            "agent",
            "nosuchkind",
        ];
        let origins = Origins::new(&tree);
        let mut found = 0;
        for kind in kinds {
            for name in &names {
                let mut it = item(&format!("{kind}:{name}"), Status::Compliant);
                it.kind = kind.to_string();
                let want = walked_origin(&tree, &it);
                assert_eq!(origins.of(&it), want, "{kind}:{name}");
                assert_eq!(origin(&tree, &it), want, "{kind}:{name}");
                found += usize::from(want.is_some());
            }
        }
        assert!(
            found > 100,
            "the comparison must cover real hits, found {found}"
        );
        // Spot checks of the crafted fragment: a value before a key of the same name.
        let mut it = item("unit:ssh.service", Status::Compliant);
        it.kind = "units".into();
        assert_eq!(
            origins
                .of(&it)
                .as_deref()
                .map(|o| o.starts_with("99-extra.toml:3:")),
            Some(true)
        );
    }
}
