//! Hostile initramfs images (`guestprep::boot::samples::hostile`: an entry claiming 4 GiB in a
//! 300 KB file, a million long names in zstd, gzip and xz bombs expanding to 1 GiB, windows of
//! gigabytes, a truncated stream, garbage) placed as `/boot/initrd.img-KVER` of the example root
//! and run through the real binary's `verify`: each is an `error` item naming the image and the
//! limit it hit, the process exits normally, and its own peak memory (GNU time, `common::peak`)
//! stays within the documented budget.

use crate::common;
use common::*;

use std::time::Instant;

use guestprep::boot::samples;

const KVER: &str = "6.12.57+deb13-amd64";

/// `verify --only initramfs` with `img` as the example root's initramfs: the report, the output
/// and the run's own peak RSS in bytes.
fn verify_with_image(img: &[u8]) -> (serde_json::Value, std::process::Output, u64) {
    let root = example_root();
    std::fs::write(root.path().join(format!("boot/initrd.img-{KVER}")), img).unwrap();
    let mut c = std::process::Command::new(BIN);
    c.args(["verify", "--root"])
        .arg(root.path())
        .arg("--policy")
        .arg(policies())
        .args(["--only", "initramfs", "--json"])
        .env("NO_COLOR", "1")
        .env_remove("GUESTPREP_ROOT");
    let peak = tempfile::NamedTempFile::new().unwrap();
    let o = common::peak::measured(&c, peak.path()).output().unwrap();
    (json(&o), o, common::peak::peak_kib(peak.path()) * 1024)
}

#[test]
fn hostile_images_are_error_items_within_bounded_memory() {
    // A real image first: the baseline peak of a verify that reads one.
    let real = samples::real("zstd", &[("etc/modprobe.d/other.conf", b"options x y=1\n")]);
    let (rep, o, baseline) = verify_with_image(&real);
    let it = item(&rep, &format!("initramfs:{KVER}"));
    assert_ne!(it["status"], "error", "{it}\n{}", stderr(&o));
    for (name, img, needle) in samples::hostile() {
        let t = Instant::now();
        let (rep, o, peak) = verify_with_image(&img);
        let it = item(&rep, &format!("initramfs:{KVER}"));
        let msg = it["message"].as_str().unwrap();
        eprintln!(
            "{name} ({} bytes): {:?}, peak RSS {} MiB (a real image's: {} MiB): {msg}",
            img.len(),
            t.elapsed(),
            peak >> 20,
            baseline >> 20
        );
        assert!(o.status.code().is_some(), "{name}: killed by a signal");
        assert_eq!(it["status"], "error", "{name}: {it}");
        assert!(
            msg.contains(&format!("/boot/initrd.img-{KVER}")) && msg.contains(needle),
            "{name}: {msg}"
        );
        assert!(
            peak < baseline + (64 << 20),
            "{name}: the peak RSS grew from {} to {} MiB",
            baseline >> 20,
            peak >> 20
        );
    }
}
