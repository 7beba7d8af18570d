//! Seal, resumable: what an earlier seal of this image left (an interrupted seal's journal, a
//! finished seal's manifest), whose facts a seal keeps, and the order of writes that lets a seal
//! killed at any point be finished by the next run.
//!
//! Before anything is removed, the journal (`/var/lib/guestprep/seal.journal.json`: the manifest
//! this seal will write, with the template's facts and every path planned) is written atomically;
//! then the plan is carried out; then the manifest is written and the journal removed. A run that
//! finds a journal plans that seal's operations again (what is already gone is not found again),
//! keeps its facts, and writes a manifest naming every path of every run. Temp files an
//! interrupted write left beside the manifest, the journal or /etc/machine-id are removed first.
//!
//! Must not: read /etc/machine-id as anything but a small regular file (a FIFO or device there is
//! machine state the planner removes, never opened here), or write the manifest before the plan
//! has been carried out.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::manifest::{Manifest, app_specific_machine_id, redact};
use super::ops::OPERATIONS;
use super::plan::Plan;
use super::{MANIFEST, execute};
use crate::root::{Node, Root};

/// The in-progress manifest of a seal not yet finished.
pub const JOURNAL: &str = "/var/lib/guestprep/seal.journal.json";

/// The machine-id file, whose temp files an interrupted `uninitialized` write leaves.
const MACHINE_ID: &str = "/etc/machine-id";

/// What an earlier seal of this image left.
#[derive(Clone, Debug, PartialEq)]
pub enum Earlier {
    /// No seal record.
    None,
    /// A seal that did not finish (killed, or a step failed): its journal.
    Interrupted(Manifest),
    /// A finished seal's manifest.
    Sealed(Manifest),
}

impl Earlier {
    /// Reads the journal, else the manifest. Either must be a regular file holding a manifest
    /// (read without following a symlink, never blocking): anything else is an error naming it,
    /// found before anything is changed.
    pub fn load(root: &Root) -> Result<Earlier> {
        if let Some(m) = load_strict(root, JOURNAL, "seal journal")? {
            return Ok(Earlier::Interrupted(m));
        }
        Ok(match load_strict(root, MANIFEST, "seal manifest")? {
            Some(m) => Earlier::Sealed(m),
            None => Earlier::None,
        })
    }

    pub fn manifest(&self) -> Option<&Manifest> {
        match self {
            Earlier::None => None,
            Earlier::Interrupted(m) | Earlier::Sealed(m) => Some(m),
        }
    }

    /// The earlier seal this one continues, keeping its facts: any, unless the machine now has a
    /// valid machine-id other than the recorded one (it booted since and became another
    /// machine, such as a clone being made a template of its own: then this seal starts afresh).
    pub fn continued(&self, machine_id: &str) -> Option<&Manifest> {
        let m = self.manifest()?;
        let id = app_specific_machine_id(machine_id);
        (id.is_empty() || id == m.template_machine_id).then_some(m)
    }

    /// The operations to plan: the chosen ones and, when this run finishes an interrupted seal,
    /// that seal's too (so its job is finished even if this run chose fewer).
    pub fn operations(
        &self,
        chosen: &BTreeSet<&'static str>,
        machine_id: &str,
    ) -> BTreeSet<&'static str> {
        let mut ops = chosen.clone();
        if let (Earlier::Interrupted(_), Some(m)) = (self, self.continued(machine_id)) {
            ops.extend(
                OPERATIONS
                    .iter()
                    .map(|o| o.name)
                    .filter(|n| m.operations.iter().any(|o| o == n)),
            );
        }
        ops
    }
}

/// A seal record at `abs`: `None` when missing; an error when it is not a regular file (a
/// symlink is not followed) or not a manifest.
fn load_strict(root: &Root, abs: &str, what: &str) -> Result<Option<Manifest>> {
    let text = root
        .read_owned(abs)
        .with_context(|| format!("reading the {what} {}", root.what(abs)))?;
    let Some(text) = text else {
        return Ok(None);
    };
    serde_json::from_slice(&text).map(Some).with_context(|| {
        format!(
            "{} is not a {what} guestprep wrote ({}): move it away to seal afresh",
            root.what(abs),
            crate::text::excerpt(&text, 60)
        )
    })
}

/// The template's machine-id (trimmed), read only if /etc/machine-id is a small regular file (or
/// a symlink to one inside the root); empty when it is missing, emptied, a FIFO, device, socket
/// or directory (never opened), or too large to be one.
pub fn machine_id(root: &Root) -> Result<String> {
    match root.lstat(MACHINE_ID)? {
        Node::File { .. } | Node::Symlink(_) => {}
        Node::Missing | Node::Dir { .. } | Node::Other(_) => return Ok(String::new()),
    }
    match root.read_limited(MACHINE_ID, 4096) {
        Ok(b) => Ok(b
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .unwrap_or_default()),
        Err(e) if e.is::<crate::saferead::NotRegular>() || e.is::<crate::saferead::TooLarge>() => {
            Ok(String::new())
        }
        Err(e) => Err(e),
    }
}

/// The manifest this seal writes. `fresh` holds this run's facts, its `removed` the plan's steps
/// as planned (raw paths). Continuing an earlier seal keeps that seal's id, time, host name and
/// machine-id (the machine-id and host name may be gone by now: the earlier run removed them);
/// the version and policy digest are this run's; `forced` stays true once true; the operations
/// and paths are both runs' (a path once).
pub fn record(continued: Option<&Manifest>, mut fresh: Manifest, machine_id: &str) -> Manifest {
    let app_id = continued.map_or(fresh.template_machine_id.clone(), |m| {
        m.template_machine_id.clone()
    });
    fresh.removed = redact(&fresh.removed, machine_id, &app_id);
    let Some(old) = continued else {
        return fresh;
    };
    let mut removed = old.removed.clone();
    for s in fresh.removed {
        if !removed.iter().any(|r| r.path == s.path) {
            removed.push(s);
        }
    }
    let has = |n: &str| {
        old.operations
            .iter()
            .chain(&fresh.operations)
            .any(|o| o == n)
    };
    let mut operations: Vec<String> = OPERATIONS
        .iter()
        .map(|o| o.name)
        .filter(|n| has(n))
        .map(String::from)
        .collect();
    // A name this version does not know (a newer guestprep's) is kept, not dropped.
    for o in &old.operations {
        if !operations.contains(o) {
            operations.push(o.clone());
        }
    }
    Manifest {
        seal_id: old.seal_id.clone(),
        sealed_at: old.sealed_at.clone(),
        guestprep_version: fresh.guestprep_version,
        policy_digest: fresh.policy_digest,
        template_hostname: old.template_hostname.clone(),
        template_machine_id: old.template_machine_id.clone(),
        operations,
        forced: old.forced || fresh.forced,
        removed,
    }
}

/// The manifest as written: pretty JSON and a newline.
pub fn to_json(m: &Manifest) -> Result<Vec<u8>> {
    let mut json = serde_json::to_vec_pretty(m).context("encoding the seal manifest")?;
    json.push(b'\n');
    Ok(json)
}

/// What [`finish`] did.
#[derive(Debug, Default)]
pub struct Finished {
    /// Temp files interrupted writes had left, removed (paths of the managed system).
    pub stale: Vec<PathBuf>,
    /// False when the image was sealed already with this very manifest: nothing was written.
    pub wrote: bool,
}

/// Carries the seal out so that a kill at any point is finished by the next run: stale temp files
/// removed; the journal (`manifest`) written before anything is removed; the plan carried out;
/// the manifest written; the journal removed. An image already sealed with this manifest and
/// nothing to remove is left as it is.
pub fn finish(
    root: &Root,
    plan: &Plan,
    manifest: &Manifest,
    earlier: &Earlier,
) -> Result<Finished> {
    let mut done = Finished::default();
    for abs in [MANIFEST, JOURNAL, MACHINE_ID] {
        done.stale.extend(
            crate::fsutil::clean_stale_temps(root, abs).with_context(|| {
                format!("removing the temp files an earlier run left beside {abs}")
            })?,
        );
    }
    if plan.steps.is_empty() && *earlier == Earlier::Sealed(manifest.clone()) {
        return Ok(done);
    }
    let json = to_json(manifest)?;
    if !plan.steps.is_empty() {
        crate::fsutil::write_atomic(root, JOURNAL, &json, Some(0o644))
            .with_context(|| format!("writing the seal journal {JOURNAL}; nothing was removed"))?;
    }
    execute(root, plan)?;
    crate::fsutil::write_atomic(root, MANIFEST, &json, Some(0o644))
        .with_context(|| format!("writing the seal manifest {MANIFEST}"))?;
    crate::fsutil::remove(root, JOURNAL)
        .with_context(|| format!("removing the seal journal {JOURNAL}"))?;
    done.wrote = true;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::{Action, Step};

    fn step(path: &str) -> Step {
        Step {
            operation: "logfiles".into(),
            path: path.into(),
            action: Action::Remove,
            bytes: 1,
            lines: Vec::new(),
        }
    }

    fn manifest(id: &str, ops: &[&str], removed: &[&str]) -> Manifest {
        Manifest {
            seal_id: id.into(),
            sealed_at: format!("time of {id}"),
            guestprep_version: "0".into(),
            policy_digest: format!("policy of {id}"),
            template_hostname: format!("host of {id}"),
            template_machine_id: app_specific_machine_id(MID),
            operations: ops.iter().map(|s| s.to_string()).collect(),
            forced: false,
            removed: removed.iter().map(|p| step(p)).collect(),
        }
    }

    const MID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_continued_seal_keeps_the_first_facts_and_adds_its_paths() {
        let old = manifest(
            "first",
            &["logfiles"],
            &["/a", "/var/log/journal/<machine-id>/x"],
        );
        let mut fresh = manifest("second", &["ssh-hostkeys"], &["/a", "/b"]);
        fresh.template_machine_id = String::new();
        fresh.template_hostname = String::new();
        fresh.forced = true;
        // The raw machine-id is gone (emptied by the first run), but journald's directory still
        // names it: recognised by its app-specific ID.
        fresh
            .removed
            .push(step(&format!("/var/log/journal/{MID}/x")));
        let m = record(Some(&old), fresh, "");
        assert_eq!(m.seal_id, "first");
        assert_eq!(m.sealed_at, "time of first");
        assert_eq!(m.template_hostname, "host of first");
        assert_eq!(m.template_machine_id, old.template_machine_id);
        assert_eq!(m.policy_digest, "policy of second");
        assert!(m.forced);
        assert_eq!(m.operations, ["ssh-hostkeys", "logfiles"], "in run order");
        let paths: Vec<&str> = m.removed.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(paths, ["/a", "/var/log/journal/<machine-id>/x", "/b"]);
    }

    #[test]
    fn a_new_machine_id_starts_afresh() {
        let old = Earlier::Sealed(manifest("first", &["logfiles"], &["/a"]));
        assert!(old.continued("").is_some());
        assert!(old.continued("uninitialized").is_some());
        assert!(old.continued(MID).is_some(), "the same machine");
        assert!(old.continued("fedcba9876543210fedcba9876543210").is_none());
        let chosen: BTreeSet<&str> = ["ssh-hostkeys"].into();
        assert_eq!(old.operations(&chosen, ""), chosen, "finished: not redone");
        let cut = Earlier::Interrupted(manifest("first", &["logfiles", "future-op"], &[]));
        let ops = cut.operations(&chosen, "");
        assert_eq!(ops, ["logfiles", "ssh-hostkeys"].into());
    }

    #[test]
    fn a_fifo_machine_id_is_not_read() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("etc")).unwrap();
        let root = Root::new(t.path()).unwrap();
        assert_eq!(machine_id(&root).unwrap(), "");
        nix::unistd::mkfifo(
            &t.path().join("etc/machine-id"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        assert_eq!(machine_id(&root).unwrap(), "", "a FIFO is never opened");
        std::fs::remove_file(t.path().join("etc/machine-id")).unwrap();
        std::fs::write(t.path().join("etc/machine-id"), format!("{MID}\n")).unwrap();
        assert_eq!(machine_id(&root).unwrap(), MID);
    }

    #[test]
    fn a_record_that_is_not_a_file_or_not_a_manifest_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("var/lib/guestprep");
        std::fs::create_dir_all(&dir).unwrap();
        let root = Root::new(t.path()).unwrap();
        assert_eq!(Earlier::load(&root).unwrap(), Earlier::None);
        nix::unistd::mkfifo(
            &dir.join("seal.journal.json"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let e = format!("{:#}", Earlier::load(&root).unwrap_err());
        assert!(e.contains("FIFO"), "{e}");
        std::fs::remove_file(dir.join("seal.journal.json")).unwrap();
        std::fs::write(dir.join("seal.json"), "{\"sealId\": 1}").unwrap();
        let e = format!("{:#}", Earlier::load(&root).unwrap_err());
        assert!(e.contains("is not a seal manifest"), "{e}");
        std::os::unix::fs::symlink("/etc/passwd", dir.join("seal.journal.json")).unwrap();
        let e = format!("{:#}", Earlier::load(&root).unwrap_err());
        assert!(e.contains("symlink"), "{e}");
    }
}
