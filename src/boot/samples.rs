//! Sample initramfs images, real-format and hostile, built in memory: the unit tests, the
//! integration tests (`tests/it/bombs.rs`), the fuzz seeds and the memo's measurements use them.
//! Small to build, whatever they expand to.

use std::io::Write;

use super::cpio::{REGULAR, build, header};

/// `head -c 1M /dev/zero | xz -0 --check=none`: one LZMA2 chunk, which [`xz_bomb`] repeats.
const ZEROS_1MIB_XZ: &[u8] = include_bytes!("testdata/zeros-1MiB.xz");

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}

fn crc32(data: &[u8]) -> [u8; 4] {
    let mut c = flate2::Crc::new();
    c.update(data);
    c.sum().to_le_bytes()
}

fn vli(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

/// An xz stream of one block holding `lzma2` (LZMA2 chunks and their end marker) with
/// dictionary byte `dict`, `size` bytes uncompressed; check CRC32 of `data` when given, else none.
fn xz_stream(lzma2: &[u8], dict: u8, size: u64, data: Option<&[u8]>) -> Vec<u8> {
    let check = u8::from(data.is_some());
    let flags = [0, check];
    let mut out = vec![0xfd, b'7', b'z', b'X', b'Z', 0, 0, check];
    out.extend_from_slice(&crc32(&flags));
    let mut bh = vec![2, 0, 0x21, 1, dict, 0, 0, 0];
    bh.extend_from_slice(&crc32(&bh.clone()));
    out.extend_from_slice(&bh);
    out.extend_from_slice(lzma2);
    let unpadded = bh.len() + lzma2.len() + 4 * check as usize;
    pad4(&mut out);
    if let Some(d) = data {
        out.extend_from_slice(&crc32(d));
    }
    let mut index = vec![0];
    vli(1, &mut index);
    vli(unpadded as u64, &mut index);
    vli(size, &mut index);
    pad4(&mut index);
    index.extend_from_slice(&crc32(&index.clone()));
    out.extend_from_slice(&index);
    let mut footer = ((index.len() / 4 - 1) as u32).to_le_bytes().to_vec();
    footer.extend_from_slice(&flags);
    out.extend_from_slice(&crc32(&footer));
    out.extend_from_slice(&footer);
    out.extend_from_slice(b"YZ");
    out
}

/// A valid xz stream of `data`, stored in uncompressed LZMA2 chunks (CRC32 check).
pub fn xz(data: &[u8]) -> Vec<u8> {
    let mut lzma2 = Vec::new();
    for (i, c) in data.chunks(64 << 10).enumerate() {
        lzma2.push(if i == 0 { 1 } else { 2 });
        lzma2.extend_from_slice(&((c.len() - 1) as u16).to_be_bytes());
        lzma2.extend_from_slice(c);
    }
    lzma2.push(0);
    xz_stream(&lzma2, 0x08, data.len() as u64, Some(data))
}

/// Microcode in an early uncompressed archive, then `main` (compressed or not).
pub fn image(main: &[u8]) -> Vec<u8> {
    let mut img = build(&[("kernel/x86/microcode/GenuineIntel.bin", b"mc")]);
    img.extend_from_slice(main);
    img
}

/// 300 KB whose one entry, at `path`, claims 4 GiB of data.
pub fn claims_4gib(path: &str) -> Vec<u8> {
    let mut a = header(path, REGULAR, u32::MAX as u64);
    a.resize(a.len() + (300 << 10), b'x');
    image(&a)
}

/// `frames` zstd frames of `per_frame` entries each, with names `name_len` bytes long.
pub fn many_entries_zstd(frames: usize, per_frame: usize, name_len: usize) -> Vec<u8> {
    let mut chunk = Vec::new();
    for i in 0..per_frame {
        let mut name = format!("usr/share/{i:08}/");
        name.extend(std::iter::repeat_n(
            'n',
            name_len.saturating_sub(name.len()),
        ));
        chunk.extend_from_slice(&header(&name, REGULAR, 0));
    }
    let frame = zstd(&chunk);
    let mut main = Vec::with_capacity(frame.len() * frames);
    for _ in 0..frames {
        main.extend_from_slice(&frame);
    }
    image(&main)
}

/// `mib` MiB of zeros as gzip members of 1 MiB each (as `gzip -9` would store them, about
/// 1 KB each), after one holding an entry at `path` that claims 4 GiB.
pub fn gzip_bomb(path: &str, mib: usize) -> Vec<u8> {
    let mut main = gzip(&header(path, REGULAR, u32::MAX as u64));
    let member = gzip(&vec![0u8; 1 << 20]);
    for _ in 0..mib {
        main.extend_from_slice(&member);
    }
    image(&main)
}

/// One xz block of `mib` MiB of zeros (the chunk of `xz -0` on 1 MiB of zeros, repeated with a
/// state reset each time), about 220 bytes per MiB.
pub fn xz_bomb(mib: usize) -> Vec<u8> {
    let bh_len = (ZEROS_1MIB_XZ[12] as usize + 1) * 4;
    let start = 12 + bh_len;
    let dict = ZEROS_1MIB_XZ[12 + 4];
    let c = &ZEROS_1MIB_XZ[start..];
    // Control byte, unpacked size - 1 (with its top bits in the control byte), packed size - 1,
    // properties: then the packed bytes.
    let packed = (u16::from_be_bytes([c[3], c[4]]) as usize) + 1;
    let (props, body) = (c[5], &c[6..6 + packed]);
    let mut lzma2 = Vec::new();
    for i in 0..mib {
        // The first chunk resets the dictionary; the others only the state (same properties).
        lzma2.push(if i == 0 { c[0] } else { (c[0] & 0x1f) | 0xc0 });
        lzma2.extend_from_slice(&c[1..5]);
        lzma2.push(props);
        lzma2.extend_from_slice(body);
    }
    lzma2.push(0);
    image(&xz_stream(&lzma2, dict, (mib as u64) << 20, None))
}

/// An xz stream whose block declares a 3 GiB dictionary.
pub fn xz_huge_dict() -> Vec<u8> {
    let mut lzma2 = vec![1, 0, 3];
    lzma2.extend_from_slice(&header("a", REGULAR, 0)[..4]);
    lzma2.push(0);
    image(&xz_stream(&lzma2, 39, 4, None))
}

/// A zstd frame that declares a 1 GiB window.
pub fn zstd_huge_window() -> Vec<u8> {
    let mut f = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 20 << 3];
    // One raw, last block of 4 bytes.
    f.extend_from_slice(&[(4 << 3) | 1, 0, 0]);
    f.extend_from_slice(b"0707");
    image(&f)
}

/// A real-format image: early microcode, then `files` in a `format` ("zstd", "xz", "gzip",
/// anything else: uncompressed) main archive.
pub fn real(format: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    let main = build(files);
    image(&match format {
        "zstd" => zstd(&main),
        "xz" => xz(&main),
        "gzip" => gzip(&main),
        _ => main,
    })
}

/// The hostile samples: a name, the image, and what its error must say.
pub fn hostile() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let conf = "etc/modprobe.d/guestprep.conf";
    let mut cut = real("zstd", &[(conf, &[b'x'; 5000])]);
    cut.truncate(cut.len() - 40);
    let mut garbage = image(b"\x89LZO\0\r\n\x1a\n");
    garbage.extend_from_slice(&[0x55; 1000]);
    vec![
        (
            "claims-4gib",
            claims_4gib(conf),
            "ends inside the data of /etc/modprobe.d/",
        ),
        (
            "million-entries-zstd",
            many_entries_zstd(100, 10_000, 200),
            "more than 100000 cpio entries",
        ),
        ("gzip-bomb", gzip_bomb(conf, 1024), "a decompression bomb"),
        ("xz-bomb", xz_bomb(1024), "a decompression bomb"),
        (
            "xz-huge-dict",
            xz_huge_dict(),
            "xz stream needs a window of 3221225472 bytes",
        ),
        (
            "zstd-huge-window",
            zstd_huge_window(),
            "zstd stream needs a window of 1073741824 bytes",
        ),
        ("zstd-truncated", cut, "zstd"),
        ("garbage", garbage, "lzo"),
    ]
}
