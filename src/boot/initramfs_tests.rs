//! Tests of [`super::read`]: each compression, the early stop, and hostile images (the samples
//! of `boot::samples`), each a typed or clear error, never a panic.

use super::super::kmod::tiny_module;
use super::super::limits::Exceeded;
use super::super::samples;
use super::*;

const CONF: &str = "etc/modprobe.d/guestprep.conf";
const KO: &str = "usr/lib/modules/6.12/updates/dkms/x.ko";

fn want(p: &str) -> Option<Want> {
    match p {
        CONF => Some(Want::File),
        KO => Some(Want::Module),
        _ => None,
    }
}

fn all(c: &Contents) -> bool {
    c.files.contains_key(CONF) && !c.modules.is_empty()
}

fn read_all(img: &[u8], limits: &Limits) -> Result<Contents> {
    read(
        img,
        &Query {
            want: &want,
            enough: &|_| false,
        },
        limits,
    )
}

fn exceeded(e: &anyhow::Error) -> Option<&Exceeded> {
    e.chain().find_map(|c| c.downcast_ref::<Exceeded>())
}

#[test]
fn reads_early_cpio_then_each_compression() {
    let ko = tiny_module("srcversion=ABC\0");
    let files: &[(&str, &[u8])] = &[
        ("usr/lib/modules/6.12/kernel/drivers/y.ko", b"\x7fELF"),
        (KO, &samples::xz(&ko)),
        (CONF, b"options i915 max_vfs=7\n"),
    ];
    let conf_sum = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        b"options i915 max_vfs=7\n",
    ));
    for kind in ["gzip", "xz", "zstd", "none"] {
        let c = read_all(&samples::real(kind, files), &Limits::DEFAULT).unwrap();
        assert_eq!(c.compression, kind);
        assert!(c.complete && c.modprobe_dir, "{kind}: {c:?}");
        assert_eq!(c.files[CONF], conf_sum);
        assert_eq!(c.modules.len(), 1);
        assert_eq!(c.modules[0].path, KO);
        assert!(c.modules[0].shown.starts_with("srcversion ABC, sha256 "));
    }
}

#[test]
fn stops_once_it_has_what_was_asked() {
    let ko = tiny_module("srcversion=ABC\0");
    let img = samples::real(
        "zstd",
        &[(CONF, b"x"), (KO, &ko), ("usr/lib/later", b"never read")],
    );
    let q = Query {
        want: &want,
        enough: &all,
    };
    let early = read(&img[..], &q, &Limits::DEFAULT).unwrap();
    let full = read_all(&img, &Limits::DEFAULT).unwrap();
    assert!(!early.complete && full.complete);
    assert_eq!((early.modules, early.files), (full.modules, full.files));
    // Stopping early means not reading on: a corrupt tail goes unnoticed, a missing file does not.
    let noise: Vec<u8> = (0..400_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut cut = samples::real("zstd", &[(CONF, b"x"), (KO, &ko), ("z", &noise)]);
    cut.truncate(cut.len() - 1000);
    assert!(read(&cut[..], &q, &Limits::DEFAULT).is_ok());
    assert!(read_all(&cut, &Limits::DEFAULT).is_err());
}

#[test]
fn refuses_what_it_cannot_read() {
    let e = read_all(&samples::image(b"BZh91AY&SY"), &Limits::DEFAULT).unwrap_err();
    assert!(format!("{e:#}").contains("bzip2"), "{e:#}");
    let mut cut = cpio::build(&[("a", b"0123456789")]);
    cut.truncate(115);
    assert!(read_all(&cut, &Limits::DEFAULT).is_err());
    let e = read_all(
        &samples::image(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0]),
        &Limits::DEFAULT,
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("zstd"), "{e:#}");
}

#[test]
fn hostile_images_are_clear_errors() {
    for (name, img, needle) in samples::hostile() {
        let t = std::time::Instant::now();
        let e = read_all(&img, &Limits::DEFAULT).expect_err(name);
        let msg = format!("{e:#}");
        assert!(msg.contains(needle), "{name}: {msg}");
        eprintln!("{name}: {} bytes, {:?}: {msg}", img.len(), t.elapsed());
    }
}

#[test]
fn the_limits_are_typed() {
    let l = &Limits::DEFAULT;
    let e = read_all(&samples::gzip_bomb(CONF, 64), l).unwrap_err();
    assert!(
        matches!(exceeded(&e), Some(Exceeded::Ratio { .. })),
        "{e:#}"
    );
    let e = read_all(&samples::xz_bomb(64), l).unwrap_err();
    assert!(
        matches!(exceeded(&e), Some(Exceeded::Ratio { .. })),
        "{e:#}"
    );
    // The cap on decompressed bytes holds when the ratio does not stop it first.
    let capped = Limits {
        max_output: 4 << 20,
        max_ratio: u64::MAX,
        ..Limits::DEFAULT
    };
    let e = read_all(&samples::gzip_bomb(CONF, 64), &capped).unwrap_err();
    assert_eq!(exceeded(&e), Some(&Exceeded::Output { limit: 4 << 20 }));
    let e = read_all(
        &samples::many_entries_zstd(3, 1000, 100),
        &Limits {
            max_entries: 2500,
            ..Limits::DEFAULT
        },
    )
    .unwrap_err();
    assert_eq!(exceeded(&e), Some(&Exceeded::Entries { limit: 2500 }));
    let e = read_all(&samples::xz_huge_dict(), l).unwrap_err();
    assert!(
        matches!(exceeded(&e), Some(Exceeded::Window { format: "xz", .. })),
        "{e:#}"
    );
    let e = read_all(&samples::zstd_huge_window(), l).unwrap_err();
    assert!(
        matches!(exceeded(&e), Some(Exceeded::Window { format: "zstd", .. })),
        "{e:#}"
    );
}

#[test]
fn a_module_bomb_inside_the_image_spends_the_same_budget() {
    let bomb = {
        let b = samples::xz_bomb(64);
        // The xz stream alone (after the early archive the sample puts first).
        let early = cpio::build(&[("kernel/x86/microcode/GenuineIntel.bin", b"mc")]);
        b[early.len()..].to_vec()
    };
    let img = samples::real("gzip", &[(KO, &bomb)]);
    let e = read_all(&img, &Limits::DEFAULT).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("a module expands more than 200:1"), "{msg}");
    assert!(msg.contains(&format!("/{KO}")), "{msg}");
}

#[test]
fn truncated_and_mutated_images_never_panic() {
    let ko = tiny_module("srcversion=ABC\0");
    let files: &[(&str, &[u8])] = &[(CONF, b"blacklist xe\n"), (KO, &samples::gzip(&ko))];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for kind in ["zstd", "xz", "gzip", "none"] {
        let img = samples::real(kind, files);
        for cut in (0..img.len()).step_by(7) {
            let _ = read_all(&img[..cut], &Limits::DEFAULT);
        }
        assert!(
            read_all(&img[..img.len() - 3], &Limits::DEFAULT).is_err(),
            "{kind}"
        );
        for _ in 0..300 {
            let mut m = img.clone();
            for _ in 0..3 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = (seed % m.len() as u64) as usize;
                m[at] = (seed >> 32) as u8;
            }
            let _ = read_all(&m, &Limits::DEFAULT);
        }
    }
}

/// The fuzz target's seeds (`fuzz/seeds-initramfs`): real-format images of each compression
/// with a module and a modprobe.d file, and small hostile ones.
fn fuzz_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let ko = tiny_module("srcversion=ABC\0vermagic=6.12 SMP\0");
    let files: &[(&str, &[u8])] = &[
        (CONF, b"blacklist xe\n"),
        (KO, &ko),
        (
            "usr/lib/modules/6.12/updates/dkms/y.ko.zst",
            &samples::zstd(&ko),
        ),
        (
            "usr/lib/modules/6.12/updates/dkms/z.ko.gz",
            &samples::gzip(&ko),
        ),
    ];
    let mut seeds = vec![
        ("xz-lzma-zeros", samples::xz_bomb(1)),
        ("xz-huge-dict", samples::xz_huge_dict()),
        ("zstd-huge-window", samples::zstd_huge_window()),
    ];
    for kind in ["zstd", "xz", "gzip", "none"] {
        seeds.push((kind, samples::real(kind, files)));
    }
    let mut claims = samples::claims_4gib(CONF);
    claims.truncate(1000);
    seeds.push(("claims-4gib", claims));
    seeds
}

/// The committed seeds are the ones the samples make, each small and read without a panic.
/// `GUESTPREP_WRITE_FUZZ_SEEDS=1 cargo test --lib fuzz_seeds` writes them after a change to the
/// samples.
#[test]
fn the_committed_fuzz_seeds_are_what_the_samples_make() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds-initramfs");
    let write = std::env::var_os("GUESTPREP_WRITE_FUZZ_SEEDS").is_some();
    for (name, bytes) in fuzz_seeds() {
        assert!(bytes.len() < 8 << 10, "{name} is {} bytes", bytes.len());
        let _ = read_all(&bytes, &Limits::DEFAULT);
        let path = dir.join(format!("{name}.img"));
        if write {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        } else {
            assert_eq!(
                std::fs::read(&path).ok().as_deref(),
                Some(&bytes[..]),
                "{} is not what the samples make (GUESTPREP_WRITE_FUZZ_SEEDS=1 rewrites it)",
                path.display()
            );
        }
    }
}

/// Hands out at most 3 bytes per read, as a pipe or a buffer's end may.
struct Trickle<'a>(&'a [u8]);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(3).min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

#[test]
fn short_reads_give_the_same_reading() {
    let ko = tiny_module("srcversion=ABC\0");
    let files: &[(&str, &[u8])] = &[(CONF, b"blacklist xe\n"), (KO, &samples::zstd(&ko))];
    let q = Query {
        want: &want,
        enough: &|_| false,
    };
    let mut imgs: Vec<_> = ["zstd", "xz", "gzip", "none"]
        .iter()
        .map(|k| samples::real(k, files))
        .collect();
    imgs.push(samples::xz_bomb(1));
    for img in imgs {
        let whole = read(&img[..], &q, &Limits::DEFAULT).unwrap();
        let trickled = read(Trickle(&img), &q, &Limits::DEFAULT).unwrap();
        assert_eq!(whole, trickled);
    }
}
