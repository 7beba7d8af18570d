//! The static binary (`make static`), built once for the tests that need it: the Flatcar
//! arrangement and the empty root. Its own target directory, so its flags never invalidate the
//! tests' own build.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::repo;

/// Builds (or reuses) `make static` and returns the binary's path.
pub fn static_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = repo().join("target/static");
        let start = std::time::Instant::now();
        let o = Command::new("make")
            .arg("-C")
            .arg(repo())
            .args(["--no-print-directory", "static"])
            .arg(format!("STATIC_DIR={}", dir.display()))
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("running make static");
        assert!(o.status.success(), "make static failed");
        eprintln!(
            "make static: {} in {:.0?}",
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .last()
                .unwrap_or(""),
            start.elapsed()
        );
        dir.join("x86_64-unknown-linux-gnu/release/guestprep")
    })
    .clone()
}
