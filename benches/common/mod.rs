//! Set-up shared by the benchmarks: a converged copy of the example Debian 13 root, and (`scale`)
//! the same with thousands of items more.

pub mod scale;

use std::path::Path;
use std::process::{Command, Stdio};

/// Copies `examples/debian13-root` into `root` (an existing, empty directory) and converges it with
/// the shipped policies; returns the `--root ROOT --policy POLICIES` arguments for the binary.
pub fn converged_root(bin: &str, root: &Path) -> Vec<String> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let st = Command::new("cp")
        .arg("-a")
        .arg(repo.join("examples/debian13-root/."))
        .arg(root)
        .status()
        .unwrap();
    assert!(st.success());
    let args = vec![
        "--root".to_string(),
        root.display().to_string(),
        "--policy".to_string(),
        repo.join("policies").display().to_string(),
    ];
    let st = Command::new(bin)
        .arg("apply")
        .args(&args)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    // 3: converged offline but for update-grub, which an offline apply leaves pending (exit 3).
    assert!(
        matches!(st.code(), Some(0 | 3)),
        "apply on the benchmark root failed: {st}"
    );
    args
}
