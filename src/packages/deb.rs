//! The inside of a `.deb` without dpkg: an `ar` archive holding `control.tar.*` and
//! `data.tar.*` (gzip, xz, zstd or plain). Reads the control fields and any `dkms.conf` shipped
//! under `/usr/src`, so a package can be judged before it is installed.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::dkmsconf::{self, DkmsConf};

/// What guestprep needs to know of a `.deb`.
#[derive(Clone, Debug, Default)]
pub struct DebInfo {
    pub package: Option<String>,
    pub version: Option<String>,
    pub architecture: Option<String>,
    /// `usr/src/NAME-VERSION/dkms.conf` when the package is a DKMS source package.
    pub dkms: Option<(String, DkmsConf)>,
}

/// The members of an `ar` archive: (name, bytes).
fn ar_members(bytes: &[u8]) -> Result<Vec<(String, &[u8])>> {
    if !bytes.starts_with(b"!<arch>\n") {
        bail!("not a Debian package (no ar header)");
    }
    let mut out = Vec::new();
    let mut pos = 8;
    while pos + 60 <= bytes.len() {
        let h = &bytes[pos..pos + 60];
        if &h[58..60] != b"`\n" {
            bail!("corrupt ar member header at byte {pos}");
        }
        let name = String::from_utf8_lossy(&h[0..16])
            .trim_end()
            .trim_end_matches('/')
            .to_string();
        let size: usize = String::from_utf8_lossy(&h[48..58])
            .trim()
            .parse()
            .context("corrupt ar member size")?;
        let start = pos + 60;
        let end = start
            .checked_add(size)
            .filter(|e| *e <= bytes.len())
            .context("truncated ar member")?;
        out.push((name, &bytes[start..end]));
        pos = end + (size % 2);
    }
    Ok(out)
}

/// A decompressing reader for a `control.tar.*`/`data.tar.*` member, by its name.
fn decompress<'a>(name: &str, data: &'a [u8]) -> Result<Box<dyn Read + 'a>> {
    Ok(if name.ends_with(".gz") {
        Box::new(flate2::read::GzDecoder::new(data))
    } else if name.ends_with(".xz") {
        let mut out = Vec::new();
        lzma_rs::xz_decompress(&mut std::io::BufReader::new(data), &mut out)
            .map_err(|e| anyhow::anyhow!("xz: {e}"))?;
        Box::new(std::io::Cursor::new(out))
    } else if name.ends_with(".zst") {
        Box::new(
            ruzstd::decoding::StreamingDecoder::new(data)
                .map_err(|e| anyhow::anyhow!("zstd: {e}"))?,
        )
    } else if name.ends_with(".tar") {
        Box::new(data)
    } else {
        bail!("unsupported compression of {name}")
    })
}

/// The largest `.deb` guestprep reads (it is read whole): a DKMS driver is a few MB.
pub const DEB_LIMIT: u64 = 512 << 20;

/// Reads a `.deb` file.
pub fn read(path: &Path) -> Result<DebInfo> {
    let bytes = crate::saferead::read_regular(path, DEB_LIMIT)?
        .with_context(|| format!("reading {}: no such file", path.display()))?;
    inspect(&bytes).with_context(|| format!("inspecting {}", path.display()))
}

/// Reads a `.deb` in memory.
pub fn inspect(bytes: &[u8]) -> Result<DebInfo> {
    let mut info = DebInfo::default();
    for (name, data) in ar_members(bytes)? {
        if name.starts_with("control.tar") {
            let mut ar = tar::Archive::new(decompress(&name, data)?);
            for entry in ar.entries()? {
                let mut e = entry?;
                if e.path()?.file_name().is_some_and(|f| f == "control") {
                    let mut text = String::new();
                    e.read_to_string(&mut text)?;
                    for line in text.lines() {
                        if let Some((k, v)) = line.split_once(": ") {
                            let v = Some(v.trim().to_string());
                            match k {
                                "Package" => info.package = v,
                                "Version" => info.version = v,
                                "Architecture" => info.architecture = v,
                                _ => {}
                            }
                        }
                    }
                }
            }
        } else if name.starts_with("data.tar") {
            let mut ar = tar::Archive::new(decompress(&name, data)?);
            for entry in ar.entries()? {
                let mut e = entry?;
                let p = e
                    .path()?
                    .to_string_lossy()
                    .trim_start_matches("./")
                    .to_string();
                let parts: Vec<&str> = p.split('/').collect();
                if parts.len() == 4
                    && parts[0] == "usr"
                    && parts[1] == "src"
                    && parts[3] == "dkms.conf"
                {
                    let mut text = String::new();
                    e.read_to_string(&mut text)?;
                    info.dkms = Some((format!("/{p}"), dkmsconf::parse(&text)));
                }
            }
        }
    }
    if info.package.is_none() {
        bail!("no control file: not a Debian binary package");
    }
    Ok(info)
}
