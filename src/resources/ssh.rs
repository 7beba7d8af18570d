//! `[ssh]`: sshd hardening through `/etc/ssh/sshd_config.d/05-guestprep.conf`.
//!
//! sshd takes the *first* value it reads for a keyword, and reads its drop-ins (through the
//! `Include` at the top of Debian's sshd_config) in name order, so the file is numbered early and
//! the effective-settings item reports any earlier file that would win over it. On a live root the
//! new file is checked with `sshd -t` and the old one restored if sshd rejects it.

use anyhow::Result;
use serde_json::json;

use super::FileResource;
use super::conffiles;
use crate::engine::{Change, Observation, Resource, System};
use crate::policy::Ssh;
use crate::report::Status;

/// The unit that reads the file (restarted or reloaded after it changed).
pub const UNIT: &str = "ssh.service";
pub const FILE: &str = "/etc/ssh/sshd_config.d/05-guestprep.conf";
const MAIN: &str = "/etc/ssh/sshd_config";
const DROPIN_DIR: &str = "/etc/ssh/sshd_config.d";

/// The algorithm lists, as sshd keywords.
fn algorithms(s: &Ssh) -> Vec<(String, String)> {
    let mut v = Vec::new();
    if !s.ciphers.is_empty() {
        v.push(("Ciphers".to_string(), s.ciphers.join(",")));
    }
    if !s.macs.is_empty() {
        v.push(("MACs".to_string(), s.macs.join(",")));
    }
    if !s.kex_algorithms.is_empty() {
        v.push(("KexAlgorithms".to_string(), s.kex_algorithms.join(",")));
    }
    v
}

pub fn render(s: &Ssh) -> String {
    let mut out = String::from(super::file::HEADER);
    let settings = s.settings.iter().map(|(k, v)| (k.clone(), v.clone()));
    for (k, v) in algorithms(s).into_iter().chain(settings) {
        out.push_str(&format!("{k} {v}\n"));
    }
    out
}

pub fn resources(s: &Ssh) -> Vec<Box<dyn Resource>> {
    let mut file = FileResource::new("ssh", FILE, render(s));
    file.validate = Some(vec!["/usr/sbin/sshd".into(), "-t".into()]);
    let mut out: Vec<Box<dyn Resource>> = vec![
        Box::new(file),
        Box::new(Effective {
            id: "ssh:effective".into(),
            settings: algorithms(s),
        }),
    ];
    // One item per other keyword: the value sshd uses and the file:line it comes from.
    for (k, v) in &s.settings {
        out.push(Box::new(Effective {
            id: format!("ssh:{k}"),
            settings: vec![(k.clone(), v.clone())],
        }));
    }
    out
}

/// The effective values of some sshd keywords, as sshd reads them (`ssh:effective` for the
/// algorithm lists, `ssh:KEYWORD` for each of `settings`).
pub struct Effective {
    id: String,
    settings: Vec<(String, String)>,
}

impl Effective {
    /// Keyword → (value, file:line) as sshd reads them: sshd_config with the `Include` of the
    /// drop-in directory expanded in place, first value wins; a `Match` block ends the global part.
    fn first_values(sys: &System) -> Result<Option<Vec<(String, String, String)>>> {
        let Some(main) = sys.read_string(MAIN)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        Self::read_into(sys, MAIN, &main, 0, &mut out)?;
        Ok(Some(out))
    }

    /// The files an `Include` names, as sshd expands them: each argument relative to /etc/ssh
    /// unless absolute, `*` and `?` in its last component globbed, matches in name order.
    fn include(sys: &System, args: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for arg in args.split_whitespace() {
            let abs = if arg.starts_with('/') {
                arg.to_string()
            } else {
                format!("/etc/ssh/{arg}")
            };
            let Some((dir, pat)) = abs.rsplit_once('/') else {
                continue;
            };
            if pat.contains(['*', '?']) {
                let mut names: Vec<String> = sys
                    .list_dir(dir)?
                    .into_iter()
                    .filter(|n| !n.starts_with('.') && crate::waivers::glob(pat, n))
                    .collect();
                names.sort();
                out.extend(names.into_iter().map(|n| format!("{dir}/{n}")));
            } else {
                out.push(abs);
            }
        }
        Ok(out)
    }

    /// Returns false when a `Match` block was reached (nothing after it is global).
    fn read_into(
        sys: &System,
        file: &str,
        text: &str,
        depth: usize,
        out: &mut Vec<(String, String, String)>,
    ) -> Result<bool> {
        for (n, line) in conffiles::lines(text, false) {
            let (kw, val) = line
                .split_once(|c: char| c.is_whitespace() || c == '=')
                .unwrap_or((line, ""));
            let kw = kw.to_ascii_lowercase();
            let val = val.trim().trim_start_matches('=').trim();
            if kw == "match" {
                return Ok(false);
            }
            if kw == "include" {
                if depth > 8 {
                    continue;
                }
                for p in Self::include(sys, val)? {
                    if let Some(t) = sys.read_string(&p)?
                        && !Self::read_into(sys, &p, &t, depth + 1, out)?
                    {
                        return Ok(false);
                    }
                }
                continue;
            }
            if !out.iter().any(|(k, _, _)| *k == kw) {
                out.push((kw, val.to_string(), format!("{file}:{n}")));
            }
        }
        Ok(true)
    }
}

impl Resource for Effective {
    fn id(&self) -> String {
        self.id.clone()
    }

    fn kind(&self) -> &'static str {
        "ssh"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let expected: serde_json::Map<String, serde_json::Value> = self
            .settings
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let Some(first) = Self::first_values(sys)? else {
            return Ok(Observation::new(
                Status::Skipped,
                json!(expected),
                json!(null),
                format!(
                    "{MAIN} not present (openssh-server not installed): the drop-in is ready for it"
                ),
            ));
        };
        let mut actual = serde_json::Map::new();
        let mut problems = Vec::new();
        for (k, v) in &self.settings {
            match first
                .iter()
                .find(|(kw, _, _)| *kw == k.to_ascii_lowercase())
            {
                Some((_, val, at)) => {
                    actual.insert(k.to_string(), json!({"value": val, "from": at}));
                    if !crate::policy::ssh::same_value(k, val, v) {
                        problems.push(format!(
                            "{k} is {val} from {at} (sshd uses the first value it reads)"
                        ));
                    }
                }
                None if includes_dropin(sys)? => problems.push(format!(
                    "{k} not set in any file sshd reads ({MAIN} includes {FILE}, which does not set it)"
                )),
                None => problems.push(format!(
                    "{k} not set in any file sshd reads: {MAIN} does not include {FILE} (no `Include {DROPIN_DIR}/*.conf` before any `Match`)"
                )),
            }
        }
        Ok(Observation::judged(
            json!(expected),
            json!(actual),
            &problems,
            "",
        ))
    }

    fn plan(&self, _sys: &System, _obs: &Observation) -> Vec<Change> {
        Vec::new() // the drop-in file resource writes it; an earlier override is the admin's
    }

    fn fixed_by(&self) -> Vec<String> {
        vec![format!("file:{FILE}")]
    }
}

/// Whether the global part of sshd_config has an `Include` whose pattern names [`FILE`]
/// (whether or not the file exists yet).
fn includes_dropin(sys: &System) -> Result<bool> {
    let Some(main) = sys.read_string(MAIN)? else {
        return Ok(false);
    };
    let (dir, name) = FILE.rsplit_once('/').expect("absolute");
    for (_, line) in conffiles::lines(&main, false) {
        let (kw, val) = line
            .split_once(|c: char| c.is_whitespace() || c == '=')
            .unwrap_or((line, ""));
        match kw.to_ascii_lowercase().as_str() {
            "match" => return Ok(false),
            "include" => {
                let hit = val
                    .trim()
                    .trim_start_matches('=')
                    .split_whitespace()
                    .any(|a| {
                        let abs = if a.starts_with('/') {
                            a.to_string()
                        } else {
                            format!("/etc/ssh/{a}")
                        };
                        abs.rsplit_once('/')
                            .is_some_and(|(d, p)| d == dir && crate::waivers::glob(p, name))
                    });
                if hit {
                    return Ok(true);
                }
            }
            _ => {}
        }
    }
    Ok(false)
}
