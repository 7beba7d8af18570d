//! `[modules]`: kernel modules loaded at boot, blacklisted, and their options: keys, validation
//! and typed value (the items are `resources/modules.rs`).

use std::collections::BTreeMap;

use serde::Serialize;

use super::tree::{Table, Value};
use super::validate::{V, check_module, join};
use crate::boot::kmod::ModuleName;

/// `[modules]`: kernel modules loaded at boot, blacklisted, and their options.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Modules {
    pub load: Vec<String>,
    pub blacklist: Vec<String>,
    pub options: BTreeMap<String, String>,
}

impl V {
    pub(super) fn modules(&mut self, t: &Table) -> Modules {
        let p = "modules";
        self.known_keys(t, p, &["load", "blacklist", "options"]);
        let load = self.list(t, p, "load", check_module);
        let blacklist = self.list(t, p, "blacklist", check_module);
        for (i, m) in blacklist.iter().enumerate() {
            if load
                .iter()
                .any(|l| ModuleName::new(l) == ModuleName::new(m))
            {
                let e = t.get("blacklist").expect("present");
                let origin = match &e.node.value {
                    Value::Array(a) => a.get(i).map_or(e.node.origin.clone(), |n| n.origin.clone()),
                    _ => e.node.origin.clone(),
                };
                self.err(
                    &origin,
                    &format!("modules.blacklist[{i}]"),
                    format!("`{m}` is both loaded and blacklisted"),
                );
            }
        }
        let mut options = BTreeMap::new();
        if let Some(e) = t.get("options") {
            match &e.node.value {
                Value::Table(ot) => {
                    for (m, oe) in &ot.entries {
                        let kp = join("modules.options", m);
                        if let Err(msg) = check_module(m) {
                            self.err(&oe.key_origin, &kp, msg);
                            continue;
                        }
                        match &oe.node.value {
                            Value::String(s) => match check_module_options(s) {
                                Ok(()) => {
                                    options.insert(
                                        m.clone(),
                                        s.split_whitespace().collect::<Vec<_>>().join(" "),
                                    );
                                }
                                Err(msg) => self.err(&oe.node.origin, &kp, msg),
                            },
                            other => {
                                let msg = format!(
                                    "expected a string like \"param=value other=1\", found {}",
                                    other.type_name()
                                );
                                self.err(&oe.node.origin, &kp, msg);
                            }
                        }
                    }
                }
                other => {
                    let msg = format!(
                        "expected a table of module = \"options\", found {}",
                        other.type_name()
                    );
                    self.err(&e.node.origin, "modules.options", msg);
                }
            }
        }
        Modules {
            load,
            blacklist,
            options,
        }
    }
}

fn check_module_options(s: &str) -> Result<(), String> {
    if s.trim().is_empty() {
        return Err("options must not be empty".into());
    }
    for tok in s.split_whitespace() {
        let name = tok.split_once('=').map_or(tok, |(n, _)| n);
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        {
            return Err(format!("`{tok}` is not a module parameter like name=value"));
        }
        if tok.contains(['"', '\'', '\\', '#']) {
            return Err(format!(
                "`{tok}`: quotes, backslashes and `#` are not allowed"
            ));
        }
    }
    Ok(())
}
