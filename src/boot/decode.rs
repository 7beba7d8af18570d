//! Bounded decompression of what an initramfs and a kernel module are stored as: zstd, xz or
//! gzip, read through `std::io::Read` in chunks of at most the caller's buffer (never a whole
//! block or stream at once), within the [`Limits`]: a decoder window no larger than allowed, every
//! output byte spent from the reading's [`Budget`], and a stream that expands more than
//! `max_ratio`:1 past its first `ratio_grace` bytes stopped as the bomb it is.
//!
//! xz is read with `xz4rust`, a memory-safe port of xz-embedded (the decoder the kernel itself
//! unpacks an initramfs with): its dictionary is allocated at the size the stream declares,
//! refused above the limit, and written only as far as output goes. `lzma-rs`, used before,
//! decodes a whole xz block into memory before returning any of it (and its LZMA2 decoder keeps
//! the whole output until a dictionary reset), so a 150 KB file holding one 1 GiB block cost
//! 2 GiB; the C liblzma (`xz2`/`liblzma` crates) would bound memory too, at the price of a C
//! build and unsafe FFI in a crate that forbids `unsafe`.

use std::cell::Cell;
use std::io::{BufRead, Read};
use std::rc::Rc;

use super::limits::{Budget, Exceeded, io};

/// A compressed stream's format, by its magic number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Zstd,
    Xz,
    Gzip,
}

impl Format {
    pub fn sniff(head: &[u8]) -> Option<Format> {
        if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Format::Zstd)
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Some(Format::Xz)
        } else if head.starts_with(&[0x1f, 0x8b]) {
            Some(Format::Gzip)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Zstd => "zstd",
            Format::Xz => "xz",
            Format::Gzip => "gzip",
        }
    }
}

/// What else a segment may be compressed with, for the message that guestprep does not read it.
pub fn other_magic(head: &[u8]) -> &'static str {
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

/// The bounds of one stream.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Names the stream in messages ("the initramfs", "a module").
    pub what: &'static str,
    pub max_window: u64,
    pub max_ratio: u64,
    pub ratio_grace: u64,
}

/// Counts the compressed bytes a decoder takes from its source.
struct Counted<R> {
    r: R,
    n: Rc<Cell<u64>>,
}

impl<R: BufRead> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.r.read(buf)?;
        self.n.set(self.n.get() + n as u64);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counted<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.r.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.n.set(self.n.get() + amt as u64);
        self.r.consume(amt);
    }
}

/// A decompressed stream within its bounds and the reading's budget.
pub struct Decoder<'a> {
    inner: Box<dyn Read + 'a>,
    input: Rc<Cell<u64>>,
    output: u64,
    bounds: Bounds,
    budget: &'a Budget,
}

impl<'a> Decoder<'a> {
    /// A decoder of `format` reading `r`, which is positioned at the magic number.
    pub fn new(
        format: Format,
        r: impl BufRead + 'a,
        bounds: Bounds,
        budget: &'a Budget,
    ) -> Decoder<'a> {
        let input = Rc::new(Cell::new(0));
        let r = Counted {
            r,
            n: input.clone(),
        };
        let inner: Box<dyn Read + 'a> = match format {
            Format::Zstd => Box::new(Zstd::new(r, bounds)),
            Format::Xz => Box::new(Xz::new(r, bounds)),
            Format::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        };
        Decoder {
            inner,
            input,
            output: 0,
            bounds,
            budget,
        }
    }

    /// Decompressed bytes so far.
    pub fn output(&self) -> u64 {
        self.output
    }
}

impl Read for Decoder<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.output += n as u64;
        self.budget.spend(n as u64).map_err(io)?;
        let b = &self.bounds;
        let input = self.input.get().max(1);
        if self.output > b.ratio_grace && self.output / input > b.max_ratio {
            return Err(io(Exceeded::Ratio {
                what: b.what,
                ratio: b.max_ratio,
                output: self.output,
                input,
            }));
        }
        Ok(n)
    }
}

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

/// An xz stream (one; what follows it is not read).
struct Xz<R> {
    r: R,
    dec: Box<xz4rust::XzDecoder<'static>>,
    bounds: Bounds,
    done: bool,
}

impl<R: BufRead> Xz<R> {
    fn new(r: R, bounds: Bounds) -> Xz<R> {
        // The dictionary is allocated when the block header declares its size, up to the limit.
        let max = usize::try_from(bounds.max_window).unwrap_or(usize::MAX);
        let dec = Box::new(xz4rust::XzDecoder::with_alloc_dict_size(4096, max));
        Xz {
            r,
            dec,
            bounds,
            done: false,
        }
    }
}

impl<R: BufRead> Read for Xz<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use xz4rust::{XzError, XzNextBlockResult as N};
        while !self.done && !buf.is_empty() {
            let input = self.r.fill_buf()?;
            if input.is_empty() {
                return Err(invalid("xz: the stream is truncated".into()));
            }
            match self.dec.decode(input, buf) {
                Ok(N::NeedMoreData(used, made)) => {
                    self.r.consume(used);
                    if made > 0 {
                        return Ok(made);
                    }
                }
                Ok(N::EndOfStream(used, made)) => {
                    self.r.consume(used);
                    self.done = true;
                    return Ok(made);
                }
                Err(XzError::DictionaryTooLarge(size)) => {
                    return Err(io(Exceeded::Window {
                        what: self.bounds.what,
                        format: "xz",
                        size,
                        limit: self.bounds.max_window,
                    }));
                }
                Err(XzError::NeedsLargerInputBuffer) => {
                    return Err(invalid("xz: the stream is truncated or corrupt".into()));
                }
                Err(e) => return Err(invalid(format!("xz: {e}"))),
            }
        }
        Ok(0)
    }
}

/// zstd frames, one after another (skippable frames skipped), up to a byte that starts none.
struct Zstd<R> {
    r: R,
    dec: ruzstd::decoding::FrameDecoder,
    in_frame: bool,
    bounds: Bounds,
}

const SKIPPABLE: std::ops::RangeInclusive<u32> = 0x184D_2A50..=0x184D_2A5F;

impl<R: BufRead> Zstd<R> {
    fn new(r: R, bounds: Bounds) -> Zstd<R> {
        let mut dec = ruzstd::decoding::FrameDecoder::new();
        dec.set_max_window_size(bounds.max_window);
        Zstd {
            r,
            dec,
            in_frame: false,
            bounds,
        }
    }

    /// Starts the next frame; false when the input does not continue with one (what follows the
    /// last frame is not read).
    fn next_frame(&mut self) -> std::io::Result<bool> {
        use ruzstd::decoding::errors::FrameDecoderError as E;
        loop {
            let mut magic = [0u8; 4];
            if read_up_to(&mut self.r, &mut magic)? < 4 {
                return Ok(false);
            }
            let m = u32::from_le_bytes(magic);
            if SKIPPABLE.contains(&m) {
                let mut len = [0u8; 4];
                self.r.read_exact(&mut len)?;
                let len = u32::from_le_bytes(len) as u64;
                let skipped = std::io::copy(&mut (&mut self.r).take(len), &mut std::io::sink())?;
                if skipped < len {
                    return Err(invalid("zstd: a skippable frame is truncated".into()));
                }
                continue;
            }
            if m != 0xFD2F_B528 {
                return Ok(false);
            }
            return match self.dec.reset((&magic[..]).chain(&mut self.r)) {
                Ok(()) => {
                    self.in_frame = true;
                    Ok(true)
                }
                Err(E::WindowSizeTooBig { requested, max }) => Err(io(Exceeded::Window {
                    what: self.bounds.what,
                    format: "zstd",
                    size: requested,
                    limit: max,
                })),
                Err(e) => Err(invalid(format!("zstd: {e}"))),
            };
        }
    }
}

/// The first `n` bytes of `r` (fewer only at its end), and a reader that gives them again, then
/// the rest: a magic number is read whole however the input is split into reads (a `fill_buf`
/// may return a single byte at a buffer's end).
pub type Peeked<R> = std::io::Chain<std::io::Cursor<Vec<u8>>, R>;

pub fn peek<R: BufRead>(mut r: R, n: usize) -> std::io::Result<(Vec<u8>, Peeked<R>)> {
    let mut head = vec![0u8; n];
    let k = read_up_to(&mut r, &mut head)?;
    head.truncate(k);
    Ok((head.clone(), std::io::Cursor::new(head).chain(r)))
}

/// Reads until `buf` is full or the input ends; how many bytes were read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

impl<R: BufRead> Read for Zstd<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use ruzstd::decoding::BlockDecodingStrategy;
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame && !self.next_frame()? {
                return Ok(0);
            }
            while self.dec.can_collect() == 0 && !self.dec.is_finished() {
                self.dec
                    .decode_blocks(&mut self.r, BlockDecodingStrategy::UptoBlocks(1))
                    .map_err(|e| invalid(format!("zstd: {e}")))?;
            }
            let n = self.dec.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            if let (Some(want), Some(got)) = (
                self.dec.get_checksum_from_data(),
                self.dec.get_calculated_checksum(),
            ) && want != got
            {
                return Err(invalid("zstd: a frame's checksum does not match".into()));
            }
            self.in_frame = false;
        }
    }
}
