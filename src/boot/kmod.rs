//! A kernel module's identity without `modinfo`: the `.modinfo` ELF section of a `.ko`
//! (`srcversion`, `vermagic`, `version`, …), read from the file as it is stored (plain, or
//! compressed with xz, zstd or gzip as kernels and DKMS install them).

use std::collections::BTreeMap;
use std::io::{BufReader, Read};

use anyhow::{Result, anyhow, bail};

use super::decode::{Bounds, Decoder, Format, peek};
use super::limits::{Budget, Exceeded, Limits, lift};

/// A kernel module's name as modprobe and the kernel compare it: `-` and `_` are one character
/// (`snd-hda-intel` is `snd_hda_intel`). Kept as written (for messages and ids), equal, hashed
/// and shown [`canonical`](ModuleName::canonical)ly where it is compared. The kernel compares a
/// module's parameter names by the same rule, so they are `ModuleName`s too.
#[derive(Clone, Debug)]
pub struct ModuleName(String);

impl ModuleName {
    pub fn new(name: &str) -> Self {
        ModuleName(name.to_string())
    }

    /// A module file's name without its `.ko[.xz|.zst|.gz]` suffix, or None for a file that is
    /// not a module.
    pub fn of_file(file: &str) -> Option<Self> {
        let base = file.rsplit('/').next().unwrap_or(file);
        let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
            .iter()
            .find_map(|s| base.strip_suffix(s))?;
        (!stem.is_empty()).then(|| ModuleName::new(stem))
    }

    /// As it was written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// With `_` for every `-`: how `/proc/modules`, `/sys/module` and `modules.dep` spell it.
    pub fn canonical(&self) -> String {
        self.0.replace('-', "_")
    }

    fn units(&self) -> impl Iterator<Item = u8> + '_ {
        self.0.bytes().map(|b| if b == b'-' { b'_' } else { b })
    }
}

impl PartialEq for ModuleName {
    fn eq(&self, other: &Self) -> bool {
        self.units().eq(other.units())
    }
}

impl Eq for ModuleName {}

impl std::hash::Hash for ModuleName {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.units().for_each(|b| h.write_u8(b));
        h.write_u8(0xff);
    }
}

impl std::fmt::Display for ModuleName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A module file's [canonical](ModuleName::canonical) name, or None for a file that is not a
/// module.
pub fn module_name(file: &str) -> Option<String> {
    ModuleName::of_file(file).map(|n| n.canonical())
}

/// A module's identity: the sha256 of its decompressed ELF (an initramfs holds the very file
/// DKMS installed, maybe recompressed), and for people `.modinfo`'s srcversion, or version, or
/// vermagic. In-tree modules of Debian's kernels carry no srcversion and the same vermagic as a
/// DKMS build for that kernel, so only the contents tell them apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub sha256: String,
    /// "srcversion ABC…, sha256 0123456789ab".
    pub shown: String,
}

/// Reads a module as it is stored (plain ELF, or xz, zstd or gzip) and streams it through
/// sha256. Decompression spends from `budget` within the module bounds of `limits`; the ELF is
/// kept (for its `.modinfo`) only up to `limits.keep_module` bytes: a larger module is
/// identified by its sha256 alone.
pub fn identity(r: impl Read, limits: &Limits, budget: &Budget) -> Result<Identity> {
    use sha2::Digest;
    let (head, r) = peek(BufReader::with_capacity(64 << 10, r), 8).map_err(lift)?;
    let mut elf: Box<dyn Read + '_> = if head.starts_with(b"\x7fELF") {
        Box::new(r)
    } else if let Some(f) = Format::sniff(&head) {
        let bounds = Bounds {
            what: "a module",
            max_window: limits.module_window,
            max_ratio: limits.max_ratio,
            ratio_grace: limits.ratio_grace,
        };
        Box::new(Decoder::new(f, r, bounds, budget))
    } else {
        bail!("not a kernel module (neither ELF nor xz, zstd or gzip)");
    };
    let mut sha = sha2::Sha256::new();
    let mut kept = Some(Vec::new());
    let mut total = 0u64;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = elf.read(&mut buf).map_err(lift)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > limits.max_module {
            return Err(Exceeded::Module {
                what: "the module".into(),
                limit: limits.max_module,
            }
            .into());
        }
        sha.update(&buf[..n]);
        if kept
            .as_ref()
            .is_some_and(|k| (k.len() + n) as u64 > limits.keep_module)
        {
            kept = None;
        }
        if let Some(k) = &mut kept {
            k.extend_from_slice(&buf[..n]);
        }
    }
    let sum = hex::encode(sha.finalize());
    let shown = match kept {
        Some(elf) => {
            let info = modinfo(&elf)?;
            match (info.get("srcversion"), info.get("version")) {
                (Some(s), _) => format!("srcversion {s}"),
                (None, Some(v)) => format!("version {v}"),
                (None, None) => format!(
                    "vermagic {:?}",
                    info.get("vermagic").map(String::as_str).unwrap_or("")
                ),
            }
        }
        None => format!("{total} bytes, too large to read its .modinfo"),
    };
    Ok(Identity {
        shown: format!("{shown}, sha256 {}", &sum[..12]),
        sha256: sum,
    })
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

/// A minimal ELF64 with a `.modinfo` section and a section-name table (tests and fuzzing build
/// modules with it).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_modinfo_plain_and_compressed() {
        let ko = tiny_module(
            "version=1.0\0srcversion=ABC123\0vermagic=6.12.0 SMP mod_unload\0alias=a\0alias=b\0",
        );
        let info = modinfo(&ko).unwrap();
        assert_eq!(info["srcversion"], "ABC123");
        assert_eq!(info["vermagic"], "6.12.0 SMP mod_unload");
        assert_eq!(info["alias"], "a");
        let xz = super::super::samples::xz(&ko);
        let zst =
            ruzstd::encoding::compress_to_vec(&ko[..], ruzstd::encoding::CompressionLevel::Fastest);
        let gz = {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&ko).unwrap();
            e.finish().unwrap()
        };
        let l = &Limits::DEFAULT;
        let plain = identity(&ko[..], l, &Budget::new(1 << 20)).unwrap();
        assert!(
            plain.shown.starts_with("srcversion ABC123, sha256 "),
            "{}",
            plain.shown
        );
        for stored in [&xz, &zst, &gz] {
            assert_eq!(
                identity(&stored[..], l, &Budget::new(1 << 20)).unwrap(),
                plain
            );
        }
        // Decompressing spends the budget; a module beyond its limit is an error.
        let e = identity(&xz[..], l, &Budget::new(10)).unwrap_err();
        assert_eq!(
            e.downcast_ref::<Exceeded>(),
            Some(&Exceeded::Output { limit: 10 })
        );
        let small = Limits {
            max_module: 10,
            ..Limits::DEFAULT
        };
        assert!(identity(&ko[..], &small, &Budget::new(1 << 20)).is_err());
        // Too large to keep: identified by its sha256 alone.
        let no_keep = Limits {
            keep_module: 10,
            ..Limits::DEFAULT
        };
        let big = identity(&ko[..], &no_keep, &Budget::new(1 << 20)).unwrap();
        assert_eq!(big.sha256, plain.sha256);
        assert!(
            big.shown.contains("too large to read its .modinfo"),
            "{}",
            big.shown
        );
        assert!(identity(&b"text"[..], l, &Budget::new(10)).is_err());
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

    #[test]
    fn dash_and_underscore_are_one_name() {
        use std::collections::HashSet;
        let a = ModuleName::new("snd-hda_intel");
        assert_eq!(a, ModuleName::new("snd_hda-intel"));
        assert_eq!(a.canonical(), "snd_hda_intel");
        assert_eq!(a.as_str(), "snd-hda_intel");
        assert_eq!(a.to_string(), "snd-hda_intel");
        assert_ne!(a, ModuleName::new("snd_hda"));
        assert_ne!(ModuleName::new("ab"), ModuleName::new("a_b"));
        let set: HashSet<_> = ["br-netfilter", "br_netfilter", "overlay"]
            .into_iter()
            .map(ModuleName::new)
            .collect();
        assert_eq!(set.len(), 2);
        let f = ModuleName::of_file("updates/dkms/snd_hda-intel.ko.zst").unwrap();
        assert_eq!((f == a, f.as_str()), (true, "snd_hda-intel"));
    }
}
