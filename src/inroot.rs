//! Running a program inside an offline root (`apply --root DIR --chroot`) with what it needs
//! mounted: `chroot DIR PROGRAM`, with `/proc` (a proc mount) and the host's `/sys` and `/dev`
//! (recursive bind mounts) inside DIR, as the Debian installer mounts them for the commands it
//! runs in the target (`update-grub` reads `/proc/self/mountinfo` and probes devices).
//!
//! The mounts are made in a mount namespace of the program's own (`unshare --mount
//! --propagation private`): nothing outside it ever sees them, and they vanish with it, so
//! nothing stays mounted in the image whether the program succeeds, fails, or guestprep is
//! killed. The three directories must be real directories of the image: a symlink there (which
//! `mount` would follow out of the image) is refused.

use anyhow::{Result, bail};

use crate::root::{Node, Root};

/// What is mounted inside the root for the program.
pub const MOUNTS: &[&str] = &["/proc", "/sys", "/dev"];

/// The script `sh` runs in the new namespace: `$1` is the root, the rest the program.
const SETUP: &str = "r=$1; shift; \
     mount -t proc proc \"$r/proc\"; \
     mount --rbind /sys \"$r/sys\"; \
     mount --rbind /dev \"$r/dev\"; \
     exec chroot \"$r\" \"$@\"";

/// The command line that runs `argv` inside `root` with [`MOUNTS`] mounted.
pub fn command(root: &Root, argv: &[String]) -> Result<Vec<String>> {
    if root.is_live() {
        bail!("refusing to chroot into the live root /");
    }
    for m in MOUNTS {
        // Not following a symlink there: `mount` would, out of the image.
        match root.lstat(m)? {
            Node::Dir { .. } => {}
            Node::Missing => bail!(
                "{m} is missing in the {}: create the directory (a Debian root has it) to run {} there",
                root.describe(),
                argv.join(" ")
            ),
            Node::Symlink(t) => bail!(
                "{m} in the {} is a symlink (to {}), not a directory: refusing to mount over it",
                root.describe(),
                t.display()
            ),
            Node::File { .. } => bail!(
                "{m} in the {} is a file, not a directory: refusing to mount over it",
                root.describe()
            ),
            Node::Other(what) => bail!(
                "{m} in the {} is {what}, not a directory: refusing to mount over it",
                root.describe()
            ),
        }
    }
    let mut c: Vec<String> = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-ec",
        SETUP,
        "sh",
    ]
    .map(String::from)
    .to_vec();
    c.push(root.dir().display().to_string());
    c.extend(argv.iter().cloned());
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with(dirs: &[&str]) -> (tempfile::TempDir, Root) {
        let t = tempfile::tempdir().unwrap();
        for d in dirs {
            std::fs::create_dir_all(t.path().join(d)).unwrap();
        }
        let r = Root::new(t.path()).unwrap();
        (t, r)
    }

    #[test]
    fn the_program_follows_the_root_and_the_mounts() {
        let (t, r) = root_with(&["proc", "sys", "dev"]);
        let c = command(&r, &["/usr/sbin/update-grub".to_string()]).unwrap();
        assert_eq!(
            c[..5],
            ["unshare", "--mount", "--propagation", "private", "--"]
        );
        let n = c.len();
        assert_eq!(c[n - 2], t.path().display().to_string());
        assert_eq!(c[n - 1], "/usr/sbin/update-grub");
        for m in MOUNTS {
            assert!(c[7].contains(&format!("\"$r{m}\"")), "{}", c[7]);
        }
    }

    #[test]
    fn a_symlink_or_a_missing_directory_is_refused() {
        let (t, r) = root_with(&["proc", "sys"]);
        let e = command(&r, &["x".to_string()]).unwrap_err().to_string();
        assert!(e.starts_with("/dev is missing in the offline root"), "{e}");
        std::os::unix::fs::symlink("/etc", t.path().join("dev")).unwrap();
        let e = command(&r, &["x".to_string()]).unwrap_err().to_string();
        assert!(e.contains("/dev in the offline root"), "{e}");
        assert!(e.contains("is a symlink (to /etc)"), "{e}");
    }
}
