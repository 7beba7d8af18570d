//! A temporary offline root for the resources' inline check tests (test-only, hence `_tests.rs`:
//! the door test lets it write): the files, links and directories a check reads, and its verdict.

use crate::engine::{Resource, System};
use crate::report::Status;
use crate::root::Root;

pub struct TempRoot {
    dir: tempfile::TempDir,
}

impl TempRoot {
    pub fn new() -> Self {
        TempRoot {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The host path of `abs` (its parent made).
    pub fn host(&self, abs: &str) -> std::path::PathBuf {
        let p = self.dir.path().join(abs.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        p
    }

    /// Writes `text` at `abs` inside the root (replacing what is there).
    pub fn file(&self, abs: &str, text: &str) -> &Self {
        let p = self.host(abs);
        let _ = std::fs::remove_file(&p);
        std::fs::write(p, text).unwrap();
        self
    }

    /// A symlink at `abs` to `target` (replacing what is there).
    pub fn link(&self, abs: &str, target: &str) -> &Self {
        let p = self.host(abs);
        let _ = std::fs::remove_file(&p);
        std::os::unix::fs::symlink(target, p).unwrap();
        self
    }

    pub fn dir(&self, abs: &str, mode: u32) -> &Self {
        use std::os::unix::fs::PermissionsExt;
        let p = self.host(abs);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        self
    }

    /// The check's status and message on this root, as it is now.
    pub fn check(&self, r: &dyn Resource) -> (Status, String) {
        let sys = System::new(Root::new(self.dir.path()).unwrap());
        let obs = r.check(&sys).unwrap();
        (obs.status, obs.message)
    }
}
