//! The one safe way to read a file.
//!
//! Every file guestprep reads (in an image, a policy fragment, a host file of `fleet` or `seal`)
//! comes through here: opened non-blocking (a FIFO never blocks the open), `fstat`ed on the open
//! descriptor, refused unless it is a regular file (a FIFO, device, socket or directory is a
//! [`NotRegular`] error naming the path and its type), and read with a size limit that fits what
//! the file is ([`TooLarge`] when exceeded, checked against the claimed size first so a sparse
//! 2 GB file costs nothing). Memory stays bounded for any input.
//!
//! [`Root`](crate::root::Root) uses [`regular`] and [`read_bounded`] on the descriptors it opens
//! inside the root; host paths use [`open_regular`] and [`read_regular`].

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::OFlag;

/// The limit for a configuration file (sshd_config, fstab, a policy fragment, a unit, a report).
pub const CONFIG_LIMIT: u64 = 16 << 20;
/// The limit for a database-like file read whole (dpkg's status, the locale archive's tables).
pub const DATABASE_LIMIT: u64 = 256 << 20;

/// The limit for `abs` (a path of the managed system): databases guestprep reads whole (dpkg's
/// status, the locale archive) may be large on a big system; every other file is a configuration.
pub fn limit_for(abs: &str) -> u64 {
    match abs {
        "/var/lib/dpkg/status" | "/usr/lib/locale/locale-archive" => DATABASE_LIMIT,
        _ => CONFIG_LIMIT,
    }
}

/// A path that is not a regular file where guestprep reads one.
#[derive(Debug, thiserror::Error)]
#[error("{path} is a {kind}, not a regular file: guestprep reads only regular files there")]
pub struct NotRegular {
    pub path: String,
    pub kind: &'static str,
}

/// A file larger than what guestprep reads for its kind.
#[derive(Debug, thiserror::Error)]
#[error("{path} is {size} bytes, more than the {limit} bytes guestprep reads for such a file")]
pub struct TooLarge {
    pub path: String,
    pub size: u64,
    pub limit: u64,
}

/// What kind of file `ft` is, for messages.
pub fn kind_of(ft: std::fs::FileType) -> &'static str {
    if ft.is_file() {
        "regular file"
    } else if ft.is_dir() {
        "directory"
    } else if ft.is_fifo() {
        "FIFO"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_symlink() {
        "symlink"
    } else {
        "special file"
    }
}

/// Refuses `f` unless it is a regular file; `what` names it in the error.
pub fn regular(f: &File, what: &str) -> Result<()> {
    let m = f.metadata().with_context(|| format!("inspecting {what}"))?;
    if m.file_type().is_file() {
        Ok(())
    } else {
        Err(NotRegular {
            path: what.to_string(),
            kind: kind_of(m.file_type()),
        }
        .into())
    }
}

/// Reads all of `f` (a regular file, see [`regular`]) up to `limit` bytes; more is [`TooLarge`].
pub fn read_bounded(f: &mut File, what: &str, limit: u64) -> Result<Vec<u8>> {
    let claimed = f
        .metadata()
        .with_context(|| format!("inspecting {what}"))?
        .len();
    if claimed > limit {
        return Err(TooLarge {
            path: what.to_string(),
            size: claimed,
            limit,
        }
        .into());
    }
    let mut buf = Vec::with_capacity(usize::try_from(claimed).unwrap_or(0).min(1 << 20));
    f.take(limit + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("reading {what}"))?;
    if buf.len() as u64 > limit {
        return Err(TooLarge {
            path: what.to_string(),
            size: buf.len() as u64,
            limit,
        }
        .into());
    }
    Ok(buf)
}

/// Opens a host path for reading: non-blocking, `O_CLOEXEC`, a regular file or an error. `None`
/// when it does not exist. Symlinks are followed (host paths given by the administrator).
pub fn open_regular(path: &Path) -> Result<Option<File>> {
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
    match nix::fcntl::open(path, flags, nix::sys::stat::Mode::empty()) {
        Ok(fd) => {
            let f = File::from(fd);
            regular(&f, &path.display().to_string())?;
            Ok(Some(f))
        }
        Err(Errno::ENOENT | Errno::ENOTDIR) => Ok(None),
        Err(e) => {
            Err(std::io::Error::from(e)).with_context(|| format!("opening {}", path.display()))
        }
    }
}

/// Reads a regular host file up to `limit` bytes; `None` when it does not exist.
pub fn read_regular(path: &Path, limit: u64) -> Result<Option<Vec<u8>>> {
    let Some(mut f) = open_regular(path)? else {
        return Ok(None);
    };
    read_bounded(&mut f, &path.display().to_string(), limit).map(Some)
}

/// [`read_regular`] as text (lossy UTF-8).
pub fn read_regular_string(path: &Path, limit: u64) -> Result<Option<String>> {
    Ok(read_regular(path, limit)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("fifo");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = read_regular(&p, CONFIG_LIMIT).unwrap_err();
        let nr = e.downcast_ref::<NotRegular>().expect("typed");
        assert_eq!(nr.kind, "FIFO");
    }

    #[test]
    fn a_character_device_is_refused() {
        let e = read_regular(Path::new("/dev/zero"), CONFIG_LIMIT).unwrap_err();
        assert_eq!(
            e.downcast_ref::<NotRegular>().unwrap().kind,
            "character device"
        );
    }

    #[test]
    fn a_sparse_giant_is_refused_by_its_claimed_size() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("big");
        let f = File::create(&p).unwrap();
        f.set_len(2 << 30).unwrap();
        let e = read_regular(&p, CONFIG_LIMIT).unwrap_err();
        let tl = e.downcast_ref::<TooLarge>().expect("typed");
        assert_eq!((tl.size, tl.limit), (2 << 30, CONFIG_LIMIT));
    }

    #[test]
    fn a_regular_file_within_its_limit_is_read_whole() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(read_regular(&p, 3).unwrap().unwrap(), b"abc");
        assert!(read_regular(&p, 2).unwrap_err().is::<TooLarge>());
        assert!(read_regular(&t.path().join("none"), 3).unwrap().is_none());
    }
}
