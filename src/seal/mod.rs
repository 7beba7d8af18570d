//! `guestprep seal`: what makes a machine an individual, removed before it becomes a template.
//!
//! Owns the named operations (virt-sysprep's names where the meaning is the same), choosing them
//! (`defaults,-logfiles,+user-ssh-keys`), planning (every path and size, found without following
//! a symlink), carrying the plan out, and the seal manifest every clone's report carries. Safety
//! rules, all enforced here: a path is touched only if no directory above it in the root is a
//! symlink; a symlink is removed, never followed; a file is truncated only if it is a regular
//! file; a directory a package owns (dpkg's lists) is emptied, never removed; a FIFO, device or
//! socket is never opened (removed where seal removes files, reported where it truncates them).
//! A seal is resumable (`journal.rs`): killed or failed at any point, the next run finishes it,
//! and sealing a sealed template keeps the first seal's facts.

mod execute;
mod journal;
mod manifest;
use crate::policy::seal_ops as ops;
mod plan;

pub use execute::execute;
pub use journal::{Earlier, Finished, JOURNAL, finish, machine_id, record, to_json};
pub use manifest::{Manifest, app_specific_machine_id, new_seal_id, redact, redact_machine_id};
pub use ops::{OPERATIONS, Operation, check_spec, operations_help, ordered, select, split_spec};
pub use plan::{Action, Plan, Settings, SettingsError, Step, plan, size};

/// Where the manifest is written.
pub const MANIFEST: &str = crate::paths::SEAL_MANIFEST;

#[cfg(test)]
mod tests {
    use super::plan::rotated;
    use super::*;

    #[test]
    fn machine_id_is_hashed_like_systemd() {
        // The expected value comes from an independent HMAC (Python's hmac module): key the
        // machine-id's 16 bytes, message the application ID, version and variant bits set.
        let id = app_specific_machine_id("0123456789abcdef0123456789abcdef");
        assert_eq!(id.len(), 32);
        assert!(!id.contains("0123456789abcdef"));
        assert_eq!(&id[12..13], "4", "UUID version 4");
        assert!("89ab".contains(&id[16..17]), "RFC 4122 variant");
        assert_eq!(id, "76b56bea78ec43faafb1c3ad97d5dd4b");
        assert_eq!(app_specific_machine_id(""), "");
        assert_eq!(app_specific_machine_id("uninitialized"), "");
    }

    #[test]
    fn selection_reads_left_to_right_like_virt_sysprep() {
        let d = select(&[]).unwrap();
        assert!(d.contains("ssh-hostkeys") && !d.contains("user-ssh-keys"));
        let s = select(&split_spec("defaults,-logfiles,+user-ssh-keys")).unwrap();
        assert!(!s.contains("logfiles") && s.contains("user-ssh-keys"));
        assert!(s.contains("machine-id"));
        let only = select(&split_spec("ssh-hostkeys")).unwrap();
        assert_eq!(only.into_iter().collect::<Vec<_>>(), ["ssh-hostkeys"]);
        assert_eq!(select(&split_spec("all")).unwrap().len(), OPERATIONS.len());
        let e = select(&split_spec("defaults,-logfile")).unwrap_err();
        assert!(e.contains("did you mean `logfiles`"), "{e}");
        assert!(select(&split_spec("+defaults")).is_err());
    }

    #[test]
    fn rotated_names() {
        for n in [
            "syslog.1",
            "dpkg.log.2.gz",
            "messages-20260101",
            "auth.log.old",
            "x.xz",
        ] {
            assert!(rotated(n), "{n}");
        }
        for n in ["syslog", "wtmp", "dpkg.log", "lastlog", "alternatives.log"] {
            assert!(!rotated(n), "{n}");
        }
    }

    #[test]
    fn help_lists_every_operation_with_its_default() {
        let h = operations_help();
        for op in OPERATIONS {
            let d = if op.default { "default" } else { "off" };
            assert!(h.contains(&format!("  {} ({d})  ", op.name)), "{}", op.name);
        }
    }
}
