//! `[swap]`: with `enabled = false` (Kubernetes' requirement), no swap entry is active in
//! `/etc/fstab`, and on a live system no swap is in use.
//!
//! Owns commenting out fstab swap lines (kept, marked, so the change is visible and reversible)
//! and `swapoff -a` on a live root. `enabled = true` manages nothing: guestprep does not create swap.

use anyhow::Result;
use serde_json::json;

use crate::engine::{Change, Observation, Resource, System};
use crate::policy::Swap;
use crate::report::Status;

pub const FSTAB: &str = "/etc/fstab";
/// Prefix of an fstab line guestprep disabled.
pub const MARK: &str = "#guestprep-swap-off# ";

pub fn resources(s: &Swap) -> Vec<Box<dyn Resource>> {
    if s.enabled {
        return Vec::new();
    }
    vec![Box::new(FstabSwap), Box::new(LiveSwap)]
}

fn is_swap_line(line: &str) -> bool {
    let t = line.trim_start();
    if t.starts_with('#') {
        return false;
    }
    let f: Vec<&str> = t.split_whitespace().collect();
    f.len() >= 3 && f[2] == "swap"
}

/// fstab with every active swap line commented out.
pub fn disable_in_fstab(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.split_inclusive('\n') {
        if is_swap_line(line) {
            out.push_str(MARK);
        }
        out.push_str(line);
    }
    out
}

pub struct FstabSwap;

impl Resource for FstabSwap {
    fn id(&self) -> String {
        "swap:fstab".to_string()
    }

    fn kind(&self) -> &'static str {
        "swap"
    }

    fn managed_paths(&self) -> Vec<String> {
        vec![FSTAB.to_string()]
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let text = sys.read_string(FSTAB)?;
        let active: Vec<String> = text
            .as_deref()
            .unwrap_or("")
            .lines()
            .filter(|l| is_swap_line(l))
            .map(|l| l.trim().to_string())
            .collect();
        let problems: Vec<String> = if active.is_empty() {
            Vec::new()
        } else {
            let n = active.len();
            vec![format!(
                "{n} active swap entr{} in {FSTAB}",
                if n == 1 { "y" } else { "ies" }
            )]
        };
        let mut obs = Observation::judged(
            json!({"swapEntries": []}),
            json!({"swapEntries": active}),
            &problems,
            "",
        );
        obs.current = text.map(String::into_bytes);
        Ok(obs)
    }

    fn plan(&self, _sys: &System, obs: &Observation) -> Vec<Change> {
        let Some(cur) = &obs.current else {
            return Vec::new();
        };
        let text = String::from_utf8_lossy(cur);
        vec![Change::Write {
            path: FSTAB.to_string(),
            content: disable_in_fstab(&text).into_bytes(),
            mode: None,
            old: Some(cur.clone()),
        }]
    }
}

pub struct LiveSwap;

impl Resource for LiveSwap {
    fn id(&self) -> String {
        "swap:live".to_string()
    }

    fn kind(&self) -> &'static str {
        "swap"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        if let Some(why) = sys.offline_reason() {
            return Ok(Observation::new(
                Status::Skipped,
                json!({"active": []}),
                json!(null),
                format!("swap in use not checked: {why}"),
            ));
        }
        // procfs-core (the design card's procfs, I/O-free) has no /proc/swaps parser: its first
        // column after the header line is all this needs.
        let swaps = sys.read_string("/proc/swaps")?.unwrap_or_default();
        let active: Vec<&str> = swaps
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let problems: Vec<String> = if active.is_empty() {
            Vec::new()
        } else {
            vec![format!("swap in use: {}", active.join(", "))]
        };
        Ok(Observation::judged(
            json!({"active": []}),
            json!({"active": active}),
            &problems,
            "",
        ))
    }

    fn plan(&self, sys: &System, obs: &Observation) -> Vec<Change> {
        if sys.is_live() && obs.status == Status::Drift {
            vec![Change::Run {
                argv: vec!["swapoff".into(), "-a".into()],
            }]
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_out_only_swap() {
        let f = "UUID=a / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n# /old none swap sw 0 0\n";
        let out = disable_in_fstab(f);
        assert_eq!(
            out,
            format!(
                "UUID=a / ext4 defaults 0 1\n{MARK}/swapfile none swap sw 0 0\n# /old none swap sw 0 0\n"
            )
        );
        assert_eq!(disable_in_fstab(&out), out, "idempotent");
    }
}
