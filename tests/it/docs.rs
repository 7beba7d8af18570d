//! The documented integrations, checked where they can run here: the cloud-init user-data of
//! docs/integrations.md against the schema of Debian 13's own cloud-init (`cloud-init schema`, in
//! a cached mmdebstrap root), and its policy fragments with `guestprep policy check`.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::container::{rootfs_tar, unpack};
use common::{code, guestprep, repo, stderr, stdout};

/// The fenced blocks of a Markdown file in language `lang`.
fn blocks(md: &str, lang: &str) -> Vec<String> {
    let fence = format!("```{lang}\n");
    let mut out = Vec::new();
    let mut rest = md;
    while let Some(start) = rest.find(&fence) {
        let body = &rest[start + fence.len()..];
        let end = body.find("```\n").expect("unclosed fence");
        out.push(body[..end].to_string());
        rest = &body[end..];
    }
    out
}

fn integrations() -> String {
    std::fs::read_to_string(repo().join("docs/integrations.md")).unwrap()
}

/// `cloud-init schema -c FILE` in the root; (exit code, output).
fn schema(root: &Path, user_data: &str) -> (i32, String) {
    std::fs::write(root.join("tmp/user-data.yaml"), user_data).unwrap();
    let o = Command::new("chroot")
        .arg(root)
        .args(["cloud-init", "schema", "-c", "/tmp/user-data.yaml"])
        .output()
        .unwrap();
    (code(&o), format!("{}{}", stdout(&o), stderr(&o)))
}

#[test]
fn documented_user_data_passes_cloud_inits_own_schema() {
    let docs = integrations();
    let user_data: Vec<_> = blocks(&docs, "yaml")
        .into_iter()
        .filter(|b| b.starts_with("#cloud-config"))
        .collect();
    assert_eq!(user_data.len(), 1, "docs/integrations.md has one user-data");
    let root = unpack(&rootfs_tar("cloudinit"));
    let (c, out) = schema(root.path(), &user_data[0]);
    assert_eq!(
        c, 0,
        "cloud-init schema rejects the documented user-data: {out}"
    );
    assert!(out.contains("Valid schema"), "{out}");
    // The check can fail: the same user-data with a power_state mode cloud-init does not know.
    let bad = user_data[0].replace("mode: reboot", "mode: explode");
    assert_ne!(bad, user_data[0]);
    let (c, out) = schema(root.path(), &bad);
    assert_ne!(c, 0, "cloud-init schema accepted a bad mode: {out}");
    assert!(out.contains("power_state.mode"), "{out}");
}

#[test]
fn documented_policy_fragments_are_valid() {
    let docs = integrations();
    // The site fragment in TOML, and the same one inside the user-data's write_files.
    let mut fragments = blocks(&docs, "toml");
    let user_data = blocks(&docs, "yaml").remove(0);
    let embedded: String = user_data
        .lines()
        .skip_while(|l| !l.contains("content: |"))
        .skip(1)
        .take_while(|l| l.starts_with("      "))
        .map(|l| format!("{}\n", &l[6..]))
        .collect();
    assert!(embedded.contains("[sysctl]"), "{user_data}");
    fragments.push(embedded);
    assert!(
        fragments.iter().any(|f| f.contains("[[packages.deb]]")),
        "the driver's fragment is documented"
    );
    let dir = tempfile::tempdir().unwrap();
    for (i, f) in fragments.iter().enumerate() {
        // The docs leave the sha256 for `guestprep prefetch` to fill in; the rest must be valid.
        let sha = with_wellformed_sha(f);
        let p = dir.path().join(format!("{i}.toml"));
        std::fs::write(&p, sha).unwrap();
        let o = guestprep(&["policy", "check", "--policy", p.to_str().unwrap()]);
        assert_eq!(
            code(&o),
            0,
            "fragment {i} of docs/integrations.md: {}{}",
            stderr(&o),
            f
        );
        if !f.contains("sha256") {
            continue;
        }
        // Unchanged, the placeholder is refused with the file, line and key.
        let raw = dir.path().join(format!("{i}-raw.toml"));
        std::fs::write(&raw, f).unwrap();
        let o = guestprep(&["policy", "check", "--policy", raw.to_str().unwrap()]);
        assert_eq!(code(&o), 2, "{}", stderr(&o));
        assert!(stderr(&o).contains("sha256"), "{}", stderr(&o));
    }
}

/// The fragment with its sha256 placeholder replaced by a well-formed digest.
fn with_wellformed_sha(fragment: &str) -> String {
    fragment
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("sha256 =") {
                format!("sha256 = \"{}\"", "0".repeat(64))
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}
