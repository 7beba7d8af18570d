//! The budgets an initramfs (and each kernel module read from it or from disk) is read within, so
//! that memory stays bounded and time linear in the input for any file, however hostile: an
//! image is untrusted input, and the release build aborts on a panic or a failed allocation.
//!
//! | budget | default | why that number |
//! | --- | --- | --- |
//! | decompressed bytes, image and modules together | 1 GiB | a real initramfs is 40–100 MiB |
//! | expansion of one stream past its first 16 MiB | 200:1 | real ones are 3–8:1; zeros reach 1000:1 (gzip) and more (xz, zstd) |
//! | cpio entries | 100 000 | a real initramfs has 1 000–5 000 |
//! | a name | 4096 bytes | `PATH_MAX` |
//! | the image's decoder window (xz dictionary, zstd window) | 64 MiB | `xz -9`'s dictionary; `zstd -21`'s window |
//! | a module's decoder window | 16 MiB | kernels compress modules with 1–2 MiB, DKMS with `xz` (8 MiB) or `zstd` |
//! | one module, decompressed | 256 MiB | i915 is about 10 MiB, nvidia about 100 MiB |
//! | a module kept whole to read its `.modinfo` | 32 MiB | larger ones are identified by their sha256 alone |
//!
//! A stream's window is touched only as far as it has output, so memory stays under about
//! 64 + 16 + 32 MiB whatever the input, and far less for a real image.

use std::cell::Cell;

/// What exceeded a budget. Typed: tests and the report tell a bomb from a corrupt image.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Exceeded {
    #[error(
        "it decompresses to more than {limit} bytes (with the modules in it), guestprep's limit: a real initramfs is 40-100 MiB"
    )]
    Output { limit: u64 },
    #[error(
        "{what} expands more than {ratio}:1 ({output} bytes from {input}): a decompression bomb, not an initramfs"
    )]
    Ratio {
        what: &'static str,
        ratio: u64,
        output: u64,
        input: u64,
    },
    #[error("it has more than {limit} cpio entries, guestprep's limit")]
    Entries { limit: u64 },
    #[error("a cpio entry's name is {len} bytes long, more than the {limit} guestprep reads")]
    Name { len: u64, limit: u64 },
    #[error(
        "{what}'s {format} stream needs a window of {size} bytes, more than the {limit} guestprep allows"
    )]
    Window {
        what: &'static str,
        format: &'static str,
        size: u64,
        limit: u64,
    },
    #[error("{what} is more than {limit} bytes decompressed, guestprep's limit for a module")]
    Module { what: String, limit: u64 },
}

/// The budgets; [`Limits::DEFAULT`] is what guestprep uses (the table above).
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_output: u64,
    pub max_ratio: u64,
    pub ratio_grace: u64,
    pub max_entries: u64,
    pub max_name: u64,
    pub max_window: u64,
    pub module_window: u64,
    pub max_module: u64,
    pub keep_module: u64,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        max_output: 1 << 30,
        max_ratio: 200,
        ratio_grace: 16 << 20,
        max_entries: 100_000,
        max_name: 4096,
        max_window: 64 << 20,
        module_window: 16 << 20,
        max_module: 256 << 20,
        keep_module: 32 << 20,
    };
}

/// Decompressed bytes left to spend, shared by every decoder of one reading (the image's and
/// those of the modules inside it).
#[derive(Debug)]
pub struct Budget {
    left: Cell<u64>,
    limit: u64,
}

impl Budget {
    pub fn new(limit: u64) -> Budget {
        Budget {
            left: Cell::new(limit),
            limit,
        }
    }

    /// Spends `n` bytes; an error once the budget is gone.
    pub fn spend(&self, n: u64) -> Result<(), Exceeded> {
        match self.left.get().checked_sub(n) {
            Some(l) => {
                self.left.set(l);
                Ok(())
            }
            None => Err(Exceeded::Output { limit: self.limit }),
        }
    }
}

/// The [`Exceeded`] an I/O error carries, if any (decoders report through `std::io::Read`).
pub fn lift(e: std::io::Error) -> anyhow::Error {
    if !e.get_ref().is_some_and(|i| i.is::<Exceeded>()) {
        return anyhow::Error::new(e);
    }
    match e.into_inner().map(|i| i.downcast::<Exceeded>()) {
        Some(Ok(x)) => anyhow::Error::new(*x),
        Some(Err(other)) => anyhow::anyhow!("{other}"),
        None => anyhow::anyhow!("an I/O error"),
    }
}

/// An I/O error carrying `x`.
pub fn io(x: Exceeded) -> std::io::Error {
    std::io::Error::other(x)
}
