//! `apt:source:NAME`: apt really has the policy's source, read as apt reads its sources
//! (sources.list(5)): `/etc/apt/sources.list` and `sources.list.d/*.list` in the one-line style,
//! `sources.list.d/*.sources` in deb822 style (a stanza with `Enabled: no` is skipped), each
//! entry expanded to (type, URI, suite, component) with the file:line it came from; and the
//! keyring the source is signed by exists (apt refuses the source's lists otherwise).
//!
//! The source's own file (`guestprep-NAME.sources`) is the `file:` item before this one: drift
//! here while that file is not written yet is fixed through it. The same target configured in
//! another file too (a one-line `.list` a script wrote, say) is said in the message: apt warns
//! that it "is configured multiple times".

use anyhow::Result;
use serde_json::json;

use super::apt::{SOURCES_DIR, source_path};
use crate::engine::{Change, Observation, Resource, System};
use crate::policy::AptSource;

const SOURCES_LIST: &str = "/etc/apt/sources.list";

/// One (type, URI, suite, component) apt will fetch, and where it was configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub kind: String,
    pub uri: String,
    pub suite: String,
    /// None for a suite given as an exact path (`trixie/`), which has no components.
    pub component: Option<String>,
    pub at: String,
}

impl Target {
    fn same(&self, o: &Target) -> bool {
        self.kind == o.kind
            && self.uri == o.uri
            && self.suite == o.suite
            && self.component == o.component
    }

    fn shown(&self) -> String {
        let c = self.component.as_deref().unwrap_or("");
        format!("{} {} {} {c}", self.kind, self.uri, self.suite)
            .trim_end()
            .to_string()
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A URI as apt compares it: without the trailing slashes.
fn norm(uri: &str) -> String {
    uri.trim_end_matches('/').to_string()
}

fn expand(kinds: &[&str], uris: &[&str], suites: &[&str], comps: &[&str], at: &str) -> Vec<Target> {
    let mut out = Vec::new();
    for k in kinds {
        for u in uris {
            for s in suites {
                let comps: Vec<Option<String>> = if comps.is_empty() || s.ends_with('/') {
                    vec![None]
                } else {
                    comps.iter().map(|c| Some(c.to_string())).collect()
                };
                for c in comps {
                    out.push(Target {
                        kind: k.to_string(),
                        uri: norm(u),
                        suite: s.to_string(),
                        component: c,
                        at: at.to_string(),
                    });
                }
            }
        }
    }
    out
}

/// The one-line style: `deb [opt=val …] URI SUITE [COMPONENT…]`, `#` comments.
pub fn parse_one_line(text: &str, file: &str) -> Vec<Target> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        let Some((kind, rest)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        if kind != "deb" && kind != "deb-src" {
            continue;
        }
        let mut rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix('[') {
            match r.split_once(']') {
                Some((_, after)) => rest = after,
                None => continue, // unterminated options: apt rejects the line
            }
        }
        let w: Vec<&str> = rest.split_whitespace().collect();
        if w.len() < 2 {
            continue;
        }
        let at = format!("{file}:{}", n + 1);
        out.extend(expand(&[kind], &w[..1], &w[1..2], &w[2..], &at));
    }
    out
}

/// The deb822 style: stanzas of `Field: value` (continuation lines indented), blank-line
/// separated; field names ignore case.
pub fn parse_deb822(text: &str, file: &str) -> Vec<Target> {
    let mut out = Vec::new();
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut start = 0;
    let flush = |fields: &mut Vec<(String, String)>, start: usize, out: &mut Vec<Target>| {
        let get = |k: &str| -> Vec<String> {
            fields
                .iter()
                .find(|(f, _)| f.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default()
        };
        let enabled = get("Enabled");
        let off = enabled
            .first()
            .is_some_and(|e| e.eq_ignore_ascii_case("no"));
        if !fields.is_empty() && !off {
            let (k, u, s, c) = (get("Types"), get("URIs"), get("Suites"), get("Components"));
            let at = format!("{file}:{start}");
            out.extend(
                expand(&strs(&k), &strs(&u), &strs(&s), &strs(&c), &at)
                    .into_iter()
                    .filter(|t| t.kind == "deb" || t.kind == "deb-src"),
            );
        }
        fields.clear();
    };
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            flush(&mut fields, start, &mut out);
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = fields.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if fields.is_empty() {
            start = n + 1;
        }
        if let Some((k, v)) = line.split_once(':') {
            fields.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    flush(&mut fields, start, &mut out);
    out
}

/// Every target apt reads: sources.list, then sources.list.d's `.list` and `.sources` files (names
/// of letters, digits, `_`, `-`, `.`), in name order.
pub fn targets(sys: &System) -> Result<Vec<Target>> {
    let mut out = Vec::new();
    if let Some(t) = sys.read_string(SOURCES_LIST)? {
        out.extend(parse_one_line(&t, SOURCES_LIST));
    }
    let mut names: Vec<String> = sys
        .list_dir(SOURCES_DIR)?
        .into_iter()
        .filter(|n| {
            n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
                && (n.ends_with(".list") || n.ends_with(".sources"))
        })
        .collect();
    names.sort();
    for n in names {
        let f = format!("{SOURCES_DIR}/{n}");
        let Some(t) = sys.read_string(&f)? else {
            continue;
        };
        if n.ends_with(".list") {
            out.extend(parse_one_line(&t, &f));
        } else {
            out.extend(parse_deb822(&t, &f));
        }
    }
    Ok(out)
}

pub struct Source {
    pub source: AptSource,
}

impl Source {
    /// What the policy's source makes apt fetch.
    fn wanted(&self) -> Vec<Target> {
        let s = &self.source;
        expand(
            &strs(&s.types),
            &strs(&s.uris),
            &strs(&s.suites),
            &strs(&s.components),
            "",
        )
    }
}

impl Resource for Source {
    fn id(&self) -> String {
        format!("apt:source:{}", self.source.name)
    }

    fn kind(&self) -> &'static str {
        "apt"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let own = source_path(&self.source.name);
        let expected = json!({
            "targets": self.wanted().iter().map(Target::shown).collect::<Vec<_>>(),
            "signedBy": self.source.signed_by,
        });
        let have = targets(sys)?;
        let mut problems = Vec::new();
        let mut missing = Vec::new();
        let mut from = Vec::new();
        let mut also = Vec::new();
        for w in self.wanted() {
            let hits: Vec<&Target> = have.iter().filter(|h| h.same(&w)).collect();
            if hits.is_empty() {
                missing.push(w.shown());
            }
            for h in hits {
                let file = h.at.rsplit_once(':').map_or(h.at.as_str(), |(f, _)| f);
                let list = if file == own { &mut from } else { &mut also };
                if !list.contains(&h.at) {
                    list.push(h.at.clone());
                }
            }
        }
        if !missing.is_empty() {
            problems.push(format!("not in any file apt reads: {}", missing.join("; ")));
        }
        let keyring = self.source.signed_by.as_ref().map(|k| (k, sys.exists(k)));
        if let Some((k, false)) = keyring {
            problems.push(format!(
                "{k} does not exist: apt will refuse the source's lists (install the keyring package or the key first)"
            ));
        }
        let actual = json!({
            "configuredIn": from,
            "alsoIn": also,
            "missing": missing,
            "keyring": keyring.map(|(_, e)| e),
        });
        let note = if also.is_empty() {
            String::new()
        } else {
            format!(
                "also configured in {}: apt warns that these targets are configured multiple times",
                also.join(", ")
            )
        };
        Ok(Observation::judged(expected, actual, &problems, note))
    }

    fn plan(&self, _sys: &System, _obs: &Observation) -> Vec<Change> {
        Vec::new() // the source's file item writes it; the keyring is the admin's
    }

    fn fixed_by(&self) -> Vec<String> {
        vec![format!("file:{}", source_path(&self.source.name))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_styles_as_apt_does() {
        let one = parse_one_line(
            "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://deb.debian.org/debian/ trixie-backports main contrib\ndeb-src http://x/ y/\nbogus line\n",
            "/a.list",
        );
        let shown: Vec<String> = one.iter().map(Target::shown).collect();
        assert_eq!(
            shown,
            [
                "deb http://deb.debian.org/debian trixie-backports main",
                "deb http://deb.debian.org/debian trixie-backports contrib",
                "deb-src http://x y/",
            ]
        );
        assert_eq!(one[0].at, "/a.list:2");
        let d = parse_deb822(
            "# c\nTypes: deb deb-src\nURIs: http://deb.debian.org/debian\nSuites: trixie\n  trixie-updates\nComponents: main\n\nEnabled: no\nTypes: deb\nURIs: http://off\nSuites: x\n",
            "/b.sources",
        );
        let shown: Vec<String> = d.iter().map(Target::shown).collect();
        assert_eq!(
            shown,
            [
                "deb http://deb.debian.org/debian trixie main",
                "deb http://deb.debian.org/debian trixie-updates main",
                "deb-src http://deb.debian.org/debian trixie main",
                "deb-src http://deb.debian.org/debian trixie-updates main",
            ]
        );
        assert_eq!(d[0].at, "/b.sources:2");
    }
}
