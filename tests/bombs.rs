//! Hostile initramfs images (`guestprep::boot::samples::hostile`: an entry claiming 4 GiB in a
//! 300 KB file, a million long names in zstd, gzip and xz bombs expanding to 1 GiB, windows of
//! gigabytes, a truncated stream, garbage) placed as `/boot/initrd.img-KVER` of the example root
//! and run through the real binary's `verify`: each is an `error` item naming the image and the
//! limit it hit, the process exits normally, and its peak memory (getrusage of the children)
//! stays within the documented budget.

mod common;
use common::*;

use std::time::Instant;

use guestprep::boot::samples;

const KVER: &str = "6.12.57+deb13-amd64";

/// The largest peak RSS of any child waited for so far, in bytes.
fn children_peak() -> u64 {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).unwrap();
    u.max_rss() as u64 * 1024
}

fn verify_with_image(img: &[u8]) -> (serde_json::Value, std::process::Output) {
    let root = example_root();
    std::fs::write(root.path().join(format!("boot/initrd.img-{KVER}")), img).unwrap();
    let o = on_root("verify", root.path(), &["--only", "initramfs", "--json"]);
    (json(&o), o)
}

#[test]
fn hostile_images_are_error_items_within_bounded_memory() {
    // A real image first: the baseline peak of a verify that reads one.
    let real = samples::real("zstd", &[("etc/modprobe.d/other.conf", b"options x y=1\n")]);
    let (rep, o) = verify_with_image(&real);
    let it = item(&rep, &format!("initramfs:{KVER}"));
    assert_ne!(it["status"], "error", "{it}\n{}", stderr(&o));
    let baseline = children_peak();
    for (name, img, needle) in samples::hostile() {
        let t = Instant::now();
        let (rep, o) = verify_with_image(&img);
        let it = item(&rep, &format!("initramfs:{KVER}"));
        let msg = it["message"].as_str().unwrap();
        eprintln!(
            "{name} ({} bytes): {:?}, peak RSS of the children so far {} MiB: {msg}",
            img.len(),
            t.elapsed(),
            children_peak() >> 20
        );
        assert!(o.status.code().is_some(), "{name}: killed by a signal");
        assert_eq!(it["status"], "error", "{name}: {it}");
        assert!(
            msg.contains(&format!("/boot/initrd.img-{KVER}")) && msg.contains(needle),
            "{name}: {msg}"
        );
        assert!(
            children_peak() < baseline + (64 << 20),
            "{name}: the peak RSS grew from {} to {} MiB",
            baseline >> 20,
            children_peak() >> 20
        );
    }
}
