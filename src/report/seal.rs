//! The seal manifest's types, as the report carries them (`seal`): written by `guestprep seal`
//! (`crate::seal`), read back into every report of the template and its clones.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The seal manifest, `/var/lib/guestprep/seal.json`, also the report's `seal` field. A seal
/// that was interrupted, or a sealed template sealed again, keeps the first seal's id, time, host
/// name and machine-id and adds its operations and paths; a machine with a new machine-id (booted
/// since) is sealed afresh.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Random, one per seal: the template a clone came from.
    pub seal_id: String,
    /// When the template was first sealed (RFC 3339).
    pub sealed_at: String,
    pub guestprep_version: String,
    /// The policy the template was compliant with when sealed.
    pub policy_digest: String,
    /// The template's host name before the seal.
    pub template_hostname: String,
    /// The template's machine-id as guestprep's application-specific ID (HMAC-SHA256 keyed by
    /// the machine-id, as `sd_id128_get_machine_app_specific()` makes it): the same template
    /// always gives the same value, which does not reveal the machine-id (machine-id(5) says not
    /// to expose it). Empty when the template had none.
    pub template_machine_id: String,
    /// The operations of every seal of this template, in the order they run.
    pub operations: Vec<String>,
    /// True when sealed with `--force` although not compliant (by any seal of this template).
    pub forced: bool,
    /// Every path the seals of this template removed or truncated, once each.
    pub removed: Vec<Step>,
}

/// What is done to one path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// A file or a symlink, unlinked.
    Remove,
    /// A directory and everything in it (none of it a package's directory).
    RemoveTree,
    /// A regular file cut to zero bytes (owner and mode kept).
    Truncate,
    /// /etc/machine-id set to `uninitialized`.
    Uninitialize,
    /// The step's `lines` taken out of a regular file (owner and mode kept): cloud-init's
    /// `/etc/fstab` entries, a build user's temporary key in `authorized_keys`.
    RemoveLines,
}

/// One path of the plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Step {
    pub operation: String,
    pub path: String,
    pub action: Action,
    /// Bytes freed (for a tree, its regular files').
    pub bytes: u64,
    /// For `remove-lines`: the lines taken out, exactly as they were.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<String>,
}
