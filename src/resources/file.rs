//! A whole file guestprep owns: exact content and mode, or absent.
//!
//! Every configuration resource (chrony, sysctl.d, modules-load.d, grub.d, sshd_config.d) and every
//! `[[files]]` entry is one of these. It owns comparing bytes and mode, planning one atomic write
//! (or a removal), and, when a validator is given, checking the new file on a live system and
//! rolling back to the old one if the validator rejects it.

use anyhow::{Result, anyhow};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::engine::{Change, Observation, Resource, System};
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
    /// Directories (path, mode) the validator needs that the service would have made: planned
    /// (a recorded change) when missing and the validator is to run.
    pub validate_needs: Vec<(String, u32)>,
    /// Owner and group (names in the root's /etc/passwd and /etc/group, or numbers).
    pub owner: Option<String>,
    pub group: Option<String>,
}

impl FileResource {
    pub fn new(kind: &'static str, path: &str, content: String) -> Self {
        FileResource {
            kind,
            path: path.to_string(),
            content: Some(content.into_bytes()),
            mode: None,
            validate: None,
            validate_needs: Vec::new(),
            owner: None,
            group: None,
        }
    }

    pub fn absent(kind: &'static str, path: &str) -> Self {
        FileResource {
            kind,
            path: path.to_string(),
            content: None,
            mode: None,
            validate: None,
            validate_needs: Vec::new(),
            owner: None,
            group: None,
        }
    }
}

/// The uid and gid of an owner and group as the managed system names them: its own /etc/passwd
/// and /etc/group (not the host's), or numbers.
pub fn ids(
    sys: &System,
    owner: Option<&str>,
    group: Option<&str>,
) -> Result<(Option<u32>, Option<u32>)> {
    let look = |name: Option<&str>, db: &str, what: &str| -> Result<Option<u32>> {
        let Some(n) = name else { return Ok(None) };
        if let Ok(id) = n.parse::<u32>() {
            return Ok(Some(id));
        }
        let text = sys.read_string(db)?.unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[0] == n).then(|| f[2].parse::<u32>().ok())
            })
            .next()
            .flatten()
            .map(Some)
            .ok_or_else(|| anyhow!("{what} `{n}` is not in {db} of the {}", sys.describe()))
    };
    Ok((
        look(owner, "/etc/passwd", "user")?,
        look(group, "/etc/group", "group")?,
    ))
}

/// `owner:group` as the policy wrote them, for messages.
fn shown(owner: Option<&str>, group: Option<&str>) -> String {
    match (owner, group) {
        (Some(o), Some(g)) => format!("{o}:{g}"),
        (Some(o), None) => o.to_string(),
        (None, Some(g)) => format!(":{g}"),
        (None, None) => String::new(),
    }
}

/// Drift of ownership: the ids to set (None when right), and the message.
fn owner_drift(
    want: (Option<u32>, Option<u32>),
    have: (u32, u32),
    names: (Option<&str>, Option<&str>),
) -> Option<String> {
    let bad_u = want.0.is_some_and(|u| u != have.0);
    let bad_g = want.1.is_some_and(|g| g != have.1);
    (bad_u || bad_g).then(|| {
        format!(
            "owner {}:{}, want {}",
            have.0,
            have.1,
            shown(names.0, names.1)
        )
    })
}

/// The change that sets a mode and/or the owner a check found wrong (`data`: its `chown`, `uid`
/// and `gid`), or None when neither is.
fn attrs(
    path: &str,
    mode: Option<u32>,
    data: &serde_json::Value,
    names: (Option<&str>, Option<&str>),
) -> Option<Change> {
    let chown = data["chown"] == json!(true);
    let id = |k: &str| chown.then(|| data[k].as_u64().map(|v| v as u32)).flatten();
    (mode.is_some() || chown).then(|| Change::Attrs {
        path: path.to_string(),
        mode,
        uid: id("uid"),
        gid: id("gid"),
        shown: if chown {
            shown(names.0, names.1)
        } else {
            String::new()
        },
    })
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
        let (current, mode) = match sys.lstat(&self.path)? {
            Node::Missing => (None, None),
            Node::File { mode, .. } => (sys.read_owned(&self.path)?, Some(mode)),
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
            Node::Other(kind) => {
                return Err(crate::saferead::NotRegular {
                    path: self.path.clone(),
                    kind,
                }
                .into());
            }
            Node::Dir { .. } => {
                return Err(crate::saferead::NotRegular {
                    path: self.path.clone(),
                    kind: "directory",
                }
                .into());
            }
        };
        // The wanted bytes' digest, reused for the current bytes when they are the same.
        let want_sha = self.content.as_deref().map(sha);
        let actual = match (&current, mode) {
            (Some(c), Some(m)) => {
                let digest = match (&self.content, &want_sha) {
                    (Some(w), Some(d)) if w == c => d.clone(),
                    _ => sha(c),
                };
                json!({"exists": true, "sha256": digest, "mode": format!("{m:04o}")})
            }
            _ => json!({"exists": false}),
        };
        let (Some(want), Some(want_sha)) = (&self.content, want_sha) else {
            let (status, msg) = match current {
                Some(_) => (Status::Drift, "left from an earlier policy; to be removed"),
                None => (Status::Compliant, ""),
            };
            let mut obs = Observation::new(status, json!({"exists": false}), actual, msg);
            obs.current = current;
            return Ok(obs);
        };
        let mut expected = json!({"exists": true, "sha256": want_sha});
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
        let rewrite = status == Status::Drift;
        let names = (self.owner.as_deref(), self.group.as_deref());
        let want_ids = ids(sys, names.0, names.1)?;
        let mut chown = false;
        if names.0.is_some() || names.1.is_some() {
            expected["owner"] = json!(shown(names.0, names.1));
            if let Node::File { uid, gid, .. } = sys.lstat(&self.path)? {
                let mut actual = actual;
                actual["owner"] = json!(format!("{uid}:{gid}"));
                let drift = owner_drift(want_ids, (uid, gid), names);
                chown = drift.is_some() || status == Status::Drift;
                let (status, message) = match (status, drift) {
                    (Status::Compliant, Some(d)) => (Status::Drift, d),
                    (Status::Drift, Some(d)) => (Status::Drift, format!("{message}; {d}")),
                    (s, _) => (s, message),
                };
                let mut obs = Observation::new(status, expected, actual, message);
                obs.current = current;
                obs.data = json!({"rewrite": rewrite, "chown": chown, "uid": want_ids.0, "gid": want_ids.1});
                return Ok(obs);
            }
            chown = true; // a new file: written, then given its owner
        }
        let mut obs = Observation::new(status, expected, actual, message);
        obs.current = current;
        obs.data =
            json!({"rewrite": rewrite, "chown": chown, "uid": want_ids.0, "gid": want_ids.1});
        Ok(obs)
    }

    fn plan(&self, sys: &System, obs: &Observation) -> Vec<Change> {
        if obs.status != Status::Drift {
            return Vec::new();
        }
        let file = self.file_plan(obs);
        if file.is_empty() {
            return file;
        }
        let mut plan = self.needed_dirs(sys);
        plan.extend(file);
        plan
    }

    fn apply(&self, sys: &System, plan: &[Change]) -> Result<Vec<String>> {
        // The mode the file has now: a rollback puts it back as it was.
        let old_mode = match sys.lstat(&self.path)? {
            Node::File { mode, .. } => Some(mode),
            _ => None,
        };
        for c in plan {
            c.execute(sys)?;
        }
        let Some(argv) = &self.validate else {
            return Ok(Vec::new());
        };
        if !sys.is_live() || !sys.exists(&argv[0]) {
            return Ok(Vec::new());
        }
        if let Err(e) = crate::exec::run(argv) {
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

impl FileResource {
    /// The directories the validator needs, missing now, on a live root where it runs.
    fn needed_dirs(&self, sys: &System) -> Vec<Change> {
        let Some(argv) = &self.validate else {
            return Vec::new();
        };
        if !sys.is_live() || !sys.exists(&argv[0]) {
            return Vec::new();
        }
        self.validate_needs
            .iter()
            .filter(|(path, _)| matches!(sys.lstat(path), Ok(Node::Missing)))
            .map(|(path, mode)| Change::MakeDir {
                path: path.clone(),
                mode: *mode,
            })
            .collect()
    }

    /// The writes (or the removal) and attributes a drifted file needs.
    fn file_plan(&self, obs: &Observation) -> Vec<Change> {
        match (&self.content, &obs.current) {
            (Some(want), _) => {
                let mut plan = Vec::new();
                if obs.data["rewrite"] == json!(true) {
                    plan.push(Change::Write {
                        path: self.path.clone(),
                        content: want.clone(),
                        mode: self.mode,
                        old: obs.current.clone(),
                    });
                }
                let names = (self.owner.as_deref(), self.group.as_deref());
                if let Some(c) = attrs(&self.path, None, &obs.data, names) {
                    plan.push(c);
                }
                plan
            }
            (None, Some(old)) => vec![Change::Remove {
                path: self.path.clone(),
                old: old.clone(),
            }],
            (None, None) => Vec::new(),
        }
    }
}

/// A directory guestprep owns: it exists, with the policy's mode and owner (its content is not
/// guestprep's). `[[files]] kind = "directory"`.
pub struct DirResource {
    pub path: String,
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
}

impl Resource for DirResource {
    fn id(&self) -> String {
        format!("file:{}", self.path)
    }

    fn kind(&self) -> &'static str {
        "file"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let names = (self.owner.as_deref(), self.group.as_deref());
        let mut expected = json!({"directory": true});
        if let Some(m) = self.mode {
            expected["mode"] = json!(format!("{m:04o}"));
        }
        if names.0.is_some() || names.1.is_some() {
            expected["owner"] = json!(shown(names.0, names.1));
        }
        let want = ids(sys, names.0, names.1)?;
        let data = |create: bool, mode: Option<u32>, chown: bool| json!({"create": create, "mode": mode, "chown": chown, "uid": want.0, "gid": want.1});
        match sys.lstat(&self.path)? {
            Node::Missing => {
                let mut obs =
                    Observation::new(Status::Drift, expected, json!({"exists": false}), "missing");
                obs.data = data(true, None, names.0.is_some() || names.1.is_some());
                Ok(obs)
            }
            Node::Dir { mode, uid, gid } => {
                let actual = json!({"directory": true, "mode": format!("{mode:04o}"), "owner": format!("{uid}:{gid}")});
                let mut problems = Vec::new();
                let bad_mode = self.mode.filter(|w| *w != mode);
                if let Some(w) = bad_mode {
                    problems.push(format!("mode {mode:04o}, want {w:04o}"));
                }
                let drift = owner_drift(want, (uid, gid), names);
                problems.extend(drift.clone());
                let mut obs = Observation::judged(expected, actual, &problems, "");
                obs.data = data(false, bad_mode, drift.is_some());
                Ok(obs)
            }
            Node::Symlink(target) => Ok(Observation::new(
                Status::Error,
                expected,
                json!({"symlink": target}),
                format!(
                    "{}",
                    SymlinkAtOwnedPath {
                        path: self.path.clone(),
                        target
                    }
                ),
            )),
            _ => Err(anyhow!("{} exists but is not a directory", self.path)),
        }
    }

    fn plan(&self, _sys: &System, obs: &Observation) -> Vec<Change> {
        if obs.status != Status::Drift {
            return Vec::new();
        }
        let d = &obs.data;
        let mut plan = Vec::new();
        if d["create"] == json!(true) {
            plan.push(Change::MakeDir {
                path: self.path.clone(),
                mode: self.mode.unwrap_or(0o755),
            });
        }
        let mode = d["mode"].as_u64().map(|m| m as u32);
        let names = (self.owner.as_deref(), self.group.as_deref());
        if let Some(c) = attrs(&self.path, mode, d, names) {
            plan.push(c);
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::temproot::TempRoot;

    const P: &str = "/etc/site/x.conf";

    #[test]
    fn a_file_is_compliant_only_as_written() {
        let t = TempRoot::new();
        let mut r = FileResource::new("file", P, "a\n".into());
        assert_eq!(t.check(&r), (Status::Drift, "missing".into()));
        t.file(P, "a\n");
        assert_eq!(t.check(&r).0, Status::Compliant);
        t.file(P, "b\n");
        assert_eq!(
            t.check(&r),
            (Status::Drift, "content differs (1 hunks)".into())
        );
        t.file(P, "a\n");
        std::fs::set_permissions(
            t.host(P),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        r.mode = Some(0o644);
        assert_eq!(t.check(&r), (Status::Drift, "mode 0600, want 0644".into()));
        r.mode = Some(0o600);
        r.owner = Some(nix::unistd::getuid().to_string());
        assert_eq!(t.check(&r).0, Status::Compliant);
        r.owner = Some("54321".into());
        assert_eq!(t.check(&r).0, Status::Drift);
        // A link at an owned path is an error, never written through.
        t.link(P, "/etc/other");
        assert_eq!(t.check(&r).0, Status::Error);
    }

    #[test]
    fn an_absent_file_is_compliant_once_gone() {
        let t = TempRoot::new();
        let r = FileResource::absent("file", P);
        assert_eq!(t.check(&r).0, Status::Compliant);
        t.file(P, "left\n");
        let (status, message) = t.check(&r);
        assert_eq!(
            (status, message.as_str()),
            (Status::Drift, "left from an earlier policy; to be removed")
        );
        t.link(P, "/etc/other");
        assert_eq!(t.check(&r).0, Status::Drift);
    }

    #[test]
    fn a_directory_is_compliant_with_its_mode() {
        let t = TempRoot::new();
        let mut r = DirResource {
            path: "/var/lib/site".into(),
            mode: Some(0o750),
            owner: None,
            group: None,
        };
        assert_eq!(t.check(&r), (Status::Drift, "missing".into()));
        t.dir("/var/lib/site", 0o755);
        assert_eq!(t.check(&r), (Status::Drift, "mode 0755, want 0750".into()));
        t.dir("/var/lib/site", 0o750);
        assert_eq!(t.check(&r).0, Status::Compliant);
        r.group = Some(nix::unistd::getgid().to_string());
        assert_eq!(t.check(&r).0, Status::Compliant);
        r.group = Some("54321".into());
        assert_eq!(t.check(&r).0, Status::Drift);
    }
}
