//! `[grub]`: kernel command-line arguments through `/etc/default/grub.d`, its keys, validation
//! and typed value (the items are `resources/grub.rs`).
//!
//! ```toml
//! [grub]
//! cmdline = ["intel_iommu=on", "i915.enable_guc=3"]
//! entries = "all"       # GRUB_CMDLINE_LINUX; "default": GRUB_CMDLINE_LINUX_DEFAULT
//! ```

use serde::Serialize;

use super::tree::Table;
use super::validate::{V, check_kernel_arg};

/// Which GRUB entries get the arguments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Entries {
    /// Every entry, recovery ones too: `GRUB_CMDLINE_LINUX`.
    #[default]
    All,
    /// The normal entries only, not recovery mode: `GRUB_CMDLINE_LINUX_DEFAULT`.
    Default,
}

impl Entries {
    /// The variable of /etc/default/grub that carries the arguments.
    pub fn variable(self) -> &'static str {
        match self {
            Entries::All => "GRUB_CMDLINE_LINUX",
            Entries::Default => "GRUB_CMDLINE_LINUX_DEFAULT",
        }
    }
}

/// `[grub]`: kernel command-line arguments added through `/etc/default/grub.d`.
#[derive(Clone, Debug, Serialize)]
pub struct Grub {
    pub cmdline: Vec<String>,
    #[serde(skip_serializing_if = "is_all")]
    pub entries: Entries,
}

fn is_all(e: &Entries) -> bool {
    *e == Entries::All
}

impl V {
    pub(super) fn grub(&mut self, t: &Table) -> Grub {
        self.known_keys(t, "grub", &["cmdline", "entries"]);
        let cmdline = self.list(t, "grub", "cmdline", check_kernel_arg);
        let entries = match self.string(t, "grub", "entries").as_deref() {
            None | Some("all") => Entries::All,
            Some("default") => Entries::Default,
            Some(other) => {
                let origin = &t.entries["entries"].node.origin;
                let msg = format!(
                    "`{other}` is not one of \"all\" (every entry: GRUB_CMDLINE_LINUX) or \"default\" (normal entries, not recovery: GRUB_CMDLINE_LINUX_DEFAULT)"
                );
                self.err(origin, "grub.entries", msg);
                Entries::All
            }
        };
        Grub { cmdline, entries }
    }
}
