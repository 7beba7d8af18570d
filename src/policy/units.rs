//! `[units]`: systemd units masked, enabled, disabled, started or stopped, and their drop-ins:
//! keys, validation and typed values (the items are `resources/units.rs`).

use serde::Serialize;

use super::is_true;
use super::tree::{Entry, Node, Table, Value};
use super::validate::{V, element_origin};

/// `[units]`: systemd units masked, unmasked, enabled, disabled through systemd's D-Bus API, and
/// drop-ins written for them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Units {
    pub mask: Vec<String>,
    pub unmask: Vec<String>,
    pub enable: Vec<String>,
    pub disable: Vec<String>,
    /// Also stop what is masked or disabled and start what is enabled (live only): for every
    /// unit of the section, or for the units listed.
    pub now: Now,
    /// `[[units.dropins]]`: `/etc/systemd/system/UNIT.d/NAME.conf`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dropins: Vec<UnitDropin>,
    /// Restart a running unit after one of its drop-ins changed (default true).
    #[serde(skip_serializing_if = "is_true")]
    pub restart: bool,
}

/// `now = true | false | ["unit", …]`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Now {
    All(bool),
    Units(Vec<String>),
}

impl Default for Now {
    fn default() -> Self {
        Now::All(false)
    }
}

impl Now {
    /// Whether `unit`'s running state is managed too.
    pub fn applies_to(&self, unit: &str) -> bool {
        match self {
            Now::All(b) => *b,
            Now::Units(list) => list.iter().any(|u| u == unit),
        }
    }
}

/// `[[units.dropins]]`: a drop-in file for a unit.
#[derive(Clone, Debug, Serialize)]
pub struct UnitDropin {
    pub unit: String,
    /// The file name without `.conf`.
    pub name: String,
    pub content: String,
}

impl UnitDropin {
    pub fn path(&self) -> String {
        format!("/etc/systemd/system/{}.d/{}.conf", self.unit, self.name)
    }
}

impl V {
    pub(super) fn units(&mut self, t: &Table) -> Units {
        let p = "units";
        self.known_keys(
            t,
            p,
            &[
                "mask", "unmask", "enable", "disable", "now", "dropins", "restart",
            ],
        );
        let mut u = Units {
            mask: self.list(t, p, "mask", crate::systemd::check_unit_name),
            unmask: self.list(t, p, "unmask", crate::systemd::check_unit_name),
            enable: self.list(t, p, "enable", crate::systemd::check_unit_name),
            disable: self.list(t, p, "disable", crate::systemd::check_unit_name),
            now: Now::All(false),
            dropins: match t.get("dropins") {
                Some(e) => self.dropins(e),
                None => Vec::new(),
            },
            restart: self.bool(t, p, "restart").unwrap_or(true),
        };
        u.now = self.now(t, &u);
        // A unit in two lists contradicts itself: report it where it is listed the second time.
        let lists = [
            ("mask", &u.mask),
            ("unmask", &u.unmask),
            ("enable", &u.enable),
            ("disable", &u.disable),
        ];
        let sets: Vec<std::collections::HashSet<&String>> =
            lists.iter().map(|(_, l)| l.iter().collect()).collect();
        for (li, (list, names)) in lists.iter().enumerate() {
            for (i, n) in names.iter().enumerate() {
                let Some(((first, _), _)) = lists[..li]
                    .iter()
                    .zip(&sets)
                    .find(|(_, earlier)| earlier.contains(n))
                else {
                    continue;
                };
                let e = t.get(list).expect("present");
                let origin = element_origin(e, n);
                self.err(
                    &origin,
                    &format!("units.{list}[{i}]"),
                    format!("`{n}` is also in units.{first}"),
                );
            }
        }
        u
    }

    /// `now = true | false | ["unit", …]`: a listed unit must be one the section masks, enables
    /// or disables (what `now` acts on).
    pub(super) fn now(&mut self, t: &Table, u: &Units) -> Now {
        let Some(e) = t.get("now") else {
            return Now::All(false);
        };
        if let Value::Bool(b) = &e.node.value {
            return Now::All(*b);
        }
        if !matches!(&e.node.value, Value::Array(_)) {
            let msg = format!(
                "expected true, false or an array of unit names, found {}",
                e.node.value.type_name()
            );
            self.err(&e.node.origin, "units.now", msg);
            return Now::All(false);
        }
        let names = self.list(t, "units", "now", crate::systemd::check_unit_name);
        let acted: std::collections::HashSet<&String> =
            u.mask.iter().chain(&u.enable).chain(&u.disable).collect();
        for (i, n) in names.iter().enumerate() {
            let acted_on = acted.contains(n);
            if !acted_on {
                let origin = element_origin(e, n);
                self.err(
                    &origin,
                    &format!("units.now[{i}]"),
                    format!(
                        "`{n}` is not in units.mask, units.enable or units.disable: `now` stops or starts only those"
                    ),
                );
            }
        }
        Now::Units(names)
    }

    /// `[[units.dropins]]`: `unit`, `name`, `content`, all required.
    pub(super) fn dropins(&mut self, e: &Entry) -> Vec<UnitDropin> {
        let want = "an array of tables `[[units.dropins]]`";
        let Some(items) = self.typed(e, "units.dropins", want, |v| match v {
            Value::Array(a) => Some(a),
            _ => None,
        }) else {
            return Vec::new();
        };
        let mut out: Vec<UnitDropin> = Vec::new();
        for (i, n) in items.iter().enumerate() {
            let p = format!("units.dropins[{i}]");
            let Node {
                value: Value::Table(t),
                origin,
            } = n
            else {
                let msg = format!("expected a table, found {}", n.value.type_name());
                self.err(&n.origin, &p, msg);
                continue;
            };
            self.known_keys(t, &p, &["unit", "name", "content"]);
            let required = |v: &mut Self, key: &str| {
                let r = v.string(t, &p, key);
                if t.get(key).is_none() {
                    v.err(
                        origin,
                        &format!("{p}.{key}"),
                        format!("missing required key `{key}`"),
                    );
                }
                r
            };
            let unit = required(self, "unit");
            let name = required(self, "name");
            let content = required(self, "content");
            let unit = unit.filter(|u| match crate::systemd::check_unit_name(u) {
                Ok(()) => true,
                Err(m) => {
                    let o = t.get("unit").expect("present").node.origin.clone();
                    self.err(&o, &format!("{p}.unit"), m);
                    false
                }
            });
            let name = name.and_then(|nm| {
                let stem = nm.strip_suffix(".conf").unwrap_or(&nm).to_string();
                match check_dropin_name(&stem) {
                    Ok(()) => Some(stem),
                    Err(m) => {
                        let o = t.get("name").expect("present").node.origin.clone();
                        self.err(&o, &format!("{p}.name"), m);
                        None
                    }
                }
            });
            if let (Some(unit), Some(name), Some(content)) = (unit, name, content) {
                let d = UnitDropin {
                    unit,
                    name,
                    content,
                };
                if out.iter().any(|o| o.path() == d.path()) {
                    self.err(origin, &p, format!("`{}` is written twice", d.path()));
                    continue;
                }
                out.push(d);
            }
        }
        out
    }
}

/// A drop-in's file name without `.conf`: one path component, no hidden file.
fn check_dropin_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.starts_with('.') || s.len() > 200 {
        return Err(format!("`{s}` is not a usable drop-in name"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.@+".contains(*c)))
    {
        return Err(format!(
            "`{s}` contains `{c}`: a drop-in name is one file name (letters, digits, - _ . @ +)"
        ));
    }
    Ok(())
}
