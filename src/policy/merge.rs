//! Merging policy fragments: a later fragment's keys over the earlier ones'.
//!
//! - Tables merge key by key, recursively.
//! - A list of tables with a key ([`KEYED_LISTS`]: `[[files]]` by `path`, `[[packages.deb]]` by
//!   `name`, `[[units.dropins]]` by `unit` and `name`, `[[apt.sources]]` by `name`, `[[waivers]]`
//!   by their `items`) merges by that key, as kustomize merges a list by its merge key: an entry
//!   whose key an earlier fragment has replaces that entry, where it stands; a new key is
//!   appended; an entry with `remove = true` and only its key takes the earlier entry out. The
//!   other entries stay, whichever fragment wrote them.
//! - Any other value, lists of plain values included, is replaced by the later fragment's.
//!   `KEY_add = [...]` appends to the list `KEY` instead (an element already there is not added
//!   again); `KEY_replace = [...]` replaces the list `KEY` whole, keyed or not.
//! - Whatever a fragment drops that an earlier one wrote (elements of a replaced list, a keyed
//!   list replaced whole) is a warning naming both places, and so is a removal that matches
//!   nothing (`policy check` prints them). A removal that contradicts its own fragment is an error.
//!
//! Within one fragment, `KEY_replace` applies first, then `KEY`, then `KEY_add`.

use super::diag::Diagnostic;
use super::tree::{Entry, Node, Origin, Table, Value, to_toml};

/// The suffix of a key that appends to a list instead of replacing it.
pub const ADD_SUFFIX: &str = "_add";
/// The suffix of a key that replaces a list whole, a keyed one too.
pub const REPLACE_SUFFIX: &str = "_replace";
/// In an entry of a keyed list: take the earlier fragments' entry of that key out.
pub const REMOVE_KEY: &str = "remove";

/// The lists of tables that merge by key: dotted path, key fields.
pub const KEYED_LISTS: &[(&str, &[&str])] = &[
    ("files", &["path"]),
    ("packages.deb", &["name"]),
    ("units.dropins", &["unit", "name"]),
    ("apt.sources", &["name"]),
    ("waivers", &["items"]),
];

/// What merging found: errors stop the load; warnings are for `policy check`.
#[derive(Debug, Default)]
pub struct Notes {
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
}

fn keyed(path: &str) -> Option<&'static [&'static str]> {
    KEYED_LISTS
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, k)| *k)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Two values are the same whatever their origins.
pub(super) fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) | (Value::Datetime(x), Value::Datetime(y)) => x == y,
        (Value::Integer(x), Value::Integer(y)) => x == y,
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(&p.value, &q.value))
        }
        (Value::Table(x), Value::Table(y)) => {
            x.entries.len() == y.entries.len()
                && x.entries
                    .iter()
                    .zip(&y.entries)
                    .all(|((kx, ex), (ky, ey))| kx == ky && same(&ex.node.value, &ey.node.value))
        }
        _ => false,
    }
}

/// An entry's key: its key fields' values (a list of strings, as `items`, sorted), or None when
/// one is missing or of another type (the validator names that).
fn key_of(n: &Node, keys: &[&str]) -> Option<Vec<String>> {
    let Value::Table(t) = &n.value else {
        return None;
    };
    keys.iter()
        .map(|k| match &t.get(k)?.node.value {
            Value::String(s) => Some(s.clone()),
            Value::Array(a) => {
                let mut v: Vec<String> = a
                    .iter()
                    .map(|x| match &x.value {
                        Value::String(s) => Some(s.clone()),
                        _ => None,
                    })
                    .collect::<Option<_>>()?;
                v.sort();
                Some(v.join("\n"))
            }
            _ => None,
        })
        .collect()
}

/// The key as written, for messages: `path = "/etc/x"`.
fn shown(n: &Node, keys: &[&str]) -> String {
    let Value::Table(t) = &n.value else {
        return String::new();
    };
    keys.iter()
        .filter_map(|k| t.get(k).map(|e| format!("{k} = {}", to_toml(&e.node))))
        .collect::<Vec<_>>()
        .join(", ")
}

fn at(o: &Origin) -> String {
    o.to_string()
}

/// Takes `remove` out of an entry: Some(true) for a removal, None when it is not a boolean (an
/// error noted).
fn take_remove(n: &mut Node, path: &str, notes: &mut Notes) -> Option<bool> {
    let Value::Table(t) = &mut n.value else {
        return Some(false);
    };
    let Some(e) = t.entries.remove(REMOVE_KEY) else {
        return Some(false);
    };
    match e.node.value {
        Value::Bool(b) => Some(b),
        other => {
            let msg = format!("expected true or false, found {}", other.type_name());
            notes.errors.push(Diagnostic::new(
                e.node.origin,
                format!("{path}.{REMOVE_KEY}"),
                msg,
            ));
            None
        }
    }
}

/// Merges the entries of a keyed list `over` into `base` (see the module's doc).
fn merge_keyed(
    base: &mut Vec<Node>,
    over: Vec<Node>,
    keys: &[&str],
    path: &str,
    notes: &mut Notes,
) {
    let n_base = base.len();
    let mut replaced = vec![false; n_base];
    let mut removed = vec![false; n_base];
    let mut set_here: Vec<(Vec<String>, Origin)> = Vec::new();
    let mut removals: Vec<(Vec<String>, Node, String)> = Vec::new();
    let mut appended = Vec::new();
    for (i, mut n) in over.into_iter().enumerate() {
        let at_i = format!("{path}[{i}]");
        let Some(k) = key_of(&n, keys) else {
            appended.push(n);
            continue;
        };
        match take_remove(&mut n, &at_i, notes) {
            None => continue,
            Some(false) => {}
            Some(true) => {
                let extra: Vec<String> = match &n.value {
                    Value::Table(t) => t
                        .entries
                        .keys()
                        .filter(|k| !keys.contains(&k.as_str()))
                        .map(|k| format!("`{k}`"))
                        .collect(),
                    _ => Vec::new(),
                };
                if !extra.is_empty() {
                    let msg = format!(
                        "an entry with `remove = true` has only its key ({}): {} would be ignored",
                        keys.join(", "),
                        extra.join(", ")
                    );
                    notes
                        .errors
                        .push(Diagnostic::new(n.origin.clone(), at_i, msg));
                    continue;
                }
                let mut hit = false;
                for i in 0..n_base {
                    if !removed[i] && key_of(&base[i], keys).as_ref() == Some(&k) {
                        removed[i] = true;
                        hit = true;
                    }
                }
                if !hit {
                    let msg = format!(
                        "`remove = true` for {}: no earlier fragment has this entry, nothing is removed",
                        shown(&n, keys)
                    );
                    notes
                        .warnings
                        .push(Diagnostic::new(n.origin.clone(), path, msg));
                }
                removals.push((k, n, at_i));
                continue;
            }
        }
        set_here.push((k.clone(), n.origin.clone()));
        match (0..n_base)
            .find(|&i| !replaced[i] && !removed[i] && key_of(&base[i], keys).as_ref() == Some(&k))
        {
            Some(i) => {
                base[i] = n;
                replaced[i] = true;
            }
            None => appended.push(n),
        }
    }
    for (k, n, at_i) in removals {
        if let Some((_, set_at)) = set_here.iter().find(|(s, _)| *s == k) {
            let msg = format!(
                "`remove = true` for {}, which this fragment also sets (at {}): keep one",
                shown(&n, keys),
                at(set_at)
            );
            notes.errors.push(Diagnostic::new(n.origin, at_i, msg));
        }
    }
    let kept = std::mem::take(base)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !removed[*i])
        .map(|(_, n)| n);
    *base = kept.chain(appended).collect();
}

/// Warns about the elements of `old` that the replacing list `new` drops.
fn warn_dropped(path: &str, old: &Entry, new: &Entry, how: &str, notes: &mut Notes) {
    let (Value::Array(o), Value::Array(n)) = (&old.node.value, &new.node.value) else {
        return;
    };
    let dropped: Vec<&Node> = match keyed(path) {
        Some(keys) => o
            .iter()
            .filter(|x| {
                let k = key_of(x, keys);
                k.is_none() || !n.iter().any(|y| key_of(y, keys) == k)
            })
            .collect(),
        None => o
            .iter()
            .filter(|x| !n.iter().any(|y| same(&x.value, &y.value)))
            .collect(),
    };
    if dropped.is_empty() {
        return;
    }
    let mut names: Vec<String> = dropped
        .iter()
        .take(5)
        .map(|d| match keyed(path) {
            Some(keys) => format!("{} ({})", shown(d, keys), at(&d.origin)),
            None => to_toml(d),
        })
        .collect();
    if dropped.len() > 5 {
        names.push(format!("and {} more", dropped.len() - 5));
    }
    let last = path.rsplit('.').next().unwrap_or(path);
    let hint = match how {
        "replace" => String::new(),
        _ if keyed(path).is_some() => String::new(),
        _ => format!(" (`{last}{ADD_SUFFIX}` adds to the list instead)"),
    };
    let msg = format!(
        "replaces the list from {}, dropping {}{hint}",
        at(&old.node.origin),
        names.join(", ")
    );
    let key = if how == "replace" {
        format!("{path}{REPLACE_SUFFIX}")
    } else {
        path.to_string()
    };
    notes
        .warnings
        .push(Diagnostic::new(new.key_origin.clone(), key, msg));
}

/// A value that arrives where nothing was: its own `_add`/`_replace` keys and removals are
/// resolved as if merged over nothing.
fn settle(path: &str, entry: &mut Entry, notes: &mut Notes) {
    match &mut entry.node.value {
        Value::Table(t) => {
            let mut fresh = Table::default();
            fresh.merge_at(path, std::mem::take(t), notes);
            *t = fresh;
        }
        Value::Array(a) => {
            if let Some(keys) = keyed(path) {
                let over = std::mem::take(a);
                merge_keyed(a, over, keys, path, notes);
            }
        }
        _ => {}
    }
}

impl Table {
    /// Merges `overlay` into `self` (see the module's doc), dropping the notes.
    pub fn merge(&mut self, overlay: Table) {
        self.merge_noted(overlay, &mut Notes::default());
    }

    /// Merges `overlay` into `self`, telling `notes` what was dropped or is contradictory.
    pub fn merge_noted(&mut self, overlay: Table, notes: &mut Notes) {
        self.merge_at("", overlay, notes);
    }

    fn merge_at(&mut self, path: &str, mut overlay: Table, notes: &mut Notes) {
        let replaces: Vec<String> = overlay
            .entries
            .iter()
            .filter(|(k, e)| {
                k.len() > REPLACE_SUFFIX.len()
                    && k.ends_with(REPLACE_SUFFIX)
                    && matches!(e.node.value, Value::Array(_))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for rk in replaces {
            let mut entry = overlay.entries.remove(&rk).expect("listed");
            let base_key = rk[..rk.len() - REPLACE_SUFFIX.len()].to_string();
            let p = join(path, &base_key);
            settle(&p, &mut entry, notes);
            if let Some(old) = self.entries.get(&base_key) {
                warn_dropped(&p, old, &entry, "replace", notes);
            }
            self.entries.insert(base_key, entry);
        }
        for (key, mut entry) in overlay.entries {
            if let Some(base_key) = key.strip_suffix(ADD_SUFFIX)
                && !base_key.is_empty()
                && matches!(entry.node.value, Value::Array(_))
            {
                let p = join(path, base_key);
                match self.entries.get_mut(base_key).map(|e| &mut e.node.value) {
                    Some(Value::Array(base)) => {
                        let Value::Array(added) = entry.node.value else {
                            unreachable!("matched above")
                        };
                        match keyed(&p) {
                            Some(keys) => merge_keyed(base, added, keys, &p, notes),
                            None => append_new(base, &added),
                        }
                        continue;
                    }
                    None => {
                        settle(&p, &mut entry, notes);
                        self.entries.insert(base_key.to_string(), entry);
                        continue;
                    }
                    // Not an array there: left as `KEY_add`, which the validator names.
                    Some(_) => {}
                }
            }
            let p = join(path, &key);
            let base = self.entries.get_mut(&key).map(|e| &mut e.node.value);
            match (base, &mut entry.node.value) {
                (Some(Value::Table(base)), Value::Table(over)) => {
                    base.merge_at(&p, std::mem::take(over), notes);
                }
                (Some(Value::Array(base)), Value::Array(over)) if keyed(&p).is_some() => {
                    let keys = keyed(&p).expect("checked");
                    merge_keyed(base, std::mem::take(over), keys, &p, notes);
                }
                _ => {
                    settle(&p, &mut entry, notes);
                    if let Some(old) = self.entries.get(&key) {
                        warn_dropped(&p, old, &entry, "set", notes);
                    }
                    self.entries.insert(key, entry);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;

/// A hash of a value that ignores origins: [`same`] values hash alike, so a list's elements can
/// be bucketed by it and compared with `same` only within a bucket.
fn fingerprint(v: &Value, h: &mut impl std::hash::Hasher) {
    use std::hash::Hash;
    std::mem::discriminant(v).hash(h);
    match v {
        Value::String(x) | Value::Datetime(x) => x.hash(h),
        Value::Integer(x) => x.hash(h),
        Value::Float(x) => x.to_bits().hash(h),
        Value::Bool(x) => x.hash(h),
        Value::Array(x) => {
            x.len().hash(h);
            for n in x {
                fingerprint(&n.value, h);
            }
        }
        Value::Table(x) => {
            x.entries.len().hash(h);
            for (k, e) in &x.entries {
                k.hash(h);
                fingerprint(&e.node.value, h);
            }
        }
    }
}

fn hash_of(v: &Value) -> u64 {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    fingerprint(v, &mut h);
    h.finish()
}

/// Appends to `base` each element of `added` that is not already there (nor added before it).
/// Linear: elements are bucketed by [`hash_of`], and only a bucket is searched with [`same`].
fn append_new(base: &mut Vec<Node>, added: &[Node]) {
    let mut seen: std::collections::HashMap<u64, Vec<usize>> = Default::default();
    for (i, b) in base.iter().enumerate() {
        seen.entry(hash_of(&b.value)).or_default().push(i);
    }
    for n in added {
        let bucket = seen.entry(hash_of(&n.value)).or_default();
        if !bucket.iter().any(|&i| same(&base[i].value, &n.value)) {
            bucket.push(base.len());
            base.push(n.clone());
        }
    }
}
