//! A whole file guestprep owns: exact content and mode, or absent.
//!
//! Every configuration resource (chrony, sysctl.d, modules-load.d, grub.d, sshd_config.d) and every
//! `[[files]]` entry is one of these. It owns comparing bytes and mode, planning one atomic write
//! (or a removal), and, when a validator is given, checking the new file on a live system and
//! rolling back to the old one if the validator rejects it.

use anyhow::{Result, anyhow};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::engine::{self, Change, Observation, Resource, System};
use crate::report::Status;
use crate::root::{Node, SymlinkAtOwnedPath};

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
        // The last component is never followed: a symlink at a path guestprep owns is reported,
        // not written through (it could point at sshd_config, or at a vendor file).
        let (current, mode) = match sys.root.lstat(&self.path)? {
            Node::Missing => (None, None),
            Node::File { mode, .. } => (sys.root.read_owned(&self.path)?, Some(mode)),
            Node::Symlink(target) => {
                let link = json!({"exists": true, "symlink": target});
                let Some(_) = &self.content else {
                    // Left from an earlier policy: removing it unlinks the link, not its target.
                    let mut obs = Observation::new(
                        Status::Drift,
                        json!({"exists": false}),
                        link,
                        format!(
                            "a symlink (to {}) is left at a path guestprep owned; to be removed (the link, not its target)",
                            target.display()
                        ),
                    );
                    obs.current = Some(Vec::new());
                    return Ok(obs);
                };
                return Ok(Observation::new(
                    Status::Error,
                    json!({"exists": true, "sha256": sha(self.content.as_deref().unwrap_or_default())}),
                    link,
                    format!(
                        "{}",
                        SymlinkAtOwnedPath {
                            path: self.path.clone(),
                            target
                        }
                    ),
                ));
            }
            _ => return Err(anyhow!("{} exists but is not a regular file", self.path)),
        };
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
        // The mode the file has now: a rollback puts it back as it was.
        let old_mode = match sys.root.lstat(&self.path)? {
            Node::File { mode, .. } => Some(mode),
            _ => None,
        };
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
            // Put the old file back so the service keeps a configuration it accepts: the same
            // kind of change, through the same path, with the old content and mode.
            let mut undone = Vec::new();
            for c in plan {
                if let Change::Write { old, content, .. } = c {
                    let undo = match old {
                        Some(old) => Change::Write {
                            path: self.path.clone(),
                            content: old.clone(),
                            mode: old_mode,
                            old: Some(content.clone()),
                        },
                        None => Change::Remove {
                            path: self.path.clone(),
                            old: content.clone(),
                        },
                    };
                    undo.execute(sys)?;
                    undone.push(undo.describe());
                }
            }
            return Err(e.context(format!(
                "{} rejected by validation; previous version restored ({})",
                self.path,
                undone.join(", ")
            )));
        }
        Ok(vec![format!(
            "{} accepted by `{}`",
            self.path,
            argv.join(" ")
        )])
    }
}
