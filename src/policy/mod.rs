//! The policy: what the machine must look like.
//!
//! Owns finding the fragments (`--policy` paths, or the root's drop-in directories), merging them
//! and turning the merged tree into a typed, fully validated [`Policy`]. Nothing here touches the
//! system being managed: a policy that fails validation stops the run before any change.
//!
//! Fragment order, without `--policy`:
//! 1. `ROOT/usr/lib/guestprep/policy.d/*.toml` and `ROOT/etc/guestprep/policy.d/*.toml`, taken
//!    together and sorted by file name, as systemd does for its drop-ins: a file in `/etc` with the
//!    same name replaces the vendor file, a symlink to `/dev/null` (or an empty file) cancels it;
//! 2. then `ROOT/etc/guestprep/policy.toml`.
//!
//! Later fragments override earlier ones key by key; a list of plain values is replaced, a list
//! of tables with a key (`[[files]]` by path…) merges entry by entry (`merge`).

mod agent;
mod apt;
mod chrony;
pub mod diag;
mod files;
mod grub;
mod kernel;
mod kubernetes;
mod locale;
pub mod merge;
mod modules;
mod needrestart;
pub mod openssh;
mod packages;
pub mod platform;
pub mod seal_ops;
pub mod ssh;
mod time;
mod timespan;
pub mod tree;
mod units;
mod waivers;
pub use agent::{Agent, Seal};
pub use apt::{Apt, AptSource, AptValue};
pub use chrony::Chrony;
pub use files::{FileKind, FileState, ManagedFile};
pub use grub::{Entries, Grub};
pub use kernel::Kernel;
pub use kubernetes::Kubernetes;
pub use locale::Locale;
pub use modules::Modules;
pub use needrestart::Needrestart;
pub use packages::{DebSpec, DkmsSpec, Packages, check_config_option};
pub use ssh::Ssh;
pub use time::Time;
pub use units::{Now, UnitDropin, Units};
pub use waivers::Waiver;
mod validate;

pub use crate::text::closest;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use diag::{Diagnostic, InvalidPolicy};
pub use openssh::Context as ValidationContext;
pub use tree::{Origin, Table};
pub use validate::{format_timespan, parse_timespan};

use crate::root::Root;

/// Vendor fragments, shipped by the package.
pub const VENDOR_DIR: &str = "/usr/lib/guestprep/policy.d";
/// Administrator fragments; a file here replaces the vendor file of the same name.
pub const ADMIN_DIR: &str = "/etc/guestprep/policy.d";
/// The administrator's single-file policy, applied last.
pub const ADMIN_FILE: &str = "/etc/guestprep/policy.toml";

/// The effective, validated policy.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Policy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chrony: Option<Chrony>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctl: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modules: Option<Modules>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grub: Option<Grub>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh: Option<Ssh>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap: Option<Swap>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<ManagedFile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub units: Option<Units>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packages: Option<Packages>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<Agent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seal: Option<Seal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<Kernel>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub waivers: Vec<Waiver>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locale: Option<Locale>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apt: Option<Apt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needrestart: Option<Needrestart>,
    pub kubernetes: Option<Kubernetes>,
}

impl Policy {
    /// The daemon's settings: the `[agent]` section, or its defaults.
    pub fn agent(&self) -> Agent {
        self.agent.clone().unwrap_or_default()
    }
}

pub(super) fn is_true(b: &bool) -> bool {
    *b
}

/// `[swap]`.
#[derive(Clone, Debug, Serialize)]
pub struct Swap {
    pub enabled: bool,
}

/// The policy with where it came from.
#[derive(Debug)]
pub struct Loaded {
    pub policy: Policy,
    /// The merged tree, for `policy show` (every value with its origin).
    pub tree: Table,
    /// Fragments in the order they were applied.
    pub sources: Vec<PathBuf>,
    /// What a fragment dropped that an earlier one wrote, or a removal that matched nothing
    /// (`policy check` prints them).
    pub warnings: Vec<Diagnostic>,
    /// What sshd's names were checked against (`policy check` prints it).
    pub context: ValidationContext,
}

impl Loaded {
    /// `sha256:` of the canonical JSON of the effective policy: the same policy gives the same
    /// digest whatever the fragment layout.
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(&self.policy).expect("policy serializes");
        format!("sha256:{}", hex::encode(Sha256::digest(&json)))
    }
}

/// Where fragments come from: explicit `--policy` paths, or the root's drop-in directories.
#[derive(Clone, Debug)]
pub enum Sources {
    Explicit(Vec<PathBuf>),
    DropIns,
}

impl Sources {
    pub fn from_args(paths: &[PathBuf]) -> Self {
        if paths.is_empty() {
            Sources::DropIns
        } else {
            Sources::Explicit(paths.to_vec())
        }
    }
}

/// One policy fragment: where it is shown as coming from, and how to read it.
#[derive(Clone, Debug)]
pub struct Fragment {
    /// The host path, for messages and `policySources`.
    pub shown: PathBuf,
    /// A drop-in of the root: read through the root (confined), by this absolute path.
    pub in_root: Option<String>,
}

impl Fragment {
    fn read(&self, root: &Root) -> Result<Vec<u8>> {
        match &self.in_root {
            Some(abs) => root
                .read(abs)?
                .with_context(|| format!("policy fragment {} disappeared", self.shown.display())),
            None => crate::saferead::read_regular(&self.shown, crate::saferead::CONFIG_LIMIT)
                .with_context(|| format!("reading policy fragment {}", self.shown.display()))?
                .with_context(|| format!("policy fragment {} disappeared", self.shown.display())),
        }
    }
}

/// Lists the fragment files in application order. The root's drop-in directories are listed and
/// read through the root, like every other file of an image: a symlink there resolves inside it.
pub fn discover(sources: &Sources, root: &Root) -> Result<Vec<Fragment>> {
    match sources {
        Sources::Explicit(paths) => {
            let mut out = Vec::new();
            for p in paths {
                let meta =
                    std::fs::metadata(p).with_context(|| format!("policy {}", p.display()))?;
                let files = if meta.is_dir() {
                    toml_files_sorted(p)?.into_values().collect()
                } else {
                    vec![p.clone()]
                };
                out.extend(files.into_iter().map(|shown| Fragment {
                    shown,
                    in_root: None,
                }));
            }
            Ok(out)
        }
        Sources::DropIns => {
            // Same name: /etc wins over the vendor's.
            let mut merged: BTreeMap<String, String> = BTreeMap::new();
            for dir in [VENDOR_DIR, ADMIN_DIR] {
                for name in root.list_dir(dir)? {
                    if name.ends_with(".toml") && !name.starts_with('.') {
                        merged.insert(name.clone(), format!("{dir}/{name}"));
                    }
                }
            }
            let mut out = Vec::new();
            for abs in merged.into_values().chain([ADMIN_FILE.to_string()]) {
                if abs != ADMIN_FILE && is_masked(root, &abs)? {
                    continue;
                }
                // A missing policy.toml is normal; anything else there is read, and what is not a
                // regular file (a FIFO, a device, a directory) is an error, never skipped.
                if abs == ADMIN_FILE && root.stat(&abs)? == crate::root::Node::Missing {
                    continue;
                }
                out.push(Fragment {
                    shown: root.path(&abs)?,
                    in_root: Some(abs),
                });
            }
            Ok(out)
        }
    }
}

/// A drop-in that is a symlink to /dev/null or an empty file cancels the vendor one.
fn is_masked(root: &Root, abs: &str) -> Result<bool> {
    if root
        .read_link(abs)?
        .is_some_and(|t| t == Path::new("/dev/null"))
    {
        return Ok(true);
    }
    Ok(root.read(abs)?.is_none_or(|b| b.is_empty()))
}

fn toml_files_sorted(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => {
            return Err(e).with_context(|| format!("reading policy directory {}", dir.display()));
        }
    };
    for ent in rd {
        let ent = ent.with_context(|| format!("reading policy directory {}", dir.display()))?;
        let name = ent.file_name().to_string_lossy().into_owned();
        if name.ends_with(".toml") && !name.starts_with('.') {
            out.insert(name, ent.path());
        }
    }
    Ok(out)
}

/// Why loading stopped: a file could not be read (I/O), or the policy is invalid.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Invalid(#[from] InvalidPolicy),
    /// No fragment anywhere: the places searched.
    #[error("no policy: no fragment found in {0}")]
    NoPolicy(String),
    #[error(transparent)]
    Io(#[from] anyhow::Error),
}

/// Reads, merges and validates the policy. Every fragment is parsed and every error collected
/// before returning. No fragment at all is a usage error naming where they were looked for: an
/// empty policy would verify as "compliant, 0 items", which a CI job would believe.
pub fn load(sources: &Sources, root: &Root) -> Result<Loaded, LoadError> {
    load_for(sources, root, &ValidationContext::default())
}

/// [`load`], validated against a target ([`Context`]: its OpenSSH release).
pub fn load_for(
    sources: &Sources,
    root: &Root,
    ctx: &ValidationContext,
) -> Result<Loaded, LoadError> {
    let files = discover(sources, root)?;
    if files.is_empty() {
        let searched = match sources {
            Sources::Explicit(p) => p
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>(),
            Sources::DropIns => [VENDOR_DIR, ADMIN_DIR, ADMIN_FILE]
                .iter()
                .map(|p| {
                    root.path(p)
                        .map_or(p.to_string(), |h| h.display().to_string())
                })
                .collect(),
        };
        return Err(LoadError::NoPolicy(searched.join(", ")));
    }
    let mut texts = Vec::new();
    let mut diags = Vec::new();
    for f in &files {
        match String::from_utf8(f.read(root)?) {
            Ok(text) => texts.push((f.shown.clone(), text)),
            Err(e) => diags.push(not_utf8(
                &f.shown,
                e.as_bytes(),
                e.utf8_error().valid_up_to(),
            )),
        }
    }
    if !diags.is_empty() {
        diags.sort();
        return Err(InvalidPolicy(diags).into());
    }
    let target = crate::platform::Platform::detect(root);
    let mut ctx = ctx.clone();
    ctx.os = Some(target.os_id.clone().unwrap_or_default());
    let loaded = load_texts_for(&texts, &ctx)?;
    let refused = platform::refusals(&loaded.tree, &target);
    if !refused.is_empty() {
        return Err(InvalidPolicy(refused).into());
    }
    Ok(loaded)
}

/// A fragment that is not UTF-8 (TOML is UTF-8): where the first bad byte is.
fn not_utf8(file: &Path, bytes: &[u8], at: usize) -> Diagnostic {
    let before = &bytes[..at];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    Diagnostic::new(
        Origin {
            file: std::sync::Arc::new(file.to_path_buf()),
            line,
            column,
        },
        "",
        format!(
            "not UTF-8 (byte 0x{:02x}): a policy fragment is TOML, which is UTF-8",
            bytes[at]
        ),
    )
}

/// Parses and validates in-memory fragments (file name, text), in order.
pub fn load_texts(texts: &[(PathBuf, String)]) -> Result<Loaded, LoadError> {
    load_texts_for(texts, &ValidationContext::default())
}

/// [`load_texts`], validated against a target.
pub fn load_texts_for(
    texts: &[(PathBuf, String)],
    ctx: &ValidationContext,
) -> Result<Loaded, LoadError> {
    let mut diags = Vec::new();
    let mut tree = Table::default();
    let mut notes = merge::Notes::default();
    let mut applied = Vec::new();
    for (file, text) in texts {
        match tree::parse_fragment(file, text) {
            Ok(mut t) => match platform::fragment_applies(&mut t, ctx.os.as_deref()) {
                Ok(true) => {
                    tree.merge_noted(t, &mut notes);
                    applied.push(file.clone());
                }
                Ok(false) => {}
                Err(mut d) => diags.append(&mut d),
            },
            Err(mut d) => diags.append(&mut d),
        }
    }
    diags.append(&mut notes.errors);
    if !diags.is_empty() {
        // Do not validate a partial merge: its errors would be noise.
        diags.sort();
        return Err(InvalidPolicy(diags).into());
    }
    let policy = validate::validate_for(&tree, ctx).map_err(InvalidPolicy)?;
    notes.warnings.sort();
    Ok(Loaded {
        policy,
        tree,
        sources: applied,
        warnings: notes.warnings,
        context: ctx.clone(),
    })
}
