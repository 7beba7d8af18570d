//! An initramfs image as the kernel unpacks it: uncompressed cpio archives first (early
//! microcode), then one compressed segment (zstd, xz or gzip: what initramfs-tools and dracut
//! write) holding the main archive. Streamed: only the files asked for are kept in memory.

use std::io::{BufRead, BufReader, Read};

use anyhow::{Context, Result, bail};

use super::cpio::Sink;

/// What was found in an initramfs.
#[derive(Debug, Default)]
pub struct Contents {
    /// Every path (without a leading `/`).
    pub paths: Vec<String>,
    /// The wanted regular files' contents, by path.
    pub files: std::collections::BTreeMap<String, Vec<u8>>,
    /// How the main archive was stored: "zstd", "xz", "gzip" or "none".
    pub compression: &'static str,
}

/// The compression a segment starts with, by its magic number.
fn magic(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some("zstd")
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some("xz")
    } else if head.starts_with(&[0x1f, 0x8b]) {
        Some("gzip")
    } else {
        None
    }
}

fn other_magic(head: &[u8]) -> &'static str {
    if head.starts_with(&[0x02, 0x21, 0x4c, 0x18]) || head.starts_with(&[0x04, 0x22, 0x4d, 0x18]) {
        "lz4"
    } else if head.starts_with(b"BZh") {
        "bzip2"
    } else if head.starts_with(&[0x89, b'L', b'Z', b'O']) {
        "lzo"
    } else if head.starts_with(&[0x5d, 0, 0]) {
        "lzma"
    } else {
        "an unknown format"
    }
}

/// Reads an initramfs from `r`, keeping the regular files for which `want(path)` is true.
pub fn read(r: impl Read, want: &dyn Fn(&str) -> bool) -> Result<Contents> {
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let mut sink = Sink::new(want);
    // The uncompressed archives, up to the first byte that is not one.
    loop {
        let chunk = r.fill_buf().context("reading the initramfs")?;
        if chunk.is_empty() {
            if !sink.at_boundary() {
                bail!("the initramfs ends inside a cpio entry");
            }
            return Ok(done(sink, "none"));
        }
        let len = chunk.len();
        let n = sink.feed(chunk)?;
        r.consume(n);
        if n < len {
            break;
        }
    }
    let head = r.fill_buf().context("reading the initramfs")?.to_vec();
    let Some(kind) = magic(&head) else {
        bail!(
            "the initramfs's main archive is compressed with {}, which guestprep does not read (zstd, xz and gzip it does)",
            other_magic(&head)
        );
    };
    sink.restart();
    let res = match kind {
        "zstd" => {
            let mut d = ruzstd::decoding::StreamingDecoder::new(&mut r)
                .map_err(|e| anyhow::anyhow!("zstd: {e}"))?;
            std::io::copy(&mut d, &mut sink).map(|_| ())
        }
        "xz" => lzma_rs::xz_decompress(&mut r, &mut sink).map_err(|e| match e {
            lzma_rs::error::Error::IoError(e) => e,
            e => std::io::Error::new(std::io::ErrorKind::InvalidData, format!("xz: {e}")),
        }),
        _ => std::io::copy(&mut flate2::read::MultiGzDecoder::new(&mut r), &mut sink).map(|_| ()),
    };
    res.with_context(|| format!("decompressing the initramfs's {kind} segment"))?;
    if !sink.at_boundary() {
        bail!("the initramfs's {kind} segment ends inside a cpio entry");
    }
    Ok(done(sink, kind))
}

fn done(sink: Sink, compression: &'static str) -> Contents {
    Contents {
        paths: sink.paths,
        files: sink.files,
        compression,
    }
}

#[cfg(test)]
mod tests {
    use super::super::cpio::build;
    use super::*;

    fn early_then(main: Vec<u8>) -> Vec<u8> {
        let mut img = build(&[("kernel/x86/microcode/GenuineIntel.bin", b"mc")]);
        img.extend_from_slice(&main);
        img
    }

    #[test]
    fn reads_early_cpio_then_each_compression() {
        let main = build(&[
            ("usr/lib/modules/6.12/kernel/drivers/x.ko", b"\x7fELF"),
            ("etc/modprobe.d/guestprep.conf", b"options i915 max_vfs=7\n"),
        ]);
        let gz = {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&main).unwrap();
            e.finish().unwrap()
        };
        let xz = {
            let mut out = Vec::new();
            lzma_rs::xz_compress(&mut &main[..], &mut out).unwrap();
            out
        };
        let zst = ruzstd::encoding::compress_to_vec(
            &main[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let want = |p: &str| p.starts_with("etc/modprobe.d/");
        for (kind, seg) in [
            ("gzip", gz),
            ("xz", xz),
            ("zstd", zst),
            ("none", main.clone()),
        ] {
            let c = read(&early_then(seg)[..], &want).unwrap();
            assert_eq!(c.compression, kind);
            assert_eq!(c.paths.len(), 3, "{kind}: {:?}", c.paths);
            assert_eq!(
                c.files["etc/modprobe.d/guestprep.conf"],
                b"options i915 max_vfs=7\n"
            );
        }
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let none = |_: &str| false;
        let e = read(&early_then(b"BZh91AY&SY".to_vec())[..], &none).unwrap_err();
        assert!(format!("{e:#}").contains("bzip2"), "{e:#}");
        let mut cut = build(&[("a", b"0123456789")]);
        cut.truncate(115);
        assert!(read(&cut[..], &none).is_err());
        let e = read(
            &early_then(vec![0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0])[..],
            &none,
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("zstd"), "{e:#}");
    }
}
