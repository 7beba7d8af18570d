//! `[ssh]`: sshd hardening through `/etc/ssh/sshd_config.d/05-guestprep.conf`.
//!
//! sshd takes the *first* value it reads for a keyword, and reads its drop-ins (through the
//! `Include` at the top of Debian's sshd_config) in name order, so the file is numbered early and
//! the effective-settings item reports any earlier file that would win over it (read as sshd reads
//! it: `sshd_config.rs`), or that sshd will not start. On a live root the new file is checked with
//! `sshd -t` and the old one restored if sshd rejects it.

use anyhow::Result;
use serde_json::json;

use super::FileResource;
use super::sshd_config;
use crate::engine::{Change, Observation, Resource, System};
use crate::policy::Ssh;
use crate::report::Status;
use crate::text::escape;

/// The unit that reads the file (restarted or reloaded after it changed).
pub const UNIT: &str = "ssh.service";
pub const FILE: &str = crate::paths::SSHD_FILE;
const MAIN: &str = "/etc/ssh/sshd_config";
/// sshd's privilege separation directory (`_PATH_PRIVSEP_CHROOT_DIR` as Debian builds it).
pub const PRIVSEP_DIR: &str = "/run/sshd";
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
    // `sshd -t` as root stops at "Missing privilege separation directory" without it (sshd.c,
    // after loading the host keys). Debian makes it only as ssh.service's RuntimeDirectory=sshd
    // (0755, removed when the service stops; no tmpfiles.d entry), so it is missing until the
    // service first runs (a socket-activated clone) or while it is stopped. Made as Debian's init
    // script and runit `run` make it before their own `sshd -t`: mkdir, 0755, root.
    file.validate_needs = vec![(PRIVSEP_DIR.to_string(), 0o755)];
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
        let Some(read) = sshd_config::read(sys, MAIN)? else {
            return Ok(Observation::new(
                Status::Skipped,
                json!(expected),
                json!(null),
                format!(
                    "{MAIN} not present (openssh-server not installed): the drop-in is ready for it"
                ),
            ));
        };
        if let Some(problem) = &read.problem {
            return Ok(Observation::new(
                Status::Error,
                json!(expected),
                json!(null),
                problem.to_string(),
            ));
        }
        let mut actual = serde_json::Map::new();
        let mut problems = Vec::new();
        for (k, v) in &self.settings {
            match read.get(k) {
                Some(s) => {
                    actual.insert(k.to_string(), json!({"value": s.value, "from": s.at}));
                    if !crate::policy::ssh::same_value(k, &s.value, v) {
                        problems.push(format!(
                            "{k} is {} from {} (sshd uses the first value it reads)",
                            escape(&s.value),
                            escape(&s.at)
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
    for (_, line) in super::conffiles::lines(&main, false) {
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
                            .is_some_and(|(d, p)| d == dir && crate::text::glob(p, name))
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
