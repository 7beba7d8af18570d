//! Hostile images: symlinks at every path guestprep owns and at every parent of one (absolute,
//! relative climbing out, `..`, loops), run through `apply`, `verify`, `seal` and `daemon` with
//! `--root`, inside a mount namespace where everything but the image is read-only: any write that
//! escapes the image is an EROFS failure, not a silent host change. Also the two cases the review
//! found (a drop-in linked to sshd_config; a left-over file linked to a vendor file), the offline
//! units backend behind a symlinked /etc/systemd, policy discovery through a symlink, and the
//! lock file an offline run used to leave in the image.

use crate::common;
use common::*;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Paths guestprep writes, reads or removes in an image with the shipped policies and `seal`.
const MANAGED: &[&str] = &[
    "etc/sysctl.d/90-guestprep.conf",
    "etc/modules-load.d/guestprep.conf",
    "etc/modprobe.d/guestprep.conf",
    "etc/chrony/conf.d/50-guestprep.conf",
    "etc/ssh/sshd_config.d/05-guestprep.conf",
    "etc/default/grub.d/99-guestprep.cfg",
    "etc/containerd/config.toml",
    "etc/fstab",
    "etc/systemd/system/dkms.service",
    "etc/systemd/system/multi-user.target.wants/chrony.service",
    "etc/guestprep/policy.d/50-site.toml",
    "etc/machine-id",
    "etc/ssh/ssh_host_ed25519_key",
    "var/lib/guestprep/seal.json",
    "var/log/syslog",
    "run/guestprep/report.json",
];

/// Runs `script` (sh) in a new mount namespace in which every mount is read-only except `rw`
/// (bind-mounted onto itself first). Returns the output.
fn in_readonly_host(rw: &[&Path], script: &str, args: &[&str]) -> std::process::Output {
    let mut setup = String::from("set -e\n");
    for p in rw {
        setup.push_str(&format!("mount --bind '{0}' '{0}'\n", p.display()));
    }
    let skip: Vec<String> = rw.iter().map(|p| p.display().to_string()).collect();
    setup.push_str(&format!(
        r#"for m in $(awk '{{print $5}}' /proc/self/mountinfo | sort -r); do
  case "$m" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) continue;; esac
  skip=0
  for k in {}; do [ "$m" = "$k" ] && skip=1; done
  [ $skip = 1 ] && continue
  mount -o remount,bind,ro "$m" 2>/dev/null || true
done
set +e
"#,
        skip.iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    setup.push_str(script);
    Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &setup,
            "sh",
        ])
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("unshare (util-linux)")
}

/// The symlink targets tried at each path: outside by absolute path, outside by climbing, `..`,
/// a loop.
fn targets(host: &Path, link_name: &str) -> Vec<(&'static str, PathBuf)> {
    vec![
        ("absolute", host.to_path_buf()),
        (
            "climbing",
            PathBuf::from(format!("../../../../../../../../../..{}", host.display())),
        ),
        ("dotdot", PathBuf::from("..")),
        ("loop", PathBuf::from(link_name)),
    ]
}

#[test]
fn hostile_images_never_reach_the_host() {
    // A host directory the links point at: read-only in the namespace, checked afterwards.
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("sshd_config"), "host file\n").unwrap();
    std::fs::create_dir_all(host.path().join("system")).unwrap();
    let host_before = snapshot(host.path());

    // The harness itself: a write outside the image fails in the namespace.
    let work = tempfile::tempdir().unwrap();
    let o = in_readonly_host(
        &[work.path()],
        "touch \"$1/x\" && echo image-ok; touch \"$2/escape\" || echo host-readonly",
        &[work.path().to_str().unwrap(), host.path().to_str().unwrap()],
    );
    let out = stdout(&o);
    assert!(
        out.contains("image-ok") && out.contains("host-readonly"),
        "the read-only namespace does not work here: {out}{}",
        stderr(&o)
    );

    let script = r#"
img=$1; bin=$2; pol=$3
"$bin" apply --root "$img" --policy "$pol" >/dev/null 2>"$img/../apply.err"; echo "apply $?"
"$bin" verify --root "$img" --policy "$pol" >/dev/null 2>"$img/../verify.err"; echo "verify $?"
"$bin" seal --root "$img" --policy "$pol" --yes --force >/dev/null 2>"$img/../seal.err"; echo "seal $?"
timeout -s TERM 0.2 "$bin" daemon --root "$img" --policy "$pol" >/dev/null 2>"$img/../daemon.err"; echo "daemon $?"
"#;
    let mut cases: Vec<(String, &'static str, PathBuf)> = Vec::new();
    for managed in MANAGED {
        let parts: Vec<&str> = managed.split('/').collect();
        for depth in 1..=parts.len() {
            let at = parts[..depth].join("/");
            for (kind, target) in targets(host.path(), parts[depth - 1]) {
                cases.push((at.clone(), kind, target));
            }
        }
    }
    // The daemon runs for its timeout: several images at once (they wait, they do not compute).
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::<String>::new());
    let outcomes = std::sync::Mutex::new(std::collections::BTreeMap::<String, usize>::new());
    std::thread::scope(|scope| {
        for _ in 0..6 {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some((at, kind, target)) = cases.get(i) else {
                        return;
                    };
                    for problem in run_case(script, at, kind, target, &outcomes) {
                        failures.lock().unwrap().push(problem);
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert_same(&host_before, &snapshot(host.path()), "the host directory");
    eprintln!(
        "{} hostile images, 4 commands each: exit codes {:?}",
        cases.len(),
        outcomes.into_inner().unwrap()
    );
}

/// One hostile image: a symlink at `at`, the four commands run in the read-only namespace.
/// Returns what went wrong.
fn run_case(
    script: &str,
    at: &str,
    kind: &str,
    target: &Path,
    outcomes: &std::sync::Mutex<std::collections::BTreeMap<String, usize>>,
) -> Vec<String> {
    let case = tempfile::tempdir().unwrap();
    let img = case.path().join("img");
    std::fs::create_dir(&img).unwrap();
    copy_tree(&repo().join("examples/debian13-root"), &img);
    let link = img.join(at);
    let _ = std::fs::remove_dir_all(&link);
    let _ = std::fs::remove_file(&link);
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    symlink(target, &link).unwrap();
    let o = in_readonly_host(
        &[case.path()],
        script,
        &[img.to_str().unwrap(), BIN, policies().to_str().unwrap()],
    );
    let out = stdout(&o);
    let mut problems = Vec::new();
    if out.lines().count() != 4 {
        problems.push(format!("/{at} ({kind}): {out}{}", stderr(&o)));
    }
    for line in out.lines() {
        let Some((verb, rc)) = line.split_once(' ') else {
            continue;
        };
        let rc: i32 = rc.parse().unwrap_or(-1);
        let err =
            std::fs::read_to_string(case.path().join(format!("{verb}.err"))).unwrap_or_default();
        let what = format!("{verb} with /{at} -> {} ({kind})", target.display());
        // 124: the daemon ran until `timeout` stopped it.
        if !((0..=5).contains(&rc) || (verb == "daemon" && [124, 143].contains(&rc))) {
            problems.push(format!("{what}: exit {rc}\n{err}"));
        }
        if err.contains("Read-only file system") || err.contains("os error 30") {
            problems.push(format!("{what} tried to write outside the image:\n{err}"));
        }
        if err.contains("panicked") {
            problems.push(format!("{what} panicked:\n{err}"));
        }
        *outcomes
            .lock()
            .unwrap()
            .entry(format!("{verb} {rc}"))
            .or_default() += 1;
    }
    problems
}

#[test]
fn a_symlink_at_an_owned_path_is_an_error_and_removal_unlinks_only_the_link() {
    // The drop-in points at sshd_config: apply must not replace sshd_config with the drop-in.
    let root = example_root();
    let r = root.path();
    let main = std::fs::read(r.join("etc/ssh/sshd_config")).unwrap();
    symlink(
        "../sshd_config",
        r.join("etc/ssh/sshd_config.d/05-guestprep.conf"),
    )
    .unwrap();
    let o = on_root("apply", r, &["--json"]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    let rep = json(&o);
    let i = item(&rep, "file:/etc/ssh/sshd_config.d/05-guestprep.conf");
    assert_eq!(i["status"], "error", "{i}");
    assert!(
        i["message"].as_str().unwrap().contains("is a symlink"),
        "{i}"
    );
    assert_eq!(std::fs::read(r.join("etc/ssh/sshd_config")).unwrap(), main);

    // A left-over file of a dropped section that is a link to a vendor file: the link goes, the
    // vendor file stays.
    let root = example_root();
    let r = root.path();
    std::fs::create_dir_all(r.join("usr/lib/sysctl.d")).unwrap();
    std::fs::write(r.join("usr/lib/sysctl.d/50-vendor.conf"), "kernel.x = 1\n").unwrap();
    symlink(
        "/usr/lib/sysctl.d/50-vendor.conf",
        r.join("etc/sysctl.d/90-guestprep.conf"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pol = dir.path().join("p.toml");
    std::fs::write(&pol, "[swap]\nenabled = false\n").unwrap();
    let o = guestprep(&[
        "apply",
        "--root",
        r.to_str().unwrap(),
        "--policy",
        pol.to_str().unwrap(),
    ]);
    assert!(
        std::fs::symlink_metadata(r.join("etc/sysctl.d/90-guestprep.conf")).is_err(),
        "the link is gone: {}",
        stdout(&o)
    );
    assert_eq!(
        std::fs::read_to_string(r.join("usr/lib/sysctl.d/50-vendor.conf")).unwrap(),
        "kernel.x = 1\n",
        "the vendor file is kept"
    );
}

#[test]
fn offline_units_and_policy_discovery_stay_in_the_image() {
    // /etc/systemd is an absolute link to a host path: mask and enable links go inside the image.
    let host = tempfile::tempdir().unwrap();
    let root = example_root();
    let r = root.path();
    let _ = std::fs::remove_dir_all(r.join("etc/systemd"));
    symlink(host.path(), r.join("etc/systemd")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pol = dir.path().join("p.toml");
    std::fs::write(&pol, "[units]\nmask = [\"dkms.service\"]\n").unwrap();
    let o = guestprep(&[
        "apply",
        "--root",
        r.to_str().unwrap(),
        "--policy",
        pol.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        std::fs::read_dir(host.path()).unwrap().count(),
        0,
        "a link was made on the host"
    );
    let inside = r
        .join(host.path().strip_prefix("/").unwrap())
        .join("system/dkms.service");
    assert_eq!(std::fs::read_link(&inside).unwrap(), Path::new("/dev/null"));

    // /etc/guestprep is a link to a host directory with a policy: not loaded.
    let root = example_root();
    let r = root.path();
    let hostpol = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(hostpol.path().join("policy.d")).unwrap();
    std::fs::write(
        hostpol.path().join("policy.d/10-host.toml"),
        "[swap]\nenabled = false\n",
    )
    .unwrap();
    std::fs::create_dir_all(r.join("etc")).unwrap();
    symlink(hostpol.path(), r.join("etc/guestprep")).unwrap();
    let o = guestprep(&["policy", "show", "--root", r.to_str().unwrap()]);
    assert_fails(&o, 2, "no policy");
}
