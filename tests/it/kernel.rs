//! `[kernel]` and the `initramfs:` items with real parts: a booted Debian 13 root (systemd-nspawn)
//! with real dpkg, apt, dkms and initramfs-tools. The hello DKMS module is built as `floppy.ko`,
//! so it replaces an in-tree module that the root's initramfs carries (as i915-sriov-dkms replaces
//! i915 for sites that load it early). Every verdict is checked against the tools themselves:
//! `apt-mark showhold`, `dpkg-query`, `unmkinitramfs` + `modinfo -F srcversion`, `cmp`.
//! GRUB is not installed in this root (`kernel:grub-default` is skipped); the VM test boots the
//! pinned kernel through its real GRUB.

use crate::common;
use common::container::{Container, rootfs_tar, unpack};
use common::debs::{plain_deb, shadow_deb};
use common::http::Server;
use common::*;

use sha2::{Digest, Sha256};

#[test]
fn pins_the_kernel_and_keeps_the_initramfs_current() {
    let debs = tempfile::tempdir().unwrap();
    let shadow = shadow_deb(
        debs.path(),
        "guestprep-floppy-dkms",
        "guestprep-floppy",
        "1.0",
        "floppy",
    );
    // A package named like another kernel's image: what remove_others must purge, nothing else.
    let other = plain_deb(debs.path(), "linux-image-6.1.0-99-amd64", &[], &[]);
    let srv = Server::start();
    srv.add("floppy.deb", shadow.clone());

    let dir = unpack(&rootfs_tar("dkms"));
    let kver = std::fs::read_dir(dir.path().join("usr/lib/modules"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .next()
        .unwrap();
    std::fs::write(dir.path().join("root/other.deb"), &other).unwrap();
    let c = Container::boot(dir);
    let o = c.exec(&["dpkg", "-i", "/root/other.deb"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Listed for the initramfs (as sites list i915 for early KMS): every rebuild carries the
    // floppy modprobe finds. The image's initramfs already carries the in-tree one.
    let o = c.exec(&["sh", "-c", "echo floppy >>/etc/initramfs-tools/modules"]);
    assert!(o.status.success());
    let o = c.exec(&[
        "cp",
        &format!("/boot/initrd.img-{kver}"),
        "/root/initrd.orig",
    ]);
    assert!(o.status.success());
    let (in_tree, _, _) = c.initramfs_truth(&kver, "floppy");
    assert_eq!(
        in_tree.len(),
        64,
        "the root's initramfs carries the in-tree floppy"
    );

    let policy = format!(
        "[kernel]\nversion = \"{kver}\"\nremove_others = true\n\n[packages]\n\n[[packages.deb]]\nname = \"guestprep-floppy-dkms\"\nversion = \"1.0\"\nurl = \"{}\"\nsha256 = \"{}\"\ndkms = {{ module = \"guestprep-floppy\", version = \"1.0\" }}\n\n[modules]\nblacklist = [\"pcspkr\"]\n",
        srv.url("/ok/floppy.deb"),
        hex::encode(Sha256::digest(&shadow))
    );
    std::fs::write(c.root().join("root/p.toml"), &policy).unwrap();
    let verify = || {
        let o = c.exec(&["guestprep", "verify", "--json", "--policy", "/root/p.toml"]);
        json(&o)
    };
    let before = verify();
    assert_eq!(item(&before, "kernel:others")["status"], "drift");
    assert!(
        item(&before, "kernel:others")["message"]
            .as_str()
            .unwrap()
            .contains("linux-image-6.1.0-99-amd64")
    );
    assert_eq!(
        item(&before, &format!("package-hold:linux-image-{kver}"))["status"],
        "drift"
    );
    assert_eq!(item(&before, "kernel:grub-default")["status"], "skipped");
    // The container runs the host's kernel: the pinned one runs only after a boot.
    assert_eq!(item(&before, "kernel:running")["status"], "pending-reboot");

    let t = std::time::Instant::now();
    let o = c.exec(&["guestprep", "apply", "--json", "--policy", "/root/p.toml"]);
    eprintln!("apply took {:?}", t.elapsed());
    assert_eq!(
        code(&o),
        3,
        "pending-reboot only: {}{}",
        stdout(&o),
        stderr(&o)
    );
    let rep = json(&o);

    // The tools agree: held, the other kernel purged, the DKMS build in the initramfs.
    let holds = stdout(&c.exec(&["apt-mark", "showhold"]));
    for p in [
        format!("linux-image-{kver}"),
        format!("linux-headers-{kver}"),
        "linux-image-amd64".to_string(),
        "linux-headers-amd64".to_string(),
    ] {
        assert!(holds.lines().any(|l| l == p), "{p} not held: {holds}");
        assert_eq!(
            item(&rep, &format!("package-hold:{p}"))["status"],
            "compliant"
        );
    }
    let q = c.exec(&[
        "dpkg-query",
        "-W",
        "-f=${Status}",
        "linux-image-6.1.0-99-amd64",
    ]);
    assert!(!stdout(&q).contains("ok installed"), "{}", stdout(&q));
    assert_eq!(item(&rep, "kernel:others")["status"], "compliant");
    let q = c.exec(&[
        "dpkg-query",
        "-W",
        "-f=${Status}",
        &format!("linux-image-{kver}"),
    ]);
    assert!(
        stdout(&q).ends_with("ok installed"),
        "the pinned kernel stays"
    );
    assert_eq!(
        item(&rep, &format!("dkms:guestprep-floppy/1.0/{kver}"))["status"],
        "compliant"
    );
    let (initrd, system, conf_current) = c.initramfs_truth(&kver, "floppy");
    assert_ne!(system, in_tree, "modprobe finds the DKMS floppy");
    let carries_dkms = initrd == system;
    let ird = item(&rep, &format!("initramfs:{kver}"));
    eprintln!("initramfs:{kver} after apply: {ird}");
    assert!(
        carries_dkms && conf_current,
        "apply left the initramfs stale"
    );
    assert_eq!(ird["status"], "compliant");
    assert!(
        ird["actual"]["dkmsModulesCarried"][0]["path"]
            .as_str()
            .unwrap()
            .contains("floppy.ko"),
        "{ird}"
    );

    // An initramfs from before (the in-tree floppy, no guestprep modprobe.d file): verify agrees
    // with unmkinitramfs that it is stale, and apply rebuilds it.
    let o = c.exec(&[
        "cp",
        "/root/initrd.orig",
        &format!("/boot/initrd.img-{kver}"),
    ]);
    assert!(o.status.success());
    let (initrd, system, conf_current) = c.initramfs_truth(&kver, "floppy");
    assert!(initrd == in_tree && system != in_tree && !conf_current);
    let t = std::time::Instant::now();
    let stale = verify();
    eprintln!("verify with a stale initramfs took {:?}", t.elapsed());
    let ird = item(&stale, &format!("initramfs:{kver}"));
    eprintln!("stale: {ird}");
    assert_eq!(ird["status"], "drift");
    let msg = ird["message"].as_str().unwrap();
    assert!(
        msg.contains("floppy")
            && msg.contains("not the DKMS build")
            && msg.contains("lacks /etc/modprobe.d/guestprep.conf"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("update-initramfs -u -k {kver}")),
        "{msg}"
    );
    let o = c.exec(&["guestprep", "apply", "--json", "--policy", "/root/p.toml"]);
    assert_eq!(code(&o), 3, "{}", stdout(&o));
    assert_eq!(
        item(&json(&o), &format!("initramfs:{kver}"))["status"],
        "compliant"
    );
    let (initrd, system, conf_current) = c.initramfs_truth(&kver, "floppy");
    assert!(
        initrd == system && conf_current,
        "apply did not rebuild the initramfs"
    );

    // A no-op apply changes nothing and reads the initramfs without a subprocess.
    let o = c.exec(&["guestprep", "apply", "--json", "--policy", "/root/p.toml"]);
    let rep = json(&o);
    assert_eq!(
        rep["apply"]["changes"].as_array().unwrap().len(),
        0,
        "{}",
        stdout(&o)
    );
}
