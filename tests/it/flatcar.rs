//! Flatcar, honestly: no Flatcar image is reachable here, so Flatcar's *arrangement* is built from
//! Debian 13's real packages (Flatcar's os-release, no dpkg database, a read-only `/usr`, sshd per
//! connection from `sshd.socket` with `Accept=yes`, the static binary only) and the real programs
//! judge what guestprep did: systemd-sysctl, systemctl, sshd and ssh, systemd-sysext, qemu-ga.
//! What this does not prove: Flatcar's own kernel, its OpenSSH build, Ignition, update_engine.

use crate::common;
use common::container::{Container, rootfs_tar, unpack};
use common::static_bin::static_bin;
use common::*;

use std::path::Path;
use std::process::Command;

/// Flatcar's os-release (4152.2.0, the stable release of 2025), as /usr/lib/os-release has it.
pub const OS_RELEASE: &str = r#"NAME="Flatcar Container Linux by Kinvolk"
ID=flatcar
ID_LIKE=coreos
VERSION=4152.2.0
VERSION_ID=4152.2.0
BUILD_ID=2025-02-14-0010
SYSEXT_LEVEL=1.0
PRETTY_NAME="Flatcar Container Linux by Kinvolk 4152.2.0 (Oklo)"
ANSI_COLOR="38;5;75"
HOME_URL="https://flatcar.org/"
BUG_REPORT_URL="https://issues.flatcar.org"
FLATCAR_BOARD="amd64-usr"
CPE_NAME="cpe:2.3:o:flatcar-linux:flatcar_linux:4152.2.0:*:*:*:*:*:*:*"
"#;

/// Makes a Debian root look as Flatcar is arranged: its os-release (and /etc's link to it), no
/// dpkg database, and, when `sshd` is asked, Flatcar's per-connection sshd units.
pub fn flatcarize(root: &Path, sshd: bool) {
    write_os_release(root, OS_RELEASE);
    let _ = std::fs::remove_dir_all(root.join("var/lib/dpkg"));
    for b in ["usr/bin/dpkg", "usr/bin/apt-get", "usr/bin/apt"] {
        let _ = std::fs::remove_file(root.join(b));
    }
    if sshd {
        // Flatcar's units (coreos-overlay's openssh): one sshd per connection.
        let lib = root.join("usr/lib/systemd/system");
        std::fs::write(
            lib.join("sshd.socket"),
            "[Unit]\nDescription=OpenSSH Server Socket\nConflicts=sshd.service\n\n[Socket]\nListenStream=22\nFreeBind=true\nAccept=yes\n\n[Install]\nWantedBy=sockets.target\n",
        )
        .unwrap();
        std::fs::write(
            lib.join("sshd@.service"),
            "[Unit]\nDescription=OpenSSH per-connection server daemon\nAfter=syslog.target auditd.service\n\n[Service]\nExecStartPre=/usr/bin/mkdir -p /run/sshd\nExecStart=-/usr/sbin/sshd -i -e\nStandardInput=socket\nStandardError=journal\n",
        )
        .unwrap();
        let wants = root.join("etc/systemd/system/sockets.target.wants");
        std::fs::create_dir_all(&wants).unwrap();
        std::os::unix::fs::symlink(
            "/usr/lib/systemd/system/sshd.socket",
            wants.join("sshd.socket"),
        )
        .unwrap();
        // Debian's own ssh.service and its socket are not Flatcar's.
        for l in [
            "etc/systemd/system/multi-user.target.wants/ssh.service",
            "etc/systemd/system/sshd.service",
            "etc/systemd/system/sockets.target.wants/ssh.socket",
        ] {
            let _ = std::fs::remove_file(root.join(l));
        }
        for u in [
            "ssh.service",
            "ssh.socket",
            "ssh@.service",
            "rescue-ssh.target",
        ] {
            let _ = std::fs::remove_file(lib.join(u));
        }
    }
}

#[test]
fn the_static_binary_runs_in_a_root_with_no_libraries_and_no_loader() {
    let bin = static_bin();
    let ldd = Command::new("ldd").arg(&bin).output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&ldd.stdout),
        String::from_utf8_lossy(&ldd.stderr)
    );
    // glibc's ldd says "statically linked" of a static-pie, "not a dynamic executable" of a
    // static non-PIE binary; either way no loader and no library is named.
    assert!(
        said.contains("statically linked") || said.contains("not a dynamic executable"),
        "ldd: {said}"
    );
    let elf = |flag: &str| {
        let o = Command::new("readelf")
            .args([flag, "-W"])
            .arg(&bin)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(!elf("-l").contains("INTERP"), "a loader is named");
    assert!(!elf("-d").contains("(NEEDED)"), "libraries are needed");
    let size = std::fs::metadata(&bin).unwrap().len();
    println!(
        "static binary: {size} bytes ({:.1} MiB)",
        size as f64 / 1048576.0
    );

    // A root with the binary, Flatcar's os-release and a policy: no /lib, no /usr/lib, no loader.
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::copy(&bin, r.join("guestprep")).unwrap();
    std::fs::create_dir_all(r.join("etc/guestprep")).unwrap();
    std::fs::create_dir_all(r.join("proc")).unwrap();
    std::fs::write(r.join("etc/os-release"), OS_RELEASE).unwrap();
    std::fs::write(
        r.join("etc/guestprep/policy.toml"),
        "[sysctl]\n\"net.ipv4.ip_forward\" = 1\n\n[[files]]\npath = \"/etc/motd\"\ncontent = \"a Flatcar node\\n\"\n",
    )
    .unwrap();
    for d in ["lib", "lib64", "usr/lib"] {
        assert!(!r.join(d).exists());
    }
    let chroot = |args: &str| {
        Command::new("unshare")
            .args(["--mount", "--fork", "sh", "-c"])
            .arg(format!(
                "mount -t proc proc {0}/proc && chroot {0} /guestprep {args}",
                r.display()
            ))
            .output()
            .unwrap()
    };
    let o = chroot("policy check");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("policy valid"), "{}", stdout(&o));
    let o = chroot("verify --json");
    // The motd is not there yet: drift, exit 1, and a report that says what the root is.
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["host"]["platform"], "flatcar", "{report:#}");
    assert_eq!(report["host"]["packageManager"], "none");
    assert_eq!(report["host"]["usrWritable"], false);
    let motd = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == "file:/etc/motd")
        .expect("file:/etc/motd item");
    assert_eq!(motd["status"], "drift");
    let o = chroot("apply");
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        std::fs::read_to_string(r.join("etc/motd")).unwrap(),
        "a Flatcar node\n"
    );
    println!("static binary in an empty root: policy check 0, verify 1 (drift), apply 0");
}

/// The example root arranged as Flatcar: the offline half (refusals, what the report says).
fn flatcar_example_root() -> tempfile::TempDir {
    let root = example_root();
    flatcarize(root.path(), false);
    root
}

#[test]
fn sections_that_cannot_apply_on_flatcar_are_refused_before_anything_runs() {
    let root = flatcar_example_root();
    let r = root.path().to_str().unwrap();
    let dir = repo().join("tests/fixtures/flatcar-refused");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let expects: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(!expects.is_empty(), "{}: no `# expect:`", path.display());
        let p = path.to_str().unwrap();
        // Valid on Debian: the refusal is the platform's, not the schema's.
        let o = guestprep(&["policy", "check", "--policy", p]);
        assert_eq!(code(&o), 0, "{p} on Debian: {}", stderr(&o));
        let o = guestprep(&["policy", "check", "--root", r, "--policy", p]);
        assert_eq!(code(&o), 2, "{p}: {}", stderr(&o));
        for e in &expects {
            assert!(
                stderr(&o).contains(e),
                "{p}: expected `{e}` in:\n{}",
                stderr(&o)
            );
        }
        for verb in ["apply", "verify"] {
            let before = snapshot(root.path());
            let o = guestprep(&[verb, "--root", r, "--policy", p]);
            assert_eq!(code(&o), 2, "{verb} {p}: {}", stderr(&o));
            assert_same(
                &before,
                &snapshot(root.path()),
                &format!("{verb} {p} changed the root"),
            );
        }
        n += 1;
    }
    assert!(n >= 4, "only {n} cases");
    // What does apply: everything that lives in /etc, offline too.
    let ok = repo().join("examples/flatcar/policy.d");
    let o = guestprep(&[
        "policy",
        "check",
        "--root",
        r,
        "--policy",
        ok.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    println!(
        "flatcar: {n} refused policies exit 2 with file:line, nothing changed; the Flatcar example is valid"
    );
}

/// The Flatcar arrangement booted: `/usr` read-only, no dpkg, sshd per connection.
fn boot_flatcar() -> Container {
    let dir = unpack(&rootfs_tar("flatcar"));
    let r = dir.path().to_path_buf();
    flatcarize(&r, true);
    let _ = std::fs::remove_file(r.join("usr/local/bin/guestprep"));
    std::fs::create_dir_all(r.join("opt/bin")).unwrap();
    std::fs::copy(static_bin(), r.join("opt/bin/guestprep")).unwrap();
    let usr = format!("--bind-ro={}:/usr", r.join("usr").display());
    Container::boot_with(dir, &["--private-network", &usr])
}

#[test]
fn a_flatcar_node_converges_what_lives_in_etc_and_the_real_programs_agree() {
    let c = boot_flatcar();
    let gp = "/opt/bin/guestprep";
    // /usr really is read-only, and there is no dpkg.
    let o = c.exec(&["touch", "/usr/x"]);
    assert!(!o.status.success(), "/usr is writable in the arrangement");
    assert!(!c.root().join("var/lib/dpkg").exists());

    let policy = repo().join("examples/flatcar/policy.d");
    let dest = c.root().join("etc/guestprep/policy.d");
    std::fs::create_dir_all(&dest).unwrap();
    for e in std::fs::read_dir(&policy).unwrap().flatten() {
        std::fs::copy(e.path(), dest.join(e.file_name())).unwrap();
    }
    let o = c.exec(&[gp, "verify", "--json"]);
    assert_eq!(code(&o), 1, "before apply: {}", stderr(&o));
    let o = c.exec(&[gp, "apply"]);
    assert!(
        matches!(code(&o), 0 | 3),
        "apply: {}{}",
        stdout(&o),
        stderr(&o)
    );
    let o = c.exec(&[gp, "verify", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let bad: Vec<String> = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| !matches!(i["status"].as_str(), Some("compliant" | "skipped")))
        .map(|i| format!("{} {} {}", i["id"], i["status"], i["message"]))
        .collect();
    assert_eq!(code(&o), 0, "after apply: {bad:#?}");
    assert_eq!(report["host"]["platform"], "flatcar");
    assert_eq!(report["host"]["sshdStart"], "per-connection");

    // The real programs: systemd-sysctl's merged configuration and the live value.
    let cat = String::from_utf8_lossy(
        &c.exec(&["/usr/lib/systemd/systemd-sysctl", "--cat-config"])
            .stdout,
    )
    .into_owned();
    let set = |key: &str| {
        cat.lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_string())
            .next_back()
    };
    assert_eq!(set("net.ipv4.ip_forward").as_deref(), Some("1"), "{cat}");
    assert_eq!(set("net.core.somaxconn").as_deref(), Some("32768"), "{cat}");
    let live =
        std::fs::read_to_string(format!("/proc/{}/root/proc/sys/net/ipv4/ip_forward", c.pid))
            .unwrap_or_default();
    assert_eq!(live.trim(), "1");
    // systemctl: the mask.
    assert_eq!(c.systemctl("is-enabled", "locksmithd.service"), "masked");
    // sshd, per connection: a cipher the policy leaves out is refused in the key exchange, one it
    // keeps gets past it (to authentication, which fails: no key).
    let ssh = |cipher: &str| {
        let o = c.exec(&[
            "ssh",
            "-p",
            "22",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            &format!("Ciphers={cipher}"),
            "nobody@127.0.0.1",
            "true",
        ]);
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let weak = ssh("aes128-ctr");
    assert!(weak.contains("no matching cipher"), "aes128-ctr: {weak}");
    let kept = ssh("aes256-gcm@openssh.com");
    assert!(kept.contains("Permission denied"), "aes256-gcm: {kept}");
    // A second apply changes nothing.
    let o = c.exec(&[gp, "apply", "--json"]);
    let again: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        again["apply"]["changes"].as_array().map(Vec::len),
        Some(0),
        "{again:#}"
    );
    println!(
        "flatcar arrangement: apply converged; systemd-sysctl, systemctl and a real ssh connection agree; a second apply changed nothing"
    );
}

#[test]
fn the_sysext_merges_with_systemd_sysext_and_its_daemon_reports_through_a_real_qemu_ga() {
    let bin = static_bin();
    let out = tempfile::tempdir().unwrap();
    let raw = out.path().join("guestprep-x86-64.raw");
    let o = Command::new(repo().join("tests/testbed/sysext.sh"))
        .arg(&bin)
        .arg(&raw)
        .output()
        .unwrap();
    assert!(o.status.success(), "sysext.sh: {}", stderr(&o));
    println!("{}", stdout(&o).trim());

    let c = boot_flatcar();
    // The image's content, as systemd-sysext finds it in /var/lib/extensions. This machine's
    // kernel has no squashfs, so the image is unpacked into a directory extension (which
    // systemd-sysext merges the same way); `unsquashfs` reads the image `make sysext` made.
    let ext = c.root().join("var/lib/extensions/guestprep");
    std::fs::create_dir_all(ext.parent().unwrap()).unwrap();
    let o = Command::new("unsquashfs")
        .args(["-q", "-n", "-d"])
        .arg(&ext)
        .arg(&raw)
        .output()
        .unwrap();
    assert!(o.status.success(), "unsquashfs: {}", stderr(&o));
    assert!(!c.root().join("usr/bin/guestprep").exists());
    let o = c.exec(&["systemd-sysext", "merge"]);
    assert!(
        o.status.success(),
        "systemd-sysext merge: {}{}",
        stdout(&o),
        stderr(&o)
    );
    let o = c.exec(&["systemd-sysext", "status"]);
    assert!(stdout(&o).contains("guestprep"), "{}", stdout(&o));
    let o = c.exec(&["/usr/bin/guestprep", "--version"]);
    assert!(o.status.success(), "the merged binary: {}", stderr(&o));

    // The daemon from the merged /usr, with the Flatcar example's policy.
    let dest = c.root().join("etc/guestprep/policy.d");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::copy(
        repo().join("examples/flatcar/policy.d/50-node.toml"),
        dest.join("50-node.toml"),
    )
    .unwrap();
    let o = c.exec(&["/usr/bin/guestprep", "apply", "-q"]);
    assert!(
        matches!(code(&o), 0 | 3),
        "apply: {}{}",
        stdout(&o),
        stderr(&o)
    );
    c.exec(&["systemctl", "daemon-reload"]);
    let o = c.exec(&["systemctl", "start", "guestprep.service"]);
    assert!(o.status.success(), "starting the daemon: {}", stderr(&o));
    assert_eq!(c.systemctl("is-active", "guestprep.service"), "active");

    // A real qemu-ga in the node, on a unix socket; the host reads the report through it.
    let o = c.exec(&[
        "systemd-run",
        "--unit",
        "qga-test",
        "--",
        "qemu-ga",
        "-m",
        "unix-listen",
        "-p",
        "/run/qga.sock",
    ]);
    assert!(o.status.success(), "qemu-ga: {}", stderr(&o));
    let socket = format!("/proc/{}/root/run/qga.sock", c.pid);
    let start = std::time::Instant::now();
    while !Path::new(&socket).exists() {
        assert!(start.elapsed().as_secs() < 20, "qemu-ga never listened");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let o = guestprep(&["qga", "--socket", &socket, "report", "--json"]);
    assert_eq!(code(&o), 0, "qga report: {}{}", stdout(&o), stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["compliant"], true, "{r:#}");
    assert_eq!(r["host"]["platform"], "flatcar");
    println!(
        "flatcar sysext: merged by systemd-sysext, the daemon from /usr/bin ran, and its report came through a real qemu-ga ({} items, compliant)",
        r["items"].as_array().map_or(0, Vec::len)
    );
}
