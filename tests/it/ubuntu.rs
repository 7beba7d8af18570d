//! Ubuntu 24.04, honestly: no Ubuntu archive is reachable here, so Ubuntu's *arrangement* is built
//! from Debian 13's real dpkg and apt: Noble's os-release, and Noble's kernel package graph as
//! small local `.deb`s with its names and dependencies (`linux-virtual` → `linux-image-virtual` →
//! `linux-image-6.8.0-NN-generic`, headers likewise) in a local apt repository, a newer ABI waiting
//! in it. The real programs judge: `dpkg --get-selections`, `apt-get -s upgrade`. Not proven here:
//! Ubuntu's own kernels, its archive's real metadata, its apt and dpkg versions.

use crate::common;
use common::container::{Container, rootfs_tar, unpack};
use common::debs::control_deb;
use common::*;

use std::process::Command;

/// Ubuntu 24.04's os-release, as /usr/lib/os-release of the Noble cloud image has it.
pub const OS_RELEASE: &str = r#"PRETTY_NAME="Ubuntu 24.04.1 LTS"
NAME="Ubuntu"
VERSION_ID="24.04"
VERSION="24.04.1 LTS (Noble Numbat)"
VERSION_CODENAME=noble
ID=ubuntu
ID_LIKE=debian
HOME_URL="https://www.ubuntu.com/"
SUPPORT_URL="https://help.ubuntu.com/"
BUG_REPORT_URL="https://bugs.launchpad.net/ubuntu/"
PRIVACY_POLICY_URL="https://www.ubuntu.com/legal/terms-and-policies/privacy-policy"
UBUNTU_CODENAME=noble
LOGO=ubuntu-logo
"#;

/// Noble's kernel graph for one ABI: the image and headers, and the three metas above them.
fn kernel_debs(out: &std::path::Path, abi: u32) {
    let v = format!("6.8.0-{abi}");
    let kver = format!("{v}-generic");
    let meta = format!("{v}.{abi}");
    control_deb(
        out,
        &format!("linux-image-{kver}"),
        &format!("{v}.{abi}"),
        "",
        &[
            (&format!("/boot/vmlinuz-{kver}"), "not a kernel"),
            (&format!("/usr/lib/modules/{kver}/modules.order"), ""),
        ],
    );
    control_deb(
        out,
        &format!("linux-headers-{kver}"),
        &format!("{v}.{abi}"),
        "",
        &[(&format!("/usr/src/linux-headers-{kver}/Makefile"), "")],
    );
    control_deb(
        out,
        "linux-image-virtual",
        &meta,
        &format!("linux-image-{kver}"),
        &[],
    );
    control_deb(
        out,
        "linux-headers-virtual",
        &meta,
        &format!("linux-headers-{kver}"),
        &[],
    );
    control_deb(
        out,
        "linux-virtual",
        &meta,
        &format!("linux-image-virtual (= {meta}), linux-headers-virtual (= {meta})"),
        &[],
    );
}

/// What `apt-get -s upgrade` would install (its `Inst` lines' package names).
fn would_install(c: &Container) -> Vec<String> {
    let o = c.exec(&["apt-get", "-s", "-o", "Debug::NoLocking=1", "dist-upgrade"]);
    stdout(&o)
        .lines()
        .filter_map(|l| l.strip_prefix("Inst "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn kernel_holds_follow_dpkgs_graph_up_to_the_top_meta_and_apt_keeps_the_kernel() {
    let dir = unpack(&rootfs_tar("systemd"));
    let r = dir.path().to_path_buf();
    write_os_release(&r, OS_RELEASE);
    // A local repository with two ABIs: 49 installed, 50 what an upgrade would bring.
    let repo_dir = r.join("srv/repo");
    std::fs::create_dir_all(&repo_dir).unwrap();
    kernel_debs(&repo_dir, 49);
    kernel_debs(&repo_dir, 50);
    let o = Command::new("sh")
        .arg("-c")
        .arg("dpkg-scanpackages --multiversion . /dev/null > Packages 2>/dev/null")
        .current_dir(&repo_dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "dpkg-scanpackages: {}", stderr(&o));
    std::fs::write(
        r.join("etc/apt/sources.list.d/local.list"),
        "deb [trusted=yes] file:/srv/repo ./\n",
    )
    .unwrap();
    // Only the local repository: nothing else is reachable.
    let _ = std::fs::remove_file(r.join("etc/apt/sources.list"));
    let _ = std::fs::remove_file(r.join("etc/apt/sources.list.d/debian.sources"));
    let c = Container::boot_isolated(dir);
    let o = c.exec(&["apt-get", "update", "-q"]);
    assert!(
        o.status.success(),
        "apt-get update: {}{}",
        stdout(&o),
        stderr(&o)
    );
    let o = c.exec(&[
        "env",
        "DEBIAN_FRONTEND=noninteractive",
        "apt-get",
        "install",
        "-y",
        "-q",
        "linux-virtual=6.8.0-49.49",
        "linux-image-virtual=6.8.0-49.49",
        "linux-headers-virtual=6.8.0-49.49",
    ]);
    assert!(
        o.status.success(),
        "installing ABI 49: {}{}",
        stdout(&o),
        stderr(&o)
    );
    // The control: unheld, apt would move the flavour to ABI 50.
    let before = would_install(&c);
    assert!(
        before.iter().any(|p| p == "linux-image-6.8.0-50-generic"),
        "apt would not upgrade even unheld: {before:?}"
    );

    std::fs::write(
        c.root().join("root/kernel.toml"),
        "[kernel]\nversion = \"6.8.0-49-generic\"\n",
    )
    .unwrap();
    let o = c.exec(&[
        "guestprep",
        "verify",
        "--json",
        "--policy",
        "/root/kernel.toml",
    ]);
    let rep = json(&o);
    let holds = item(&rep, "kernel:holds");
    assert_eq!(holds["status"], "drift", "{holds:#}");
    let metas = holds["actual"]["metas"].clone();
    assert_eq!(
        metas,
        serde_json::json!([
            "linux-headers-virtual",
            "linux-image-virtual",
            "linux-virtual"
        ]),
        "{holds:#}"
    );
    // The generic flavour's names (not installed on a virtual image) are not what is held.
    assert!(
        rep["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["id"] != "package-hold:linux-image-generic")
    );
    assert_eq!(rep["host"]["platform"], "ubuntu");

    let o = c.exec(&[
        "guestprep",
        "apply",
        "--json",
        "--policy",
        "/root/kernel.toml",
    ]);
    assert!(
        matches!(code(&o), 0 | 3),
        "apply: {}{}",
        stdout(&o),
        stderr(&o)
    );
    assert_eq!(item(&json(&o), "kernel:holds")["status"], "compliant");
    // dpkg agrees: all five held.
    let sel = stdout(&c.exec(&["dpkg", "--get-selections"]));
    for p in [
        "linux-image-6.8.0-49-generic",
        "linux-headers-6.8.0-49-generic",
        "linux-image-virtual",
        "linux-headers-virtual",
        "linux-virtual",
    ] {
        assert!(
            sel.lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == [p, "hold"]),
            "{p} not held:\n{sel}"
        );
    }
    // apt agrees: the upgrade no longer brings ABI 50.
    let after = would_install(&c);
    assert!(
        !after.iter().any(|p| p.contains("6.8.0-50")),
        "apt would still install: {after:?}"
    );
    // A second apply changes nothing.
    let o = c.exec(&[
        "guestprep",
        "apply",
        "--json",
        "--policy",
        "/root/kernel.toml",
    ]);
    assert_eq!(
        json(&o)["apply"]["changes"].as_array().map(Vec::len),
        Some(0),
        "{}",
        stdout(&o)
    );
    println!(
        "ubuntu arrangement: kernel:holds found {metas} from dpkg's graph; dpkg --get-selections holds all five; apt-get -s dist-upgrade installed {before:?} before and nothing of ABI 50 after"
    );
}

/// needrestart's own decision for each service, by its own code path: its configuration file
/// evaluated by Perl (the main file loads conf.d), then the loop of /usr/sbin/needrestart (keys
/// sorted, first matching regex). Prints `SERVICE=VALUE` (`default` when none matches).
const NEEDRESTART_DECIDES: &str = r#"
our %nrconf = (override_rc => {});
do "/etc/needrestart/needrestart.conf";
die "needrestart.conf: $@" if $@;
for my $rc (@ARGV) {
    my $v = "default";
    foreach my $re (sort keys %{$nrconf{override_rc}}) {
        next unless ($rc =~ /$re/);
        $v = $nrconf{override_rc}->{$re};
        last;
    }
    print "$rc=$v\n";
}
"#;

#[test]
fn needrestart_never_restarts_the_policys_services_as_needrestart_itself_decides() {
    let dir = unpack(&rootfs_tar("ubuntu"));
    let r = dir.path().to_path_buf();
    write_os_release(&r, OS_RELEASE);
    std::fs::write(r.join("root/decides.pl"), NEEDRESTART_DECIDES).unwrap();
    std::fs::write(
        r.join("root/nr.toml"),
        "[needrestart]\nnever_restart = [\"containerd.service\", \"kubelet.service\"]\n",
    )
    .unwrap();
    let c = Container::boot_isolated(dir);
    let decides = || {
        let o = c.exec(&[
            "perl",
            "/root/decides.pl",
            "containerd.service",
            "kubelet.service",
            "cron.service",
        ]);
        assert!(o.status.success(), "perl: {}", stderr(&o));
        stdout(&o)
    };
    let verify = || json(&c.exec(&["guestprep", "verify", "--json", "--policy", "/root/nr.toml"]));
    // Before: needrestart would restart them (no entry), and guestprep says so.
    assert!(
        decides().contains("containerd.service=default"),
        "{}",
        decides()
    );
    assert_eq!(
        item(&verify(), "needrestart:containerd.service")["status"],
        "drift"
    );

    let o = c.exec(&["guestprep", "apply", "--policy", "/root/nr.toml"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let d = decides();
    assert!(
        d.contains("containerd.service=0") && d.contains("kubelet.service=0"),
        "{d}"
    );
    assert!(
        d.contains("cron.service=default"),
        "only the named services: {d}"
    );
    let rep = verify();
    for s in ["containerd.service", "kubelet.service"] {
        assert_eq!(
            item(&rep, &format!("needrestart:{s}"))["status"],
            "compliant",
            "{rep:#}"
        );
    }
    // needrestart itself runs with the file (a Perl error would stop it: "Error parsing").
    let o = c.exec(&["needrestart", "-b", "-r", "l"]);
    assert!(
        o.status.success(),
        "needrestart -b: {}{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(stdout(&o).contains("NEEDRESTART-VER:"), "{}", stdout(&o));

    // A site file whose regex sorts first takes the decision back: needrestart and guestprep
    // agree it is drift again, and guestprep names the file.
    std::fs::write(
        c.root().join("etc/needrestart/conf.d/10-site.conf"),
        "$nrconf{override_rc}{qr(^container)} = 1;\n",
    )
    .unwrap();
    assert!(decides().contains("containerd.service=1"), "{}", decides());
    let it = item(&verify(), "needrestart:containerd.service").clone();
    assert_eq!(it["status"], "drift", "{it:#}");
    assert!(
        it["message"]
            .as_str()
            .unwrap()
            .contains("/etc/needrestart/conf.d/10-site.conf:1"),
        "{it:#}"
    );
    println!(
        "needrestart: containerd and kubelet get override_rc 0 as needrestart's own loop decides it; a site regex sorting first is drift for both"
    );
}
