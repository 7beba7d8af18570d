//! `[apt]`: apt's options (`/etc/apt/apt.conf.d/90guestprep`) and extra sources
//! (`/etc/apt/sources.list.d/guestprep-NAME.sources`, deb822).
//!
//! `apt:options` checks the value apt will use for each option, read as apt reads its
//! configuration (apt.conf.d in name order, then apt.conf; a later assignment wins, `{ … }` and
//! `Key::` append to a list), naming the file:line that wins. `apt:source:NAME` checks apt reads
//! the source and its keyring exists (`aptsources.rs`).

use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::json;

use super::FileResource;
use crate::engine::{Change, Observation, Resource, System};
use crate::policy::{Apt, AptSource, AptValue};
use crate::root::Root;

pub const OPTIONS_FILE: &str = "/etc/apt/apt.conf.d/90guestprep";
const PARTS: &str = "/etc/apt/apt.conf.d";
const MAIN: &str = "/etc/apt/apt.conf";
pub const SOURCES_DIR: &str = "/etc/apt/sources.list.d";

pub fn render_options(options: &BTreeMap<String, AptValue>) -> String {
    let mut s = super::file::HEADER.replace("# ", "// ");
    for (k, v) in options {
        match v {
            AptValue::One(v) => s.push_str(&format!("{k} \"{v}\";\n")),
            AptValue::List(l) => {
                s.push_str(&format!("{k} {{"));
                for v in l {
                    s.push_str(&format!(" \"{v}\";"));
                }
                s.push_str(" };\n");
            }
        }
    }
    s
}

pub fn source_path(name: &str) -> String {
    format!("{SOURCES_DIR}/guestprep-{name}.sources")
}

pub fn render_source(src: &AptSource) -> String {
    let mut s = super::file::HEADER.to_string();
    s.push_str(&format!("Types: {}\n", src.types.join(" ")));
    s.push_str(&format!("URIs: {}\n", src.uris.join(" ")));
    s.push_str(&format!("Suites: {}\n", src.suites.join(" ")));
    if !src.components.is_empty() {
        s.push_str(&format!("Components: {}\n", src.components.join(" ")));
    }
    if let Some(k) = &src.signed_by {
        s.push_str(&format!("Signed-By: {k}\n"));
    }
    s
}

pub fn resources(a: &Apt, root: &Root) -> Vec<Box<dyn Resource>> {
    let mut out: Vec<Box<dyn Resource>> = Vec::new();
    if !a.options.is_empty() {
        out.push(Box::new(FileResource::new(
            "apt",
            OPTIONS_FILE,
            render_options(&a.options),
        )));
        out.push(Box::new(Options {
            options: a.options.clone(),
        }));
    } else if root.exists(OPTIONS_FILE) {
        out.push(Box::new(FileResource::absent("apt", OPTIONS_FILE)));
    }
    for s in &a.sources {
        out.push(Box::new(FileResource::new(
            "apt",
            &source_path(&s.name),
            render_source(s),
        )));
        out.push(Box::new(super::aptsources::Source { source: s.clone() }));
    }
    // A source that left the policy leaves no file behind.
    for f in root.list_dir(SOURCES_DIR).unwrap_or_default() {
        if let Some(name) = f
            .strip_prefix("guestprep-")
            .and_then(|n| n.strip_suffix(".sources"))
            && !a.sources.iter().any(|s| s.name == name)
        {
            out.push(Box::new(FileResource::absent("apt", &source_path(name))));
        }
    }
    out
}

/// The files apt reads its configuration from, in order: apt.conf.d's parts (names of letters,
/// digits, `_`, `-`, `.` without an extension or ending in `.conf`, in name order), then apt.conf.
fn config_files(sys: &System) -> Result<Vec<String>> {
    let mut parts: Vec<String> = sys
        .list_dir(PARTS)?
        .into_iter()
        .filter(|n| {
            n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
                && (!n.contains('.') || n.ends_with(".conf"))
        })
        .collect();
    parts.sort();
    let mut out: Vec<String> = parts.into_iter().map(|n| format!("{PARTS}/{n}")).collect();
    out.push(MAIN.to_string());
    Ok(out)
}

/// An option's values as apt ends up with them, and where the last one came from.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Effective {
    pub values: Vec<String>,
    pub from: String,
}

/// Parses apt configuration text into `effective` (apt.conf(5): `Key "value";`, nested
/// `Scope { Key "value"; };`, list elements `"a";` inside a block or `Key:: "a";`, `#clear`,
/// `//`, `#` and `/* */` comments).
pub fn parse_into(text: &str, file: &str, effective: &mut BTreeMap<String, Effective>) {
    // Tokens with their line numbers.
    let mut toks: Vec<(String, usize)> = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let (mut i, mut line) = (0, 1);
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                line += usize::from(chars[i] == '\n');
                i += 1;
            }
            i += 2;
        } else if c == '#'
            && !text[text.char_indices().nth(i).map_or(0, |(b, _)| b)..].starts_with("#clear")
        {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if "{};".contains(c) {
            toks.push((c.to_string(), line));
            i += 1;
        } else if c == '"' {
            let mut s = String::from("\"");
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                s.push(chars[i]);
                i += 1;
            }
            i += 1;
            toks.push((s, line));
        } else {
            let mut s = String::new();
            while i < chars.len() && !chars[i].is_whitespace() && !"{};\"".contains(chars[i]) {
                s.push(chars[i]);
                i += 1;
            }
            toks.push((s, line));
        }
    }
    let mut scope: Vec<String> = Vec::new();
    let full = |scope: &[String], key: &str| {
        let mut v: Vec<String> = scope.to_vec();
        if !key.is_empty() {
            v.push(key.to_string());
        }
        v.join("::").to_ascii_lowercase()
    };
    let mut k = 0;
    while k < toks.len() {
        let (t, ln) = (&toks[k].0, toks[k].1);
        let at = format!("{file}:{ln}");
        if t == "}" {
            scope.pop();
            k += 1;
            continue;
        }
        if t == ";" {
            k += 1;
            continue;
        }
        if t == "#clear" {
            if let Some((name, _)) = toks.get(k + 1) {
                effective.remove(&full(&scope, name));
            }
            k += 2;
            continue;
        }
        if let Some(v) = t.strip_prefix('"') {
            // A bare value inside a block: a list element of the block's key.
            let key = scope.join("::").to_ascii_lowercase();
            let e = effective.entry(key).or_default();
            e.values.push(v.to_string());
            e.from = at;
            k += 1;
            continue;
        }
        match toks.get(k + 1).map(|x| x.0.as_str()) {
            Some("{") => {
                scope.push(t.trim_end_matches("::").to_string());
                k += 2;
            }
            Some(v) if v.starts_with('"') => {
                let value = v[1..].to_string();
                let e = effective
                    .entry(full(&scope, t.trim_end_matches("::")))
                    .or_default();
                if t.ends_with("::") {
                    e.values.push(value);
                } else {
                    e.values = vec![value];
                }
                e.from = at;
                k += 2;
            }
            _ => k += 1,
        }
    }
}

fn truthy(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" | "with" | "enable" => Some(true),
        "false" | "no" | "off" | "0" | "without" | "disable" => Some(false),
        _ => None,
    }
}

pub struct Options {
    pub options: BTreeMap<String, AptValue>,
}

impl Resource for Options {
    fn id(&self) -> String {
        "apt:options".to_string()
    }

    fn kind(&self) -> &'static str {
        "apt"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let expected = json!(self.options);
        let mut effective = BTreeMap::new();
        for f in config_files(sys)? {
            if let Some(t) = sys.read_string(&f)? {
                parse_into(&t, &f, &mut effective);
            }
        }
        let mut actual = serde_json::Map::new();
        let mut problems = Vec::new();
        for (k, want) in &self.options {
            let have = effective
                .get(&k.to_ascii_lowercase())
                .cloned()
                .unwrap_or_default();
            actual.insert(k.clone(), json!({"values": have.values, "from": have.from}));
            let ok = match want {
                AptValue::One(w) => have
                    .values
                    .last()
                    .is_some_and(|h| h == w || truthy(h).is_some() && truthy(h) == truthy(w)),
                AptValue::List(l) => l.iter().all(|w| have.values.contains(w)),
            };
            if !ok {
                problems.push(match have.values.last() {
                    Some(h) => format!(
                        "{k} is \"{h}\" from {} (apt uses the last value it reads)",
                        have.from
                    ),
                    None => format!("{k} is not set in any file apt reads"),
                });
            }
        }
        Ok(Observation::judged(expected, json!(actual), &problems, ""))
    }

    fn plan(&self, _sys: &System, _obs: &Observation) -> Vec<Change> {
        Vec::new() // the file item writes 90guestprep; a later file that overrides it is the admin's
    }

    fn fixed_by(&self) -> Vec<String> {
        vec![format!("file:{OPTIONS_FILE}")]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_apt_configuration_as_apt_does() {
        let mut e = BTreeMap::new();
        parse_into(
            "// comment\nAcquire::ForceIPv4 \"true\";\nDpkg::Options { \"--force-confdef\"; \"--force-confold\"; };\n\
             APT { Install-Recommends \"false\"; Get { Assume-Yes \"true\"; }; };\n/* block\ncomment */\n# hash\n",
            "/a",
            &mut e,
        );
        parse_into(
            "Acquire::ForceIPv4 \"false\";\nDPkg::Options:: \"--force-unsafe-io\";\n",
            "/b",
            &mut e,
        );
        assert_eq!(e["acquire::forceipv4"].values, ["false"]);
        assert_eq!(e["acquire::forceipv4"].from, "/b:1");
        assert_eq!(
            e["dpkg::options"].values,
            ["--force-confdef", "--force-confold", "--force-unsafe-io"]
        );
        assert_eq!(e["apt::install-recommends"].values, ["false"]);
        assert_eq!(e["apt::get::assume-yes"].from, "/a:4");
        let mut opts = BTreeMap::new();
        opts.insert(
            "Acquire::ForceIPv4".to_string(),
            AptValue::One("true".into()),
        );
        opts.insert(
            "Dpkg::Options".to_string(),
            AptValue::List(vec!["--force-confdef".into()]),
        );
        let text = render_options(&opts);
        let mut back = BTreeMap::new();
        parse_into(&text, "/c", &mut back);
        assert_eq!(back["acquire::forceipv4"].values, ["true"]);
        assert_eq!(back["dpkg::options"].values, ["--force-confdef"]);
    }
}
