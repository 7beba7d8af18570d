//! A push parser for the cpio "newc" format (`070701`/`070702`) the Linux initramfs uses, fed
//! in chunks of any size (a decompressor writes into it), keeping only the files asked for.
//!
//! Several archives may follow each other, separated by zero padding (the kernel accepts that and
//! initramfs-tools writes it). [`Sink::feed`] stops at the first byte that cannot start an
//! archive after a trailer: the start of a compressed segment in an initramfs.

use std::collections::BTreeMap;

use anyhow::{Result, bail};

const HEADER: usize = 110;
/// A name longer than this is not a path in an initramfs: refuse it rather than buffer it.
const MAX_NAME: usize = 4096;
const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;

enum State {
    /// Before an archive or between two: zero padding, then a header.
    Between,
    Header,
    Name {
        namesize: usize,
        filesize: u64,
        regular: bool,
    },
    Data {
        name: Option<String>,
        left: u64,
    },
}

/// Files of one or more cpio archives. `want` decides which regular files' contents are kept;
/// every path is listed in [`Sink::paths`] (without a leading `./` or `/`).
pub struct Sink<'a> {
    want: &'a dyn Fn(&str) -> bool,
    /// Contents of the wanted regular files, by path.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Every entry's path, in archive order.
    pub paths: Vec<String>,
    /// Archives completed (their trailer seen).
    pub archives: usize,
    state: State,
    buf: Vec<u8>,
    /// Bytes consumed since the start of this stream (newc aligns to 4 from there).
    pos: u64,
    /// Bytes still to skip for alignment before the current state's data.
    skip: u64,
}

fn hex_field(h: &[u8], i: usize) -> Result<u64> {
    let f = &h[6 + 8 * i..14 + 8 * i];
    let s = std::str::from_utf8(f).map_err(|_| anyhow::anyhow!("a header field is not hex"))?;
    u64::from_str_radix(s, 16).map_err(|_| anyhow::anyhow!("a header field is not hex: {s:?}"))
}

fn pad4(n: u64) -> u64 {
    (4 - n % 4) % 4
}

impl<'a> Sink<'a> {
    pub fn new(want: &'a dyn Fn(&str) -> bool) -> Sink<'a> {
        Sink {
            want,
            files: BTreeMap::new(),
            paths: Vec::new(),
            archives: 0,
            state: State::Between,
            buf: Vec::new(),
            pos: 0,
            skip: 0,
        }
    }

    /// True when the input so far ends at an archive boundary (not inside an entry).
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Between) && self.buf.is_empty()
    }

    /// Starts a new stream (a decompressed segment): alignment counts from its first byte.
    pub fn restart(&mut self) {
        self.pos = 0;
        self.skip = 0;
        self.state = State::Between;
        self.buf.clear();
    }

    /// Consumes bytes; returns how many were consumed. Fewer than `data.len()` only when, between
    /// archives, a byte that cannot start a cpio header comes (the caller decides what it is).
    pub fn feed(&mut self, data: &[u8]) -> Result<usize> {
        let mut i = 0;
        while i < data.len() {
            if self.skip > 0 {
                let n = (self.skip as usize).min(data.len() - i);
                i += n;
                self.pos += n as u64;
                self.skip -= n as u64;
                continue;
            }
            match &mut self.state {
                State::Between => match data[i] {
                    0 => {
                        i += 1;
                        self.pos += 1;
                    }
                    b'0' if self.pos % 4 == 0 => self.state = State::Header,
                    _ => return Ok(i),
                },
                State::Header => {
                    let n = (HEADER - self.buf.len()).min(data.len() - i);
                    self.buf.extend_from_slice(&data[i..i + n]);
                    i += n;
                    self.pos += n as u64;
                    if self.buf.len() < HEADER {
                        continue;
                    }
                    let h = std::mem::take(&mut self.buf);
                    if &h[..6] != b"070701" && &h[..6] != b"070702" {
                        bail!(
                            "not a cpio newc header at byte {} of the stream",
                            self.pos - HEADER as u64
                        );
                    }
                    let mode = hex_field(&h, 1)? as u32;
                    let filesize = hex_field(&h, 6)?;
                    let namesize = hex_field(&h, 11)? as usize;
                    if namesize == 0 || namesize > MAX_NAME {
                        bail!("a cpio entry's name is {namesize} bytes long");
                    }
                    self.state = State::Name {
                        namesize,
                        filesize,
                        regular: mode & S_IFMT == S_IFREG,
                    };
                }
                State::Name {
                    namesize,
                    filesize,
                    regular,
                } => {
                    let (namesize, filesize, regular) = (*namesize, *filesize, *regular);
                    let n = (namesize - self.buf.len()).min(data.len() - i);
                    self.buf.extend_from_slice(&data[i..i + n]);
                    i += n;
                    self.pos += n as u64;
                    if self.buf.len() < namesize {
                        continue;
                    }
                    let raw = std::mem::take(&mut self.buf);
                    let name = String::from_utf8_lossy(&raw[..namesize - 1]).into_owned();
                    self.skip = pad4(self.pos);
                    if name == "TRAILER!!!" {
                        self.archives += 1;
                        self.state = State::Between;
                        continue;
                    }
                    let path = name
                        .trim_start_matches("./")
                        .trim_start_matches('/')
                        .to_string();
                    let keep = regular && (self.want)(&path);
                    self.paths.push(path.clone());
                    if keep {
                        self.files.insert(path.clone(), Vec::new());
                    }
                    self.state = State::Data {
                        name: keep.then_some(path),
                        left: filesize,
                    };
                    if filesize == 0 {
                        self.end_data();
                    }
                }
                State::Data { name, left } => {
                    let n = (*left).min((data.len() - i) as u64) as usize;
                    if let Some(p) = name
                        && let Some(f) = self.files.get_mut(p)
                    {
                        f.extend_from_slice(&data[i..i + n]);
                    }
                    *left -= n as u64;
                    i += n;
                    self.pos += n as u64;
                    if *left == 0 {
                        self.end_data();
                    }
                }
            }
        }
        Ok(i)
    }

    fn end_data(&mut self) {
        self.skip += pad4(self.pos + self.skip);
        self.state = State::Header;
    }
}

impl std::io::Write for Sink<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self
            .feed(data)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{e:#}")))?;
        if n < data.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "data after a cpio archive that is not another archive",
            ));
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes a newc archive of regular files (tests and fuzzing build inputs with it).
pub fn build(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut entry = |name: &str, mode: u32, data: &[u8]| {
        let namesize = name.len() + 1;
        out.extend_from_slice(
            format!(
                "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
                0, mode, 0, 0, 1, 0, data.len(), 0, 0, 0, 0, namesize, 0
            )
            .as_bytes(),
        );
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.resize(out.len() + pad4(out.len() as u64) as usize, 0);
        out.extend_from_slice(data);
        out.resize(out.len() + pad4(out.len() as u64) as usize, 0);
    };
    for (name, data) in files {
        entry(name, S_IFREG | 0o644, data);
    }
    entry("TRAILER!!!", 0, &[]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_wanted_files_whatever_the_chunking() {
        let mut a = build(&[
            ("usr/lib/modules/6.12/kernel/x.ko", b"ELF..."),
            ("./etc/modprobe.d/guestprep.conf", b"blacklist xe\n"),
            ("empty", b""),
        ]);
        a.extend_from_slice(&[0; 512]); // padding between archives
        a.extend_from_slice(&build(&[("second", b"2")]));
        for chunk in [1, 3, 7, 110, 4096] {
            let want = |p: &str| p.starts_with("etc/") || p == "second";
            let mut s = Sink::new(&want);
            for c in a.chunks(chunk) {
                assert_eq!(s.feed(c).unwrap(), c.len(), "chunk {chunk}");
            }
            assert!(s.at_boundary());
            assert_eq!(s.archives, 2);
            assert_eq!(
                s.paths,
                [
                    "usr/lib/modules/6.12/kernel/x.ko",
                    "etc/modprobe.d/guestprep.conf",
                    "empty",
                    "second"
                ]
            );
            assert_eq!(s.files["etc/modprobe.d/guestprep.conf"], b"blacklist xe\n");
            assert_eq!(s.files["second"], b"2");
            assert_eq!(s.files.len(), 2);
        }
    }

    #[test]
    fn stops_at_a_compressed_segment_and_refuses_garbage() {
        let mut a = build(&[("kernel/x86/microcode/GenuineIntel.bin", b"mc")]);
        let n = a.len();
        a.extend_from_slice(&[0x28, 0xb5, 0x2f, 0xfd, 1, 2]);
        let none = |_: &str| false;
        let mut s = Sink::new(&none);
        assert_eq!(s.feed(&a).unwrap(), n);
        let mut s = Sink::new(&none);
        assert!(s.feed(b"070701zzzzzzzz").is_ok()); // incomplete: waits for more
        assert!(s.feed(&[b'0'; 200]).is_err());
        // A huge name is refused, not buffered.
        let mut h = build(&[("x", b"")]);
        h[94..102].copy_from_slice(b"7fffffff");
        assert!(Sink::new(&none).feed(&h).is_err());
    }
}
