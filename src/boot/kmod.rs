//! A kernel module's identity without `modinfo`: the `.modinfo` ELF section of a `.ko`
//! (`srcversion`, `vermagic`, `version`, …), read from the file as it is stored (plain, or
//! compressed with xz, zstd or gzip as kernels and DKMS install them).

use std::collections::BTreeMap;
use std::io::Read;

use anyhow::{Result, anyhow, bail};

/// A module file's name without its `.ko[.xz|.zst|.gz]` suffix, with `-` as `_` (how modprobe
/// names modules), or None for a file that is not a module.
pub fn module_name(file: &str) -> Option<String> {
    let base = file.rsplit('/').next().unwrap_or(file);
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|s| base.strip_suffix(s))?;
    (!stem.is_empty()).then(|| stem.replace('-', "_"))
}

/// A module file's bytes, decompressed when stored compressed. At most `limit` bytes.
pub fn decompress(bytes: &[u8], limit: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    if bytes.starts_with(b"\x7fELF") {
        return Ok(bytes.to_vec());
    } else if bytes.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        // The writer refuses past the limit, so a bomb stops there instead of filling memory.
        let mut w = Bounded {
            out: &mut out,
            limit,
        };
        lzma_rs::xz_decompress(&mut &bytes[..], &mut w).map_err(|e| anyhow!("xz: {e}"))?;
    } else if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        ruzstd::decoding::StreamingDecoder::new(bytes)
            .map_err(|e| anyhow!("zstd: {e}"))?
            .take(limit)
            .read_to_end(&mut out)?;
    } else if bytes.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(bytes)
            .take(limit)
            .read_to_end(&mut out)?;
    } else {
        bail!("not a kernel module (neither ELF nor xz, zstd or gzip)");
    }
    if out.len() as u64 > limit {
        bail!("the module is larger than {limit} bytes decompressed");
    }
    Ok(out)
}

/// A writer into `out` that fails once more than `limit` bytes are written (one byte over, so
/// the caller can tell "exactly the limit" from "more").
struct Bounded<'a> {
    out: &'a mut Vec<u8>,
    limit: u64,
}

impl std::io::Write for Bounded<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = (self.limit + 1).saturating_sub(self.out.len() as u64);
        if room == 0 {
            return Err(std::io::Error::other(format!(
                "larger than {} bytes decompressed",
                self.limit
            )));
        }
        let n = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        self.out.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn u16_at(b: &[u8], at: usize) -> Result<u16> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| anyhow!("truncated ELF"))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes(s.try_into().unwrap_or_default()))
        .ok_or_else(|| anyhow!("truncated ELF"))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64> {
    b.get(at..at + 8)
        .map(|s| u64::from_le_bytes(s.try_into().unwrap_or_default()))
        .ok_or_else(|| anyhow!("truncated ELF"))
}

fn range(b: &[u8], off: u64, size: u64) -> Result<&[u8]> {
    let end = off
        .checked_add(size)
        .ok_or_else(|| anyhow!("ELF section out of range"))?;
    b.get(off as usize..end as usize)
        .ok_or_else(|| anyhow!("ELF section out of range"))
}

/// The `key=value` pairs of a module's `.modinfo` section (a key listed twice, like `alias`,
/// keeps its first value). Little-endian 64-bit ELF only (x86-64, arm64).
pub fn modinfo(elf: &[u8]) -> Result<BTreeMap<String, String>> {
    if !elf.starts_with(b"\x7fELF") {
        bail!("not an ELF file");
    }
    if elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        bail!("not a little-endian 64-bit ELF file");
    }
    let shoff = u64_at(elf, 0x28)?;
    let shentsize = u16_at(elf, 0x3a)? as u64;
    let shnum = u16_at(elf, 0x3c)? as u64;
    let shstrndx = u16_at(elf, 0x3e)? as u64;
    if shentsize < 0x40 || shstrndx >= shnum {
        bail!("malformed ELF section headers");
    }
    let header = |i: u64| -> Result<(u32, u64, u64)> {
        let at = shoff
            .checked_add(i * shentsize)
            .ok_or_else(|| anyhow!("ELF section header out of range"))? as usize;
        Ok((
            u32_at(elf, at)?,
            u64_at(elf, at + 0x18)?,
            u64_at(elf, at + 0x20)?,
        ))
    };
    let (_, str_off, str_size) = header(shstrndx)?;
    let strtab = range(elf, str_off, str_size)?;
    for i in 0..shnum {
        let (name, off, size) = header(i)?;
        let Some(rest) = strtab.get(name as usize..) else {
            continue;
        };
        if !rest.starts_with(b".modinfo\0") {
            continue;
        }
        let mut out = BTreeMap::new();
        for field in range(elf, off, size)?.split(|b| *b == 0) {
            let f = String::from_utf8_lossy(field);
            if let Some((k, v)) = f.split_once('=') {
                out.entry(k.to_string()).or_insert_with(|| v.to_string());
            }
        }
        return Ok(out);
    }
    bail!("no .modinfo section")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 with a `.modinfo` section and a section-name table.
    pub fn tiny_module(info: &str) -> Vec<u8> {
        let strtab = b"\0.modinfo\0.shstrtab\0";
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let info_off = elf.len() as u64;
        elf.extend_from_slice(info.as_bytes());
        let str_off = elf.len() as u64;
        elf.extend_from_slice(strtab);
        let shoff = elf.len() as u64;
        elf[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
        for (name, off, size) in [
            (0u32, 0u64, 0u64),
            (1, info_off, info.len() as u64),
            (10, str_off, strtab.len() as u64),
        ] {
            let mut sh = vec![0u8; 64];
            sh[..4].copy_from_slice(&name.to_le_bytes());
            sh[0x18..0x20].copy_from_slice(&off.to_le_bytes());
            sh[0x20..0x28].copy_from_slice(&size.to_le_bytes());
            elf.extend_from_slice(&sh);
        }
        elf
    }

    #[test]
    fn reads_modinfo_plain_and_compressed() {
        let ko = tiny_module(
            "version=1.0\0srcversion=ABC123\0vermagic=6.12.0 SMP mod_unload\0alias=a\0alias=b\0",
        );
        let info = modinfo(&ko).unwrap();
        assert_eq!(info["srcversion"], "ABC123");
        assert_eq!(info["vermagic"], "6.12.0 SMP mod_unload");
        assert_eq!(info["alias"], "a");
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut &ko[..], &mut xz).unwrap();
        assert_eq!(decompress(&xz, 1 << 20).unwrap(), ko);
        assert!(decompress(&xz, 10).is_err());
        assert!(decompress(b"text", 10).is_err());
    }

    #[test]
    fn malformed_elf_is_an_error_not_a_panic() {
        let ko = tiny_module("srcversion=X\0");
        for cut in [0, 5, 0x30, 0x40, 80, ko.len() - 30] {
            assert!(modinfo(&ko[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = ko.clone();
        bad[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(modinfo(&bad).is_err());
        let mut bad = ko;
        bad[0x3e] = 9;
        assert!(modinfo(&bad).is_err());
    }

    #[test]
    fn module_names() {
        assert_eq!(
            module_name("kernel/drivers/gpu/drm/i915/i915.ko.xz").as_deref(),
            Some("i915")
        );
        assert_eq!(
            module_name("updates/dkms/snd-hda.ko").as_deref(),
            Some("snd_hda")
        );
        assert_eq!(module_name("modules.dep"), None);
        assert_eq!(module_name(".ko"), None);
    }
}
