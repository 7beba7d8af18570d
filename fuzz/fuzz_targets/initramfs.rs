//! Fuzz target: the initramfs reader (early cpio archives, then a zstd, xz or gzip segment, and
//! the modules in it, themselves plain or compressed). Properties, for any input:
//! - a reading or an error, never a panic, an abort or a hang, within small budgets;
//! - the same answer however the input is split into reads (the decoders and the cpio reader
//!   are incremental: a chunk boundary must not change what they see).
#![no_main]

use std::io::Read;

use guestprep::boot::initramfs::{Query, Want, read};
use guestprep::boot::limits::Limits;
use libfuzzer_sys::fuzz_target;

/// Hands out at most 3 bytes per read.
struct Trickle<'a>(&'a [u8]);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(3).min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

fuzz_target!(|data: &[u8]| {
    // The ratio check depends on when a decoder returns; off, so both readings must agree.
    let limits = Limits {
        max_output: 8 << 20,
        max_ratio: u64::MAX,
        max_entries: 10_000,
        max_window: 8 << 20,
        module_window: 1 << 20,
        max_module: 4 << 20,
        keep_module: 1 << 20,
        ..Limits::DEFAULT
    };
    let want = |p: &str| {
        if guestprep::boot::kmod::module_name(p).is_some() {
            Some(Want::Module)
        } else if p.starts_with("etc/") {
            Some(Want::File)
        } else {
            None
        }
    };
    let q = Query {
        want: &want,
        enough: &|_| false,
    };
    let whole = read(data, &q, &limits);
    let trickled = read(Trickle(data), &q, &limits);
    match (whole, trickled) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "the reading depends on the chunking"),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("whole: {a:?}\ntrickled: {b:?}"),
    }
});
