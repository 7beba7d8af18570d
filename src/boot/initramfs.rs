//! An initramfs image as the kernel unpacks it: uncompressed cpio archives first (early
//! microcode), then one compressed segment (zstd, xz or gzip: what initramfs-tools and dracut
//! write) holding the main archive. Streamed within the [`Limits`]: the files asked for are
//! hashed as they pass (a module by its decompressed contents, see [`kmod::identity`]), nothing
//! else is kept, and reading stops as soon as the caller has what it needs.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::cpio::{self, Next};
use super::decode::{Bounds, Decoder, Format, other_magic, peek};
use super::kmod;
use super::limits::{Budget, Limits, lift};

/// What the caller wants of a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// A kernel module: its [`kmod::Identity`].
    Module,
    /// A file: the sha256 of its bytes.
    File,
}

/// A module the initramfs carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Carried {
    /// Without a leading `/`.
    pub path: String,
    pub sha256: String,
    pub shown: String,
}

/// What was found in an initramfs (remembered across runs: see `resources::initramfs_memo`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Contents {
    /// How the main archive was stored: "zstd", "xz", "gzip" or "none".
    pub compression: String,
    /// Whether it has an `etc/modprobe.d` (a directory or anything in it).
    pub modprobe_dir: bool,
    /// The wanted modules, in archive order.
    pub modules: Vec<Carried>,
    /// The wanted files' sha256, by path (without a leading `/`).
    pub files: BTreeMap<String, String>,
    /// Read to the end; false when reading stopped because the caller had all it needed.
    pub complete: bool,
}

/// What to look for, and when to stop.
pub struct Query<'a> {
    pub want: &'a dyn Fn(&str) -> Option<Want>,
    /// True once `Contents` has everything the caller needs: reading stops there.
    pub enough: &'a dyn Fn(&Contents) -> bool,
}

/// Reads an initramfs from `r` within `limits`.
pub fn read(r: impl Read, q: &Query, limits: &Limits) -> Result<Contents> {
    let budget = Budget::new(limits.max_output);
    let mut c = Contents::default();
    let r = BufReader::with_capacity(64 << 10, r);
    let mut early = cpio::Reader::new(r, limits.max_entries, limits.max_name);
    // Not stopped early: what follows (the compression) is part of the answer.
    let early_q = Query {
        want: q.want,
        enough: &|_| false,
    };
    let end = entries(&mut early, &early_q, limits, &budget, &mut c)?;
    if end == Some(Next::End) {
        c.compression = "none".into();
        c.complete = true;
        return Ok(c);
    }
    let (head, r) = peek(early.into_inner(), 8).map_err(lift)?;
    let Some(format) = Format::sniff(&head) else {
        bail!(
            "the initramfs's main archive is compressed with {}, which guestprep does not read (zstd, xz and gzip it does)",
            other_magic(&head)
        );
    };
    let kind = format.name();
    c.compression = kind.into();
    let bounds = Bounds {
        what: "the initramfs",
        max_window: limits.max_window,
        max_ratio: limits.max_ratio,
        ratio_grace: limits.ratio_grace,
    };
    let dec = Decoder::new(format, r, bounds, &budget);
    let mut main = cpio::Reader::new(
        BufReader::with_capacity(64 << 10, dec),
        limits.max_entries,
        limits.max_name,
    );
    let end = entries(&mut main, q, limits, &budget, &mut c)
        .with_context(|| format!("in its {kind} segment"))?;
    match end {
        None => {}
        Some(Next::Other) => {
            bail!("its {kind} segment continues with something that is not a cpio archive")
        }
        Some(_) => c.complete = true,
    }
    Ok(c)
}

/// Reads entries up to the end of this stream (returned), or until `q.enough` (None).
fn entries<R: BufRead>(
    r: &mut cpio::Reader<R>,
    q: &Query,
    limits: &Limits,
    budget: &Budget,
    c: &mut Contents,
) -> Result<Option<Next>> {
    loop {
        let e = match r.next_entry()? {
            Next::Entry(e) => e,
            end => return Ok(Some(end)),
        };
        if e.path == "etc/modprobe.d" || e.path.starts_with("etc/modprobe.d/") {
            c.modprobe_dir = true;
        }
        if !e.regular {
            continue;
        }
        match (q.want)(&e.path) {
            None => continue,
            Some(Want::Module) => {
                let id = kmod::identity(r.data(), limits, budget)
                    .with_context(|| format!("reading /{}", e.path))?;
                c.modules.push(Carried {
                    path: e.path,
                    sha256: id.sha256,
                    shown: id.shown,
                });
            }
            Some(Want::File) => {
                let sum = sha256(r.data()).with_context(|| format!("reading /{}", e.path))?;
                c.files.insert(e.path, sum);
            }
        }
        if (q.enough)(c) {
            return Ok(None);
        }
    }
}

/// The sha256 of what `r` reads, in chunks.
fn sha256(mut r: impl Read) -> Result<String> {
    use sha2::Digest;
    let mut sha = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match r.read(&mut buf).map_err(lift)? {
            0 => return Ok(hex::encode(sha.finalize())),
            n => sha.update(&buf[..n]),
        }
    }
}

#[cfg(test)]
#[path = "initramfs_tests.rs"]
mod tests;
