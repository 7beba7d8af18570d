//! A whole file guestprep owns: exact content and mode, or absent.
//!
//! Every configuration resource (chrony, sysctl.d, modules-load.d, grub.d, sshd_config.d) and every
//! `[[files]]` entry is one of these. It owns comparing bytes and mode, planning one atomic write
//! (or a removal), and, when a validator is given, checking the new file on a live system and
//! rolling back to the old one if the validator rejects it.

use std::os::unix::fs::MetadataExt;

use anyhow::{Context, Result, anyhow};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::engine::{self, Change, Observation, Resource, System};
use crate::fsutil;
use crate::report::Status;

/// The first line of every file guestprep generates.
pub const HEADER: &str = "# Managed by guestprep: local edits are overwritten. Change the policy instead\n# (`guestprep policy show` lists where each value comes from).\n";

pub struct FileResource {
    pub kind: &'static str,
    pub path: String,
    /// `None`: the file must not exist (a section was removed from the policy).
    pub content: Option<Vec<u8>>,
    pub mode: Option<u32>,
    /// On a live root, run after writing; a failure restores the old file.
    pub validate: Option<Vec<String>>,
}

impl FileResource {
    pub fn new(kind: &'static str, path: &str, content: String) -> Self {
        FileResource {
            kind,
            path: path.to_string(),
            content: Some(content.into_bytes()),
            mode: None,
            validate: None,
        }
    }

    pub fn absent(kind: &'static str, path: &str) -> Self {
        FileResource {
            kind,
            path: path.to_string(),
            content: None,
            mode: None,
            validate: None,
        }
    }
}

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

impl Resource for FileResource {
    fn id(&self) -> String {
        format!("file:{}", self.path)
    }

    fn kind(&self) -> &'static str {
        self.kind
    }

    fn managed_paths(&self) -> Vec<String> {
        vec![self.path.clone()]
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let host = sys.root.resolve(&self.path)?;
        let meta = match std::fs::metadata(&host) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("inspecting {}", host.display())),
        };
        if meta.as_ref().is_some_and(|m| !m.is_file()) {
            return Err(anyhow!("{} exists but is not a regular file", self.path));
        }
        let current = match &meta {
            Some(_) => {
                Some(std::fs::read(&host).with_context(|| format!("reading {}", host.display()))?)
            }
            None => None,
        };
        let mode = meta.as_ref().map(|m| m.mode() & 0o7777);
        let actual = match (&current, mode) {
            (Some(c), Some(m)) => {
                json!({"exists": true, "sha256": sha(c), "mode": format!("{m:04o}")})
            }
            _ => json!({"exists": false}),
        };
        let Some(want) = &self.content else {
            let (status, msg) = match current {
                Some(_) => (Status::Drift, "left from an earlier policy; to be removed"),
                None => (Status::Compliant, ""),
            };
            let mut obs = Observation::new(status, json!({"exists": false}), actual, msg);
            obs.current = current;
            return Ok(obs);
        };
        let mut expected = json!({"exists": true, "sha256": sha(want)});
        if let Some(m) = self.mode {
            expected["mode"] = json!(format!("{m:04o}"));
        }
        let (status, message) = match (&current, mode) {
            (None, _) => (Status::Drift, "missing".to_string()),
            (Some(c), _) if c != want => {
                let diff = similar::TextDiff::from_lines(
                    String::from_utf8_lossy(c).as_ref(),
                    String::from_utf8_lossy(want).as_ref(),
                )
                .ops()
                .len();
                (Status::Drift, format!("content differs ({diff} hunks)"))
            }
            (Some(_), Some(m)) if self.mode.is_some_and(|w| w != m) => (
                Status::Drift,
                format!("mode {m:04o}, want {:04o}", self.mode.unwrap_or_default()),
            ),
            _ => (Status::Compliant, String::new()),
        };
        let mut obs = Observation::new(status, expected, actual, message);
        obs.current = current;
        Ok(obs)
    }

    fn plan(&self, _sys: &System, obs: &Observation) -> Vec<Change> {
        if obs.status != Status::Drift {
            return Vec::new();
        }
        match (&self.content, &obs.current) {
            (Some(want), _) => vec![Change::Write {
                path: self.path.clone(),
                content: want.clone(),
                mode: self.mode,
                old: obs.current.clone(),
            }],
            (None, Some(old)) => vec![Change::Remove {
                path: self.path.clone(),
                old: old.clone(),
            }],
            (None, None) => Vec::new(),
        }
    }

    fn apply(&self, sys: &System, plan: &[Change]) -> Result<Vec<String>> {
        for c in plan {
            c.execute(sys)?;
        }
        let Some(argv) = &self.validate else {
            return Ok(Vec::new());
        };
        if !sys.is_live() || !sys.root.exists(&argv[0]) {
            return Ok(Vec::new());
        }
        if let Err(e) = engine::run(argv) {
            // Put the old file back so the service keeps a configuration it accepts.
            for c in plan {
                if let Change::Write { old, mode, .. } = c {
                    match old {
                        Some(old) => {
                            fsutil::write_atomic(&sys.root, &self.path, old, *mode)?;
                        }
                        None => {
                            fsutil::remove(&sys.root, &self.path)?;
                        }
                    }
                }
            }
            return Err(e.context(format!(
                "{} rejected by validation; previous version restored",
                self.path
            )));
        }
        Ok(vec![format!(
            "{} accepted by `{}`",
            self.path,
            argv.join(" ")
        )])
    }
}
