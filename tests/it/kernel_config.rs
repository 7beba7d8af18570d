//! `kernel:config:KVER`, the DKMS preflight and `dkms try` against Debian's real kernels: the
//! cloud flavour as `debian-13-genericcloud-amd64.qcow2` has it (`linux-image-cloud-amd64` and its
//! headers installed by apt from the mirror: tests/testbed/rootfs.sh cloudkernel) and the generic
//! flavour of the DKMS test root (`linux-image-amd64`). What the driver needs is the shipped
//! i915 policy's `require_config`. Each verdict is checked against an independent reading of the
//! same `/boot/config-KVER` (`grep`), and the test prints which way it went: the mirror moves, so
//! it asserts agreement with the file, and only that the cloud kernel lacks `CONFIG_DRM` (what the
//! issue measured; if Debian ever builds it with DRM, this test says so).

use std::path::Path;
use std::process::Command;

use crate::common;
use common::container::{Container, rootfs_tar, unpack};
use common::debs::hello_deb;
use common::http::Server;
use common::*;

use sha2::{Digest, Sha256};

/// The `require_config` of the shipped i915 policy's (commented) DKMS entry.
fn shipped_needs() -> Vec<String> {
    let text = std::fs::read_to_string(policies().join("06-i915-sriov.toml")).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("# require_config = "))
        .expect("06-i915-sriov.toml declares require_config");
    let v: Vec<String> = serde_json::from_str(line).unwrap();
    assert!(v.iter().any(|o| o == "CONFIG_DRM"), "{v:?}");
    v
}

/// The independent check: the options `grep` does not find as `=y` or `=m` in the file.
fn grep_missing(config: &Path, needs: &[String]) -> Vec<String> {
    needs
        .iter()
        .filter(|o| {
            !Command::new("grep")
                .args(["-qxE", &format!("{o}=(y|m)")])
                .arg(config)
                .status()
                .unwrap()
                .success()
        })
        .cloned()
        .collect()
}

/// The one kernel whose /boot/config-* the root has.
fn kernel_of(root: &Path) -> String {
    let mut k: Vec<String> = std::fs::read_dir(root.join("boot"))
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.strip_prefix("config-").map(str::to_string)
        })
        .collect();
    assert_eq!(k.len(), 1, "{k:?}");
    k.pop().unwrap()
}

fn policy(url: &str, sha: &str, needs: &[String], kernel: Option<&str>) -> String {
    let mut p = String::new();
    if let Some(k) = kernel {
        p.push_str(&format!(
            "[kernel]\nversion = \"{k}\"\nremove_others = true\n\n"
        ));
    }
    p.push_str(&format!(
        "[packages]\n\n[[packages.deb]]\nname = \"guestprep-hello-dkms\"\nversion = \"1.0\"\nurl = \"{url}\"\nsha256 = \"{sha}\"\n\n[packages.deb.dkms]\nmodule = \"guestprep-hello\"\nversion = \"1.0\"\nrequire_config = {}\n",
        serde_json::to_string(needs).unwrap()
    ));
    p
}

fn missing_of(it: &serde_json::Value) -> Vec<String> {
    serde_json::from_value(it["actual"]["missing"].clone()).unwrap()
}

#[test]
fn the_cloud_kernel_cannot_carry_i915_and_nothing_is_built_for_it() {
    let needs = shipped_needs();
    let dir = unpack(&rootfs_tar("cloudkernel"));
    let root = dir.path();
    let kver = kernel_of(root);
    assert!(kver.ends_with("-cloud-amd64"), "{kver}");
    let truth = grep_missing(&root.join(format!("boot/config-{kver}")), &needs);
    eprintln!("grep of /boot/config-{kver}: lacks {truth:?} of {needs:?}");
    assert!(
        truth.iter().any(|o| o == "CONFIG_DRM"),
        "Debian's cloud kernel {kver} now has CONFIG_DRM: docs/integrations.md and \
         policies/06-i915-sriov.toml say it cannot carry i915"
    );

    let debs = tempfile::tempdir().unwrap();
    let deb = hello_deb(
        debs.path(),
        "guestprep-hello-dkms",
        "guestprep-hello",
        "1.0",
        None,
    );
    let srv = Server::start();
    srv.add("hello.deb", deb.clone());
    let sha = hex::encode(Sha256::digest(&deb));
    let p = root.join("root/p.toml");
    std::fs::write(&p, policy(&srv.url("/ok/hello.deb"), &sha, &needs, None)).unwrap();
    std::fs::write(root.join("root/hello.deb"), &deb).unwrap();
    let (r, ps) = (root.to_str().unwrap(), p.to_str().unwrap());

    // Offline, as an image is checked before it boots.
    let o = guestprep(&["verify", "--root", r, "--policy", ps, "--json"]);
    let rep = json(&o);
    let it = item(&rep, &format!("kernel:config:{kver}"));
    let msg = it["message"].as_str().unwrap();
    eprintln!("guestprep: kernel:config:{kver} is {}: {msg}", it["status"]);
    assert_eq!(it["status"], "drift", "{it}");
    assert_eq!(missing_of(it), truth, "guestprep and grep disagree");
    assert!(msg.contains("CONFIG_DRM ("), "{msg}");
    let generic = kver.replace("-cloud-amd64", "-amd64");
    assert!(
        msg.contains(&format!("[kernel] version = \"{generic}\"")) && msg.contains("remove_others"),
        "{msg}"
    );
    eprintln!("agree: the cloud kernel lacks {truth:?}");

    // The preflight refuses the .deb before apt sees it (downloaded, verified, not installed).
    let t = std::time::Instant::now();
    let o = guestprep(&[
        "apply", "--root", r, "--chroot", "--policy", ps, "--json", "--only", "deb:*",
    ]);
    eprintln!("apply --chroot (preflight) took {:?}", t.elapsed());
    let rep = json(&o);
    let it = item(&rep, "deb:guestprep-hello-dkms");
    let msg = it["message"].as_str().unwrap();
    eprintln!(
        "guestprep apply: deb:guestprep-hello-dkms is {}: {msg}",
        it["status"]
    );
    assert_eq!(it["status"], "error", "{it}");
    assert!(
        msg.contains("refusing to install guestprep-hello-dkms 1.0")
            && msg.contains("CONFIG_DRM ("),
        "{msg}"
    );
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
    assert!(
        !status.contains("Package: guestprep-hello-dkms"),
        "installed anyway"
    );

    // `dkms try` (live: in a chroot of the image): refused with the options named, not built
    // (the root has no dkms at all: a build would fail, not be refused).
    assert!(!root.join("usr/sbin/dkms").exists());
    let o = Command::new("chroot")
        .args([
            r,
            "/usr/local/bin/guestprep",
            "dkms",
            "try",
            "/root/hello.deb",
        ])
        .args(["--policy", "/root/p.toml", "--json"])
        .output()
        .unwrap();
    eprintln!("dkms try: {}{}", stdout(&o), stderr(&o));
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(!stderr(&o).contains("building"), "{}", stderr(&o));
    let line: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(line["kernel"], kver.as_str());
    assert_eq!(line["outcome"], "refused");
    assert_eq!(
        serde_json::from_value::<Vec<String>>(line["missingConfig"].clone()).unwrap(),
        truth
    );

    // Pinned to the generic flavour: the cloud kernel's fix is kernel:others, the generic
    // kernel is checked once [kernel] installs it.
    std::fs::write(
        &p,
        policy(&srv.url("/ok/hello.deb"), &sha, &needs, Some(&generic)),
    )
    .unwrap();
    let rep = json(&guestprep(&[
        "verify", "--root", r, "--policy", ps, "--json",
    ]));
    let it = item(&rep, &format!("kernel:config:{kver}"));
    eprintln!(
        "pinned to {generic}: kernel:config:{kver}: {}",
        it["message"]
    );
    assert_eq!(it["status"], "drift");
    assert!(
        it["message"]
            .as_str()
            .unwrap()
            .contains("kernel:others purges this one")
    );
    let it = item(&rep, &format!("kernel:config:{generic}"));
    eprintln!(
        "pinned to {generic}: kernel:config:{generic}: {}",
        it["message"]
    );
    assert_eq!(it["status"], "drift");
    assert!(
        it["message"]
            .as_str()
            .unwrap()
            .contains(&format!("package:linux-image-{generic} installs it"))
    );
}

#[test]
fn the_generic_kernel_carries_i915_and_the_module_is_built() {
    let needs = shipped_needs();
    let dir = unpack(&rootfs_tar("dkms"));
    let kver = kernel_of(dir.path());
    let truth = grep_missing(&dir.path().join(format!("boot/config-{kver}")), &needs);
    eprintln!("grep of /boot/config-{kver}: lacks {truth:?} of {needs:?}");
    let debs = tempfile::tempdir().unwrap();
    let deb = hello_deb(
        debs.path(),
        "guestprep-hello-dkms",
        "guestprep-hello",
        "1.0",
        None,
    );
    let sha = hex::encode(Sha256::digest(&deb));
    std::fs::write(dir.path().join("root/hello.deb"), &deb).unwrap();
    std::fs::write(
        dir.path().join("root/p.toml"),
        policy("http://127.0.0.1:9/hello.deb", &sha, &needs, None),
    )
    .unwrap();
    let c = Container::boot(dir);

    // Live, inside the booted root.
    let o = c.exec(&[
        "guestprep",
        "verify",
        "--json",
        "--policy",
        "/root/p.toml",
        "--only",
        "kernel",
    ]);
    let rep = json(&o);
    let it = item(&rep, &format!("kernel:config:{kver}"));
    eprintln!(
        "guestprep: kernel:config:{kver} is {} {}",
        it["status"], it["actual"]["options"]
    );
    let want = if truth.is_empty() {
        "compliant"
    } else {
        "drift"
    };
    assert_eq!(it["status"], want, "guestprep and grep disagree: {it}");
    if !truth.is_empty() {
        assert_eq!(missing_of(it), truth);
    }
    eprintln!("agree: the generic kernel {kver} lacks {truth:?}");

    // dkms try builds it for that kernel (refused only if grep found something missing).
    let t = std::time::Instant::now();
    let o = c.exec(&[
        "guestprep",
        "dkms",
        "try",
        "/root/hello.deb",
        "--policy",
        "/root/p.toml",
        "--json",
    ]);
    eprintln!(
        "dkms try took {:?}: {}{}",
        t.elapsed(),
        stdout(&o),
        stderr(&o)
    );
    let line: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let want = if truth.is_empty() {
        "builds"
    } else {
        "refused"
    };
    assert_eq!(line["outcome"], want, "{line}");
}
