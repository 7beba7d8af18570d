//! What the policy says about each item of a report, beyond its check: where the policy asked
//! for it (`origin`, from the merged tree's file:line) and the `[[waivers]]` that accept its
//! deviation until a date (InSpec's waivers): a waived item gets status `waived`, keeps its real
//! status in `waiver.status` and `actual.status`, and does not fail verify; after `expires` it
//! counts again and says the waiver lapsed.

use serde_json::{Value, json};

use crate::policy::tree::{Node, Table, Value as TomlValue};
use crate::policy::{Loaded, Waiver};
use crate::report::{Item, Status, WaiverInfo};

/// Glob matching with `*` (any run of characters) and `?` (one character); anything else is
/// literal.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Today's date, UTC, as `YYYY-MM-DD`.
pub fn today() -> String {
    crate::report::rfc3339(std::time::SystemTime::now())[..10].to_string()
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
    let name = item.id.split_once(':').map_or("", |(_, n)| n);
    // The item's section: its kind, with the kinds that live in another section mapped there.
    let section = match item.kind.as_str() {
        "file" => "files",
        "service" => "units",
        "initramfs" => "modules",
        k => k,
    };
    let sections: Vec<&str> = match section {
        // A managed file may come from any section that renders one.
        "files" => vec![
            "files", "chrony", "ssh", "sysctl", "modules", "grub", "kernel", "units",
        ],
        s => vec![s, "packages", "kernel"],
    };
    for s in &sections {
        let Some(e) = tree.get(s) else { continue };
        if let Some(o) = find(&e.node, name) {
            return Some(o);
        }
    }
    sections
        .iter()
        .find_map(|s| tree.get(s))
        .map(|e| e.key_origin.to_string())
}

/// The origin of the first key or string value in `node` equal to `name` (or to the last part of
/// a `/`-separated name, or naming `name`'s file).
fn find(node: &Node, name: &str) -> Option<String> {
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
                find(&e.node, name)
            }
        }),
        TomlValue::Array(a) => a.iter().find_map(|n| find(n, name)),
        _ => None,
    }
}

/// Sets each item's origin and applies the waivers as of today.
pub fn annotate(items: &mut [Item], loaded: &Loaded) {
    for it in items.iter_mut() {
        it.origin = origin(&loaded.tree, it);
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
}
