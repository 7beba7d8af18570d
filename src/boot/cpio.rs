//! A reader of the cpio "newc" format (`070701`/`070702`) the Linux initramfs uses: entry by
//! entry, each entry's data read (or skipped) through [`Reader::data`] in chunks, so nothing is
//! ever allocated by the size an entry claims. Names are at most `max_name` bytes and an archive
//! stream at most `max_entries` entries ([`Exceeded`]).
//!
//! Several archives may follow each other, separated by zero padding (the kernel accepts that and
//! initramfs-tools writes it). [`Reader::next_entry`] says [`Next::Other`] at the first byte that
//! cannot start an archive after a trailer: the start of a compressed segment in an initramfs.

use std::io::{BufRead, Read};

use anyhow::{Result, bail};

use super::limits::{Exceeded, lift};

const HEADER: usize = 110;
const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;

/// An entry's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Without a leading `./` or `/`.
    pub path: String,
    pub regular: bool,
    pub size: u64,
}

/// What comes next in the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Entry(Entry),
    /// The input ended between archives.
    End,
    /// Between archives, a byte that cannot start one (left unread).
    Other,
}

/// Entries of one or more cpio archives read from `r`.
pub struct Reader<R> {
    r: R,
    /// Bytes consumed since the start of this stream (newc aligns to 4 from there).
    pos: u64,
    /// The current entry's data not yet read.
    left: u64,
    /// Inside an archive (after its first header, before its trailer).
    inside: bool,
    current: String,
    /// Entries so far, in all archives of this stream.
    pub entries: u64,
    /// Archives completed (their trailer seen).
    pub archives: u64,
    max_entries: u64,
    max_name: u64,
}

fn hex_field(h: &[u8], i: usize) -> Result<u64> {
    let f = &h[6 + 8 * i..14 + 8 * i];
    if !f.iter().all(u8::is_ascii_hexdigit) {
        bail!(
            "a cpio header field is not hex: {}",
            crate::text::excerpt(f, 8)
        );
    }
    let s = std::str::from_utf8(f)?;
    Ok(u64::from_str_radix(s, 16)?)
}

fn pad4(n: u64) -> u64 {
    (4 - n % 4) % 4
}

impl<R: BufRead> Reader<R> {
    pub fn new(r: R, max_entries: u64, max_name: u64) -> Reader<R> {
        Reader {
            r,
            pos: 0,
            left: 0,
            inside: false,
            current: String::new(),
            entries: 0,
            archives: 0,
            max_entries,
            max_name,
        }
    }

    /// The source, positioned after what was read (at the byte of a [`Next::Other`]).
    pub fn into_inner(self) -> R {
        self.r
    }

    fn read_exact(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        let mut n = 0;
        while n < buf.len() {
            match self.r.read(&mut buf[n..]).map_err(lift)? {
                0 => bail!(
                    "the archive ends inside {what} (at byte {} of the stream)",
                    self.pos + n as u64
                ),
                k => n += k,
            }
        }
        self.pos += n as u64;
        Ok(())
    }

    /// Discards `n` bytes; false when the input ends first.
    fn skip(&mut self, mut n: u64) -> Result<bool> {
        while n > 0 {
            let buf = self.r.fill_buf().map_err(lift)?;
            if buf.is_empty() {
                return Ok(false);
            }
            let k = (buf.len() as u64).min(n) as usize;
            self.r.consume(k);
            self.pos += k as u64;
            n -= k as u64;
        }
        Ok(true)
    }

    /// Skips what is left of the current entry's data and its padding.
    fn finish_entry(&mut self) -> Result<()> {
        let left = std::mem::take(&mut self.left);
        if !self.skip(left)? {
            bail!("the archive ends inside the data of /{}", self.current);
        }
        let pad = pad4(self.pos);
        if !self.skip(pad)? {
            bail!("the archive ends inside the padding of /{}", self.current);
        }
        Ok(())
    }

    /// The next entry (the current one's unread data is skipped).
    pub fn next_entry(&mut self) -> Result<Next> {
        self.finish_entry()?;
        loop {
            if !self.inside && !self.between()? {
                let buf = self.r.fill_buf().map_err(lift)?;
                return Ok(if buf.is_empty() {
                    Next::End
                } else {
                    Next::Other
                });
            }
            let mut h = [0u8; HEADER];
            self.read_exact(&mut h, "a cpio header")?;
            if &h[..6] != b"070701" && &h[..6] != b"070702" {
                bail!(
                    "not a cpio newc header at byte {} of the stream: {}",
                    self.pos - HEADER as u64,
                    crate::text::excerpt(&h[..6], 6)
                );
            }
            let mode = hex_field(&h, 1)? as u32;
            let size = hex_field(&h, 6)?;
            let namesize = hex_field(&h, 11)?;
            if namesize == 0 {
                bail!("a cpio entry has an empty name (at byte {})", self.pos);
            }
            if namesize > self.max_name {
                return Err(Exceeded::Name {
                    len: namesize,
                    limit: self.max_name,
                }
                .into());
            }
            let mut raw = vec![0u8; namesize as usize];
            self.read_exact(&mut raw, "a cpio entry's name")?;
            let name = String::from_utf8_lossy(&raw[..raw.len() - 1]).into_owned();
            if !self.skip(pad4(self.pos))? {
                bail!("the archive ends inside the padding of a cpio entry's name");
            }
            if name == "TRAILER!!!" {
                self.archives += 1;
                self.inside = false;
                continue;
            }
            self.entries += 1;
            if self.entries > self.max_entries {
                return Err(Exceeded::Entries {
                    limit: self.max_entries,
                }
                .into());
            }
            self.inside = true;
            self.left = size;
            self.current = name
                .trim_start_matches("./")
                .trim_start_matches('/')
                .to_string();
            return Ok(Next::Entry(Entry {
                path: self.current.clone(),
                regular: mode & S_IFMT == S_IFREG,
                size,
            }));
        }
    }

    /// Between archives: skips zero padding; true when a header follows (a `0` at an aligned
    /// position), false at the end of the input or at a byte that cannot start an archive.
    fn between(&mut self) -> Result<bool> {
        loop {
            let buf = self.r.fill_buf().map_err(lift)?;
            let zeros = buf.iter().position(|b| *b != 0).unwrap_or(buf.len());
            if buf.is_empty() {
                return Ok(false);
            }
            if zeros == 0 {
                return Ok(buf[0] == b'0' && self.pos % 4 == 0);
            }
            self.r.consume(zeros);
            self.pos += zeros as u64;
        }
    }

    /// The current entry's data, in chunks; reading past the input's end is an error.
    pub fn data(&mut self) -> Data<'_, R> {
        Data(self)
    }
}

/// The data of the entry [`Reader::next_entry`] returned last.
pub struct Data<'a, R>(&'a mut Reader<R>);

impl<R: BufRead> Read for Data<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let rd = &mut *self.0;
        if rd.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let k = (buf.len() as u64).min(rd.left) as usize;
        let n = rd.r.read(&mut buf[..k])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the archive ends inside the data of /{}", rd.current),
            ));
        }
        rd.left -= n as u64;
        rd.pos += n as u64;
        Ok(n)
    }
}

/// An entry's header and name, padded: `size` is what it claims, whatever follows.
pub fn header(name: &str, mode: u32, size: u64) -> Vec<u8> {
    let namesize = name.len() + 1;
    let mut out = format!(
        "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
        0, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, namesize, 0
    )
    .into_bytes();
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out.resize(out.len() + pad4(out.len() as u64) as usize, 0);
    out
}

/// A regular file's mode for [`header`].
pub const REGULAR: u32 = S_IFREG | 0o644;

/// Writes a newc archive of regular files (tests and fuzzing build inputs with it).
pub fn build(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in files {
        out.extend_from_slice(&header(name, REGULAR, data.len() as u64));
        out.extend_from_slice(data);
        out.resize(out.len() + pad4(out.len() as u64) as usize, 0);
    }
    out.extend_from_slice(&header("TRAILER!!!", 0, 0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each entry's path, with its contents when `keep` selects it.
    type Listed = Vec<(String, Option<Vec<u8>>)>;

    /// Every entry with the contents of those `keep` selects; then how the stream ended.
    fn entries(a: &[u8], chunk: usize, keep: &dyn Fn(&str) -> bool) -> Result<(Listed, Next)> {
        let mut r = Reader::new(std::io::BufReader::with_capacity(chunk, a), 1000, 4096);
        let mut out = Vec::new();
        loop {
            match r.next_entry()? {
                Next::Entry(e) => {
                    let data = if keep(&e.path) {
                        let mut v = Vec::new();
                        r.data().read_to_end(&mut v)?;
                        Some(v)
                    } else {
                        None
                    };
                    out.push((e.path, data));
                }
                end => return Ok((out, end)),
            }
        }
    }

    #[test]
    fn reads_entries_whatever_the_chunking() {
        let mut a = build(&[
            ("usr/lib/modules/6.12/kernel/x.ko", b"ELF..."),
            ("./etc/modprobe.d/guestprep.conf", b"blacklist xe\n"),
            ("empty", b""),
        ]);
        a.extend_from_slice(&[0; 512]); // padding between archives
        a.extend_from_slice(&build(&[("second", b"2")]));
        for chunk in [1, 3, 7, 110, 4096] {
            let keep = |p: &str| p.starts_with("etc/") || p == "second";
            let (got, end) = entries(&a, chunk, &keep).unwrap();
            assert_eq!(end, Next::End, "chunk {chunk}");
            let paths: Vec<_> = got.iter().map(|(p, _)| p.as_str()).collect();
            assert_eq!(
                paths,
                [
                    "usr/lib/modules/6.12/kernel/x.ko",
                    "etc/modprobe.d/guestprep.conf",
                    "empty",
                    "second"
                ]
            );
            assert_eq!(got[1].1.as_deref(), Some(&b"blacklist xe\n"[..]));
            assert_eq!(got[3].1.as_deref(), Some(&b"2"[..]));
        }
    }

    #[test]
    fn stops_at_a_compressed_segment_and_refuses_garbage() {
        let mut a = build(&[("kernel/x86/microcode/GenuineIntel.bin", b"mc")]);
        let n = a.len();
        a.extend_from_slice(&[0x28, 0xb5, 0x2f, 0xfd, 1, 2]);
        let none = |_: &str| false;
        let mut r = Reader::new(&a[..], 10, 4096);
        assert!(matches!(r.next_entry().unwrap(), Next::Entry(_)));
        assert_eq!(r.next_entry().unwrap(), Next::Other);
        assert_eq!(r.into_inner().len(), a.len() - n);
        assert!(entries(b"070701zzzzzzzz", 4096, &none).is_err());
        assert!(entries(&[b'0'; 200], 4096, &none).is_err());
        // A huge name is refused, not buffered.
        let mut h = build(&[("x", b"")]);
        h[94..102].copy_from_slice(b"7fffffff");
        let e = entries(&h, 4096, &none).unwrap_err();
        assert_eq!(
            e.downcast_ref::<Exceeded>(),
            Some(&Exceeded::Name {
                len: 0x7fffffff,
                limit: 4096
            })
        );
    }

    #[test]
    fn an_entry_claiming_4_gib_costs_only_what_is_there() {
        let mut a = header("etc/modprobe.d/guestprep.conf", REGULAR, u32::MAX as u64);
        a.extend_from_slice(&vec![b'x'; 300 << 10]);
        let mut r = Reader::new(&a[..], 10, 4096);
        let Next::Entry(e) = r.next_entry().unwrap() else {
            panic!("an entry")
        };
        assert_eq!(e.size, u32::MAX as u64);
        let mut sink = std::io::sink();
        let err = std::io::copy(&mut r.data(), &mut sink).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(
            err.to_string().contains("/etc/modprobe.d/guestprep.conf"),
            "{err}"
        );
        // Skipped rather than read: the same.
        let mut r = Reader::new(&a[..], 10, 4096);
        r.next_entry().unwrap();
        let e = r.next_entry().unwrap_err();
        assert!(format!("{e:#}").contains("ends inside the data of /etc/modprobe.d/"));
    }

    #[test]
    fn entries_are_counted_across_archives() {
        let one = build(&[("a", b"1"), ("b", b"2")]);
        let a = [one.clone(), one.clone(), one].concat();
        let mut r = Reader::new(&a[..], 5, 4096);
        let mut n = 0;
        let e = loop {
            match r.next_entry() {
                Ok(Next::Entry(_)) => n += 1,
                Ok(other) => panic!("ended: {other:?}"),
                Err(e) => break e,
            }
        };
        assert_eq!(n, 5);
        assert_eq!(
            e.downcast_ref::<Exceeded>(),
            Some(&Exceeded::Entries { limit: 5 })
        );
        // A stream that ends after an entry, without its trailer, is cut short.
        let mut cut = build(&[("a", b"1")]);
        cut.truncate(cut.len() - 120);
        let mut r = Reader::new(&cut[..], 5, 4096);
        r.next_entry().unwrap();
        assert!(r.next_entry().is_err());
    }
}
