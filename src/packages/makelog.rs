//! What a DKMS build says in its make.log: which module and kernel it is building and the step it
//! is at (for the runner's heartbeat), and the first compiler errors when it failed.

use std::path::PathBuf;
use std::time::SystemTime;

/// A progress callback for [`crate::exec::run_with`]: what a DKMS build started by `argv` (run by
/// dkms, or by a package's postinst under apt-get) is doing, from its make.log.
pub fn watch(argv: &[String]) -> impl FnMut() -> Option<String> + use<> {
    let trees = dkms_trees(argv);
    let since = SystemTime::now();
    move || dkms_progress(&trees, since)
}

/// The DKMS trees a command builds in: `--dkmstree DIR` when given (`dkms try`), else the
/// (chroot's) `/var/lib/dkms`.
fn dkms_trees(argv: &[String]) -> Vec<PathBuf> {
    if let Some(i) = argv.iter().position(|a| a == "--dkmstree")
        && let Some(d) = argv.get(i + 1)
    {
        return vec![d.into()];
    }
    let root = match argv.first().map(String::as_str) {
        Some("chroot") => argv.get(1).map_or("/".into(), PathBuf::from),
        _ => "/".into(),
    };
    vec![root.join("var/lib/dkms")]
}

/// What a DKMS build under way is doing, from the newest make.log written since `since`:
/// `i915-sriov-dkms/2025.07.22 for 6.12.117+deb13-amd64, CC [M] drivers/…/intel_gt.o`.
pub fn dkms_progress(trees: &[PathBuf], since: SystemTime) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    for tree in trees {
        for m in std::fs::read_dir(tree).into_iter().flatten().flatten() {
            for v in std::fs::read_dir(m.path()).into_iter().flatten().flatten() {
                let log = v.path().join("build/make.log");
                if let Ok(t) = std::fs::metadata(&log).and_then(|md| md.modified())
                    && t >= since
                    && newest.as_ref().is_none_or(|(n, _)| t > *n)
                {
                    newest = Some((t, log));
                }
            }
        }
    }
    let (_, log) = newest?;
    let mut f = crate::saferead::open_regular(&log).ok()??;
    let mut head = [0u8; 256];
    let n = f.read(&mut head).ok()?;
    let head = String::from_utf8_lossy(&head[..n]);
    // "DKMS (dkms-3.2.0) make.log for i915-sriov-dkms/2025.07.22 for kernel 6.12.117+deb13-amd64 (x86_64)"
    let what = head
        .lines()
        .next()
        .and_then(|l| l.split_once(" make.log for "))
        .map(|(_, rest)| rest.replace(" for kernel ", " for "))
        .map(|r| r.split(" (").next().unwrap_or("").to_string())?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(4096))).ok()?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).ok()?;
    let tail = String::from_utf8_lossy(&tail);
    let step = tail
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with("CC") || l.starts_with("LD") || l.starts_with("MODPOST"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "));
    Some(match step {
        Some(s) => format!("building {what}, {s}"),
        None => format!("building {what}"),
    })
}

/// The first compiler errors of a make log (`file:line:col: error: …`, and make's own `***`
/// lines when there are none), at most `n`, paths shortened to the part after the source tree.
pub fn first_errors(log: &str, n: usize) -> Vec<String> {
    let short = |l: &str| {
        let l = l.trim();
        match l.find("/build/") {
            Some(i) if l[..i].starts_with('/') => l[i + "/build/".len()..].to_string(),
            _ => l.to_string(),
        }
    };
    let mut out: Vec<String> = log
        .lines()
        .filter(|l| l.contains(": error:") || l.contains(": fatal error:"))
        .map(short)
        .collect();
    if out.is_empty() {
        out = log
            .lines()
            .filter(|l| l.contains("***") || l.contains("Error "))
            .map(short)
            .collect();
    }
    out.dedup();
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_dkms_build_says_what_it_builds() {
        let tree = tempfile::tempdir().unwrap();
        let dir = tree.path().join("i915-sriov-dkms/2025.07.22/build");
        std::fs::create_dir_all(&dir).unwrap();
        let since = std::time::SystemTime::now() - Duration::from_secs(1);
        let trees = vec![tree.path().to_path_buf()];
        std::fs::write(
            dir.join("make.log"),
            "DKMS (dkms-3.2.0) make.log for i915-sriov-dkms/2025.07.22 for kernel 6.12.117+deb13-amd64 (x86_64)\n\
             Tue Nov 24\n  CC [M]  drivers/gpu/drm/i915/i915_drv.o\n  CC [M]  drivers/gpu/drm/i915/gt/intel_gt.o\n",
        )
        .unwrap();
        assert_eq!(
            dkms_progress(&trees, since).as_deref(),
            Some(
                "building i915-sriov-dkms/2025.07.22 for 6.12.117+deb13-amd64, CC [M] drivers/gpu/drm/i915/gt/intel_gt.o"
            )
        );
        // A log older than the command is not its build.
        let later = std::time::SystemTime::now() + Duration::from_secs(60);
        assert_eq!(dkms_progress(&trees, later), None);
        let argv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            dkms_trees(&argv(&["dkms", "build", "--dkmstree", "/tmp/t"])),
            [PathBuf::from("/tmp/t")]
        );
        assert_eq!(
            dkms_trees(&argv(&["chroot", "/mnt", "apt-get"])),
            [PathBuf::from("/mnt/var/lib/dkms")]
        );
    }

    #[test]
    fn first_errors_of_a_kernel_build() {
        let log = "\
DKMS (dkms-3.2.0) make.log for i915-sriov-dkms/2025.07.22 for kernel 6.12.117+deb13-amd64 (x86_64)
make -C /lib/modules/6.12.117+deb13-amd64/build M=/var/lib/dkms/i915-sriov-dkms/2025.07.22/build modules
  CC [M]  /var/lib/dkms/i915-sriov-dkms/2025.07.22/build/drivers/gpu/drm/i915/i915_gem.o
/var/lib/dkms/i915-sriov-dkms/2025.07.22/build/drivers/gpu/drm/i915/i915_buddy.c:12:30: error: invalid use of undefined type 'struct drm_buddy_block'
   12 |         return block->header;
/var/lib/dkms/i915-sriov-dkms/2025.07.22/build/drivers/gpu/drm/i915/i915_buddy.c:12:30: error: invalid use of undefined type 'struct drm_buddy_block'
/var/lib/dkms/i915-sriov-dkms/2025.07.22/build/drivers/gpu/drm/i915/i915_fbdev.c:40:9: error: too few arguments to function 'drm_fb_helper_init'
make[2]: *** [scripts/Makefile.build:229: drivers/gpu/drm/i915/i915_buddy.o] Error 1
";
        assert_eq!(
            first_errors(log, 5),
            [
                "drivers/gpu/drm/i915/i915_buddy.c:12:30: error: invalid use of undefined type 'struct drm_buddy_block'",
                "drivers/gpu/drm/i915/i915_fbdev.c:40:9: error: too few arguments to function 'drm_fb_helper_init'",
            ]
        );
        assert_eq!(
            first_errors("make: *** No rule to make target 'x'.  Stop.\n", 5),
            ["make: *** No rule to make target 'x'.  Stop."]
        );
        assert_eq!(first_errors("", 5), Vec::<String>::new());
    }
}
