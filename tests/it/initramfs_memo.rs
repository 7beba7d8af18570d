//! The persistent initramfs memo (`/run/guestprep/initramfs.json`) with the real binary on a
//! live root: `/` of a private mount namespace in which `/boot` and `/run` are fresh tmpfs and
//! `/usr/lib` an overlay (so `/usr/lib/modules/KVER/updates/dkms` can hold a DKMS build), nothing
//! of the host changed. The binary's debug trace (`GUESTPREP_LOG`) says where each answer came
//! from: that it used the memo on the second run, read again what changed (a touched image, a
//! replaced module), ignored a corrupt or foreign-owned memo or one behind a symlinked
//! `/run/guestprep`; an offline root never gets one.

use crate::common;
use common::*;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use guestprep::boot::{kmod::tiny_module, samples};

const KVER: &str = "6.12.57+deb13-amd64";
const KO: &str = "usr/lib/modules/6.12.57+deb13-amd64/updates/dkms/gpfoo.ko";

/// A live root in a mount namespace, kept by a sleeping process until dropped.
struct Live {
    holder: Child,
}

impl Live {
    fn new() -> Live {
        let script = format!(
            "set -e
mount -t tmpfs none /boot
mount -t tmpfs none /run
mkdir /run/ovl && mount -t tmpfs none /run/ovl && mkdir /run/ovl/u /run/ovl/w
mount -t overlay overlay -o lowerdir=/usr/lib,upperdir=/run/ovl/u,workdir=/run/ovl/w /usr/lib
mkdir -p /usr/lib/modules/{KVER}/updates/dkms
echo ready
exec sleep 600"
        );
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare (util-linux)");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "setting up the mount namespace failed"
        );
        Live { holder }
    }

    /// `abs` as this process sees it (through the holder's root).
    fn path(&self, abs: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{abs}", self.holder.id()))
    }

    /// `guestprep verify --only initramfs` on the live root: the item and the debug trace.
    fn verify(&self, policy: &Path) -> (serde_json::Value, String) {
        let o = Command::new("nsenter")
            .args(["-t", &self.holder.id().to_string(), "-m", BIN, "verify"])
            .arg("--policy")
            .arg(policy)
            .args(["--only", "initramfs", "--json"])
            .env("GUESTPREP_LOG", "guestprep=debug")
            .env("NO_COLOR", "1")
            .env_remove("GUESTPREP_ROOT")
            .output()
            .unwrap();
        let rep = json(&o);
        (item(&rep, &format!("initramfs:{KVER}")).clone(), stderr(&o))
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

fn policy() -> tempfile::TempDir {
    let p = tempfile::tempdir().unwrap();
    std::fs::write(
        p.path().join("50-dkms.toml"),
        format!(
            "[packages]\n\n[[packages.deb]]\nname = \"gpfoo-dkms\"\nversion = \"1.0\"\nurl = \"https://example.invalid/gpfoo-dkms_1.0_amd64.deb\"\nsha256 = \"{}\"\ndkms = {{ module = \"gpfoo\", version = \"1.0\" }}\n",
            "ab".repeat(32)
        ),
    )
    .unwrap();
    p
}

fn image(module: &[u8]) -> Vec<u8> {
    samples::real(
        "zstd",
        &[("etc/modprobe.d/other.conf", b"x\n"), (KO, module)],
    )
}

#[test]
fn the_memo_is_used_and_invalidated_by_what_changes() {
    let live = Live::new();
    let pol = policy();
    let (m1, m2) = (
        tiny_module("srcversion=AAA\0"),
        tiny_module("srcversion=BBB\0"),
    );
    let img = live.path(&format!("/boot/initrd.img-{KVER}"));
    let memo = live.path("/run/guestprep/initramfs.json");
    std::fs::write(live.path(&format!("/{KO}")), &m1).unwrap();
    std::fs::write(&img, image(&m1)).unwrap();

    let (first, log) = live.verify(pol.path());
    assert_eq!(first["status"], "compliant", "{first}\n{log}");
    assert!(
        log.contains("not in the memo") && log.contains("initramfs memo: written"),
        "{log}"
    );
    let m = std::fs::metadata(&memo).expect("the memo is written");
    assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o600));

    let (second, log) = live.verify(pol.path());
    assert_eq!(second, first);
    assert!(log.contains("read from the memo"), "{log}");
    assert!(
        !log.contains("reading the module") && !log.contains("written"),
        "{log}"
    );

    // A touched image (mtime and ctime change) is read again.
    let f = std::fs::File::options().write(true).open(&img).unwrap();
    f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(60))
        .unwrap();
    let (third, log) = live.verify(pol.path());
    assert_eq!(third, first);
    assert!(log.contains("it changed, or other questions"), "{log}");

    // A replaced DKMS build is identified again and judged against the remembered image.
    std::fs::write(live.path(&format!("/{KO}")), &m2).unwrap();
    let (fourth, log) = live.verify(pol.path());
    assert!(
        log.contains("reading the module") && log.contains("read from the memo"),
        "{log}"
    );
    assert_eq!(fourth["status"], "drift", "{fourth}");
    let msg = fourth["message"].as_str().unwrap();
    assert!(
        msg.contains("srcversion AAA") && msg.contains("srcversion BBB"),
        "{msg}"
    );

    // A corrupt memo is ignored, then replaced.
    std::fs::write(&memo, b"{\"version\": 1, \"images\": [").unwrap();
    let (fifth, log) = live.verify(pol.path());
    assert_eq!(fifth, fourth);
    assert!(
        log.contains("ignored") && log.contains("is corrupt"),
        "{log}"
    );
    let again: serde_json::Value = serde_json::from_slice(&std::fs::read(&memo).unwrap()).unwrap();
    assert_eq!(again["version"], 1);

    // One another user owns (or could have written) is not trusted, and is replaced by root's.
    std::os::unix::fs::chown(&memo, Some(65534), Some(65534)).unwrap();
    let (sixth, log) = live.verify(pol.path());
    assert_eq!(sixth, fourth);
    assert!(log.contains("owned by uid 65534"), "{log}");
    assert!(!log.contains("read from the memo"), "{log}");
    assert_eq!(std::fs::metadata(&memo).unwrap().uid(), 0);

    // Through a symlinked /run/guestprep it is neither read nor written.
    let run = live.path("/run/guestprep");
    std::fs::rename(&run, live.path("/run/elsewhere")).unwrap();
    std::os::unix::fs::symlink("elsewhere", &run).unwrap();
    let before = std::fs::read(live.path("/run/elsewhere/initramfs.json")).unwrap();
    std::fs::write(live.path(&format!("/{KO}")), &m1).unwrap();
    let (seventh, log) = live.verify(pol.path());
    assert_eq!(seventh["status"], "compliant", "{seventh}");
    assert!(log.contains("/run/guestprep is a symlink"), "{log}");
    assert!(!log.contains("read from the memo"), "{log}");
    assert_eq!(
        std::fs::read(live.path("/run/elsewhere/initramfs.json")).unwrap(),
        before
    );
}

#[test]
fn an_offline_root_never_gets_a_memo() {
    let root = example_root();
    std::fs::write(
        root.path().join(format!("boot/initrd.img-{KVER}")),
        image(&tiny_module("srcversion=AAA\0")),
    )
    .unwrap();
    for _ in 0..2 {
        let o = Command::new(BIN)
            .args(["verify", "--root"])
            .arg(root.path())
            .arg("--policy")
            .arg(policy().path())
            .args(["--only", "initramfs", "--json"])
            .env("GUESTPREP_LOG", "guestprep=debug")
            .env_remove("GUESTPREP_ROOT")
            .output()
            .unwrap();
        let log = stderr(&o);
        assert!(
            log.contains("initramfs memo: off (an offline root)"),
            "{log}"
        );
        assert!(!log.contains("read from the memo"), "{log}");
        assert_ne!(
            item(&json(&o), &format!("initramfs:{KVER}"))["status"],
            "error"
        );
    }
    assert!(!root.path().join("run/guestprep/initramfs.json").exists());
}
