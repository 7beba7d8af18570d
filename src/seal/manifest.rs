//! The seal manifest (`/var/lib/guestprep/seal.json`) every report of the template and its
//! clones carries, and the ids in it.

use anyhow::{Context, Result};

use super::MANIFEST;
use super::plan::Step;
use crate::root::Root;

pub use crate::report::seal::Manifest;

/// The plan's steps with the raw machine-id in a path (journald's `/var/log/journal/ID/`) shown
/// as `<machine-id>`: the manifest is read from the host and by every clone.
pub fn redact_machine_id(steps: &[Step], machine_id: &str) -> Vec<Step> {
    redact(steps, machine_id, "")
}

/// [`redact_machine_id`], also when the raw machine-id is no longer known (a seal resumed after
/// /etc/machine-id was emptied): any 32-hex-digit run in a path whose application-specific ID is
/// `app_id` (the manifest's `templateMachineId`) is the template's machine-id too.
pub fn redact(steps: &[Step], machine_id: &str, app_id: &str) -> Vec<Step> {
    steps
        .iter()
        .map(|s| {
            let mut s = s.clone();
            if machine_id.len() >= 16 {
                s.path = s.path.replace(machine_id, "<machine-id>");
            }
            if !app_id.is_empty() {
                for run in hex_runs(&s.path) {
                    if app_specific_machine_id(&run) == app_id {
                        s.path = s.path.replace(&run, "<machine-id>");
                    }
                }
            }
            s
        })
        .collect()
}

/// The maximal runs of exactly 32 lowercase hex digits in `path` (machine-id candidates).
fn hex_runs(path: &str) -> Vec<String> {
    path.split(|c: char| !matches!(c, '0'..='9' | 'a'..='f'))
        .filter(|r| r.len() == 32)
        .map(String::from)
        .collect()
}

/// guestprep's application ID for `sd_id128_get_machine_app_specific()`.
const APP_ID: [u8; 16] = [
    0x6f, 0x4c, 0x2a, 0x1e, 0x9b, 0x7d, 0x4e, 0x3f, 0x8a, 0x5c, 0x0d, 0x2b, 0x1e, 0x7f, 0x9a, 0x43,
];

/// The application-specific ID of a machine-id (32 hex digits), as systemd computes it:
/// HMAC-SHA256 with the machine-id's 16 bytes as key over the application ID, the first 16 bytes
/// made a version-4 UUID. Empty for an empty or malformed machine-id.
pub fn app_specific_machine_id(machine_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let Ok(key) = hex::decode(machine_id) else {
        return String::new();
    };
    if key.len() != 16 {
        return String::new();
    }
    // HMAC (RFC 2104) with SHA-256's 64-byte block.
    let mut k = [0u8; 64];
    k[..16].copy_from_slice(&key);
    let pad = |b: u8| k.map(|x| x ^ b);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(APP_ID)
        .finalize();
    let mac = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&mac[..16]);
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    hex::encode(id)
}

impl Manifest {
    pub fn load(root: &Root) -> Option<Manifest> {
        let text = root.read(MANIFEST).ok()??;
        match serde_json::from_slice(&text) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!("{MANIFEST} is not a seal manifest: {e}");
                None
            }
        }
    }
}

/// A random id for a seal (128 bits from the kernel, hex).
pub fn new_seal_id() -> Result<String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("reading /dev/urandom")?;
    Ok(hex::encode(b))
}
