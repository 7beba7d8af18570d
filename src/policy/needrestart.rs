//! `[needrestart]`: services needrestart must never restart by itself (Ubuntu runs it after every
//! apt run, unattended-upgrades included, and restarts what a library update touched: a libc
//! update would restart containerd on every node). Its key, validation and typed value (the items
//! are `resources/needrestart.rs`).
//!
//! ```toml
//! [needrestart]
//! never_restart = ["containerd.service", "kubelet.service"]
//! ```

use serde::Serialize;

use super::tree::Table;
use super::validate::V;

#[derive(Clone, Debug, Serialize)]
pub struct Needrestart {
    /// Units needrestart lists but never restarts (`$nrconf{override_rc}` = 0).
    pub never_restart: Vec<String>,
}

/// A service unit name: `containerd.service`, `getty@tty1.service`.
fn check_service(s: &str) -> Result<(), String> {
    let stem = s.strip_suffix(".service").unwrap_or("");
    if !stem.is_empty()
        && stem.len() <= 240
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":_.@-\\".contains(c))
    {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not a service unit name like \"containerd.service\" (needrestart restarts services only)"
        ))
    }
}

impl V {
    pub(super) fn needrestart(&mut self, t: &Table, origin: &super::tree::Origin) -> Needrestart {
        self.known_keys(t, "needrestart", &["never_restart"]);
        if t.get("never_restart").is_none() {
            self.err(
                origin,
                "needrestart.never_restart",
                "missing required key `never_restart`",
            );
        }
        Needrestart {
            never_restart: self.list(t, "needrestart", "never_restart", check_service),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn service_names() {
        assert!(super::check_service("containerd.service").is_ok());
        assert!(super::check_service("getty@tty1.service").is_ok());
        assert!(super::check_service("containerd").is_err());
        assert!(super::check_service("a b.service").is_err());
        assert!(super::check_service(".service").is_err());
        assert!(super::check_service("x);system('id').service").is_err());
    }
}
