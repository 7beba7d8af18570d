//! `kubernetes:identity`: a template carries no node identity: no kubelet kubeconfig, no
//! certificates, no static pod manifests (`paths::KUBE_IDENTITY`, `KUBE_MANIFEST_DIRS`); every
//! clone would present the same one to the API server. Seal's `kubernetes` operation removes them.
//!
//! Only a template is checked: on a clone of a sealed template (a seal manifest, and a machine-id
//! of its own since its first boot) the identity is the node's own, `kubeadm join` made it, and
//! the item is skipped.

use anyhow::Result;
use serde_json::json;

use crate::engine::{Change, Observation, Resource, System};
use crate::paths::{KUBE_IDENTITY, KUBE_MANIFEST_DIRS, SEAL_MANIFEST, is_manifest};
use crate::report::Status;
use crate::root::Node;

/// The item's id (seal's gate lets the `kubernetes` operation settle it).
pub const IDENTITY: &str = "kubernetes:identity";

pub struct Identity;

/// A booted clone: sealed once, and with a machine-id of its own.
fn is_clone(sys: &System) -> Result<bool> {
    if !sys.exists(SEAL_MANIFEST) {
        return Ok(false);
    }
    let id = sys.read_string("/etc/machine-id")?.unwrap_or_default();
    let id = id.trim();
    Ok(!id.is_empty() && id != "uninitialized")
}

impl Resource for Identity {
    fn id(&self) -> String {
        IDENTITY.to_string()
    }

    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let expected = json!({"absent": KUBE_IDENTITY, "noManifestsIn": KUBE_MANIFEST_DIRS});
        if is_clone(sys)? {
            return Ok(Observation::new(
                Status::Skipped,
                expected,
                json!(null),
                format!(
                    "a clone of a sealed template ({SEAL_MANIFEST}, its own machine-id): its kubelet identity is its own"
                ),
            ));
        }
        let mut found: Vec<String> = Vec::new();
        for p in KUBE_IDENTITY {
            if sys.lstat(p)? != Node::Missing {
                found.push(p.to_string());
            }
        }
        for d in KUBE_MANIFEST_DIRS {
            let mut names = sys.list_dir(d)?;
            names.sort();
            found.extend(
                names
                    .into_iter()
                    .filter(|n| is_manifest(n))
                    .map(|n| format!("{d}/{n}")),
            );
        }
        let actual = json!({"present": found});
        if found.is_empty() {
            return Ok(Observation::new(Status::Compliant, expected, actual, ""));
        }
        let msg = format!(
            "node identity in the template: {}; every clone would present it to the API server (the same node name and certificates)",
            found.join(", ")
        );
        let mut obs = Observation::new(Status::Drift, expected, actual, msg);
        obs.remediation = Some(
            "`guestprep seal --operations defaults,+kubernetes` removes them (or `[seal] operations = [\"defaults\", \"+kubernetes\"]`); or `kubeadm reset` before sealing".into(),
        );
        Ok(obs)
    }

    fn plan(&self, _sys: &System, _obs: &Observation) -> Vec<Change> {
        Vec::new() // sealing removes identity; apply never does
    }
}
