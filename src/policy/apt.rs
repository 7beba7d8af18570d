//! `[apt]`: apt's configuration options and extra sources, their keys, validation and typed
//! value (the items are `resources/apt.rs`).
//!
//! ```toml
//! [apt]
//! options = { "Acquire::ForceIPv4" = true, "Dpkg::Options" = ["--force-confdef", "--force-confold"] }
//!
//! [[apt.sources]]
//! name = "backports"
//! uris = ["http://deb.debian.org/debian"]
//! suites = ["trixie-backports"]
//! components = ["main"]
//! signed_by = "/usr/share/keyrings/debian-archive-keyring.gpg"
//! ```

use std::collections::BTreeMap;

use serde::Serialize;

use super::tree::{Table, Value};
use super::validate::{V, check_abs_path};

/// An apt option's value: one string, or a list (apt's `Key { "a"; "b"; };`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum AptValue {
    One(String),
    List(Vec<String>),
}

/// One deb822 source (`/etc/apt/sources.list.d/guestprep-NAME.sources`).
#[derive(Clone, Debug, Serialize)]
pub struct AptSource {
    pub name: String,
    pub types: Vec<String>,
    pub uris: Vec<String>,
    pub suites: Vec<String>,
    pub components: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Apt {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, AptValue>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<AptSource>,
}

/// `Acquire::ForceIPv4`: `::`-separated names of letters, digits, `-`, `_`, `.`, `+`.
fn check_option_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.split("::").all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c))
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not an apt option name like \"Acquire::ForceIPv4\""
        ))
    }
}

/// A value apt can read back inside double quotes: one line, no `"`.
fn check_option_value(s: &str) -> Result<(), String> {
    if s.contains('"') || s.chars().any(|c| c.is_control()) {
        Err(format!(
            "apt option value `{s}` must be one line without `\"`"
        ))
    } else {
        Ok(())
    }
}

fn check_word(s: &str) -> Result<(), String> {
    if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err(format!("`{s}` must be one word"))
    } else {
        Ok(())
    }
}

fn check_uri(s: &str) -> Result<(), String> {
    check_word(s)?;
    if ["http://", "https://", "file:/", "mirror+", "cdrom:", "tor+"]
        .iter()
        .any(|p| s.starts_with(p))
    {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not a repository URI (http://, https://, file:/…)"
        ))
    }
}

fn check_source_name(s: &str) -> Result<(), String> {
    if !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !s.starts_with('.')
    {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not a source name (letters, digits, `-`, `_`, `.`): it names the file"
        ))
    }
}

impl V {
    pub(super) fn apt(&mut self, t: &Table) -> Apt {
        self.known_keys(t, "apt", &["options", "sources"]);
        let mut out = Apt::default();
        if let Some(e) = t.get("options") {
            match &e.node.value {
                Value::Table(ot) => {
                    for (k, entry) in &ot.entries {
                        let kp = format!("apt.options.\"{k}\"");
                        if let Err(m) = check_option_name(k) {
                            self.err(&entry.key_origin, &kp, m);
                            continue;
                        }
                        let one = |v: &Value| match v {
                            Value::String(s) => Some(s.clone()),
                            Value::Bool(b) => Some(b.to_string()),
                            Value::Integer(i) => Some(i.to_string()),
                            _ => None,
                        };
                        let value = match &entry.node.value {
                            Value::Array(items) => {
                                let vals: Option<Vec<String>> =
                                    items.iter().map(|n| one(&n.value)).collect();
                                vals.map(AptValue::List)
                            }
                            v => one(v).map(AptValue::One),
                        };
                        let Some(value) = value else {
                            let msg = format!(
                                "expected a string, boolean, number or a list of them, found {}",
                                entry.node.value.type_name()
                            );
                            self.err(&entry.node.origin, &kp, msg);
                            continue;
                        };
                        let bad = match &value {
                            AptValue::One(s) => check_option_value(s).err(),
                            AptValue::List(l) => l.iter().find_map(|s| check_option_value(s).err()),
                        };
                        if let Some(m) = bad {
                            self.err(&entry.node.origin, &kp, m);
                            continue;
                        }
                        out.options.insert(k.clone(), value);
                    }
                }
                other => {
                    let msg = format!(
                        "expected a table of apt options, found {}",
                        other.type_name()
                    );
                    self.err(&e.node.origin, "apt.options", msg);
                }
            }
        }
        if let Some(e) = t.get("sources") {
            let Value::Array(items) = &e.node.value else {
                let msg = format!(
                    "expected an array of tables `[[apt.sources]]`, found {}",
                    e.node.value.type_name()
                );
                self.err(&e.node.origin, "apt.sources", msg);
                return out;
            };
            for (i, n) in items.iter().enumerate() {
                let p = format!("apt.sources[{i}]");
                let Value::Table(st) = &n.value else {
                    let msg = format!("expected a table, found {}", n.value.type_name());
                    self.err(&n.origin, &p, msg);
                    continue;
                };
                self.known_keys(
                    st,
                    &p,
                    &["name", "types", "uris", "suites", "components", "signed_by"],
                );
                let name = self.string(st, &p, "name");
                if let Some(nm) = &name
                    && let Err(m) = check_source_name(nm)
                {
                    self.err(&st.entries["name"].node.origin, &format!("{p}.name"), m);
                }
                let mut types = self.list(st, &p, "types", |s| match s {
                    "deb" | "deb-src" => Ok(()),
                    _ => Err(format!("`{s}` is not a source type: deb or deb-src")),
                });
                if types.is_empty() {
                    types = vec!["deb".into()];
                }
                let uris = self.list(st, &p, "uris", check_uri);
                let suites = self.list(st, &p, "suites", check_word);
                let components = self.list(st, &p, "components", check_word);
                let signed_by = self.string(st, &p, "signed_by");
                if let Some(sb) = &signed_by
                    && let Err(m) = check_abs_path(sb)
                {
                    self.err(
                        &st.entries["signed_by"].node.origin,
                        &format!("{p}.signed_by"),
                        m,
                    );
                }
                for (key, empty) in [
                    ("name", name.is_none()),
                    ("uris", uris.is_empty()),
                    ("suites", suites.is_empty()),
                ] {
                    if empty && st.get(key).is_none() {
                        self.err(
                            &n.origin,
                            &format!("{p}.{key}"),
                            format!("missing required key `{key}`"),
                        );
                    }
                }
                let Some(name) = name else { continue };
                if out.sources.iter().any(|s| s.name == name) {
                    self.err(
                        &n.origin,
                        &format!("{p}.name"),
                        format!("`{name}` is used twice"),
                    );
                    continue;
                }
                out.sources.push(AptSource {
                    name,
                    types,
                    uris,
                    suites,
                    components,
                    signed_by,
                });
            }
        }
        out
    }
}
