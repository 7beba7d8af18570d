//! The root every path goes through.
//!
//! Owns turning an absolute path of the managed system (`/etc/sysctl.d/x.conf`) into a host path
//! inside the root directory, following symlinks *inside* the root the way systemd's `chase()`
//! does (an absolute link target is re-rooted, `..` never climbs above the root), so an offline
//! image can never make guestprep read or write the host. No other module builds a host path from
//! a string.
//!
//! Reads of an offline root go through `openat2(RESOLVE_IN_ROOT)`: the kernel confines the whole
//! resolution to the root, race-free, in one system call (the userspace chase is the fallback on
//! kernels without it).

use std::ffi::OsString;
use std::io::ErrorKind;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};

/// The system being managed: a directory, and whether it is the running system.
#[derive(Clone, Debug)]
pub struct Root {
    dir: PathBuf,
    live: bool,
    /// The root directory, for `openat2` relative to it.
    fd: Arc<OwnedFd>,
}

/// What is at a path, its last component not followed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Missing,
    File {
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Dir {
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Symlink(PathBuf),
    /// A device, socket or FIFO: what it is, for messages.
    Other(&'static str),
}

/// A path guestprep owns is a symlink: it never writes through one (the link could point at any
/// other file of the image, or be made to). Typed, so a resource can report it as such.
#[derive(Debug, thiserror::Error)]
#[error(
    "{path} is a symlink (to {}): guestprep writes only regular files at the paths it owns, never through a link; remove the link",
    target.display()
)]
pub struct SymlinkAtOwnedPath {
    pub path: String,
    pub target: PathBuf,
}

/// Where a path of the managed system is, found once for every read.
enum At {
    /// Opened by the kernel, the resolution confined to the root (`openat2`).
    Fd(OwnedFd),
    /// The host path found by the userspace chase: on the live system, or where the kernel has no
    /// `openat2` (or a filter refuses it).
    Path(PathBuf),
    Missing,
}

const MAX_SYMLINKS: usize = 40;

impl Root {
    /// Opens a root. It is *live* (the running system: /proc, services, update-grub) only when it is
    /// `/` itself; any other directory is an offline image.
    pub fn new(dir: &Path) -> Result<Self> {
        let canon = std::fs::canonicalize(dir)
            .with_context(|| format!("root directory {}", dir.display()))?;
        if !canon.is_dir() {
            bail!("root {} is not a directory", dir.display());
        }
        let live = canon == Path::new("/");
        let fd = nix::fcntl::open(
            &canon,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .with_context(|| format!("opening root directory {}", canon.display()))?;
        Ok(Root {
            dir: canon,
            live,
            fd: Arc::new(fd),
        })
    }

    /// Where `abs` is: offline, opened with `flags` by the kernel inside the root; live, its host
    /// path (the one place a read chooses between the two).
    fn locate(&self, abs: &str, flags: OFlag) -> Result<At> {
        if self.live {
            Ok(At::Path(self.resolve(abs)?))
        } else {
            self.open_in(abs, flags)
        }
    }

    /// `abs` opened with `flags`, every symlink followed inside the root; `None` if it does not
    /// exist.
    fn open_fd(&self, abs: &str, flags: OFlag) -> Result<Option<OwnedFd>> {
        self.fd_at(self.locate(abs, flags)?, flags)
    }

    /// The descriptor of what [`Root::locate`] found: a host path is opened with `flags`.
    fn fd_at(&self, at: At, flags: OFlag) -> Result<Option<OwnedFd>> {
        let p = match at {
            At::Fd(fd) => return Ok(Some(fd)),
            At::Missing => return Ok(None),
            At::Path(p) => p,
        };
        match nix::fcntl::open(&p, flags | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty()) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::ENOENT | Errno::ENOTDIR) => Ok(None),
            Err(e) => {
                Err(std::io::Error::from(e)).with_context(|| format!("opening {}", p.display()))
            }
        }
    }

    /// Opens `abs` inside the root with the kernel doing the confined resolution; the userspace
    /// chase's host path where the kernel cannot.
    fn open_in(&self, abs: &str, flags: OFlag) -> Result<At> {
        let rel = relative(abs)?;
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        match openat2(self.fd.as_ref(), rel, how) {
            Ok(fd) => Ok(At::Fd(fd)),
            Err(Errno::ENOENT | Errno::ENOTDIR) => Ok(At::Missing),
            Err(Errno::ENOSYS | Errno::EPERM) => Ok(At::Path(self.resolve(abs)?)),
            Err(e) => Err(std::io::Error::from(e))
                .with_context(|| format!("opening {abs} in {}", self.dir.display())),
        }
    }

    /// An offline view of `dir` even if it is `/` (used by tests and `--offline`).
    pub fn offline(dir: &Path) -> Result<Self> {
        let mut r = Root::new(dir)?;
        r.live = false;
        Ok(r)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn is_live(&self) -> bool {
        self.live
    }

    /// The host path of `abs` inside the root, lexically (symlinks not followed).
    /// `abs` must be absolute and must not contain `..`.
    pub fn path(&self, abs: &str) -> Result<PathBuf> {
        let rel = relative(abs)?;
        Ok(self.dir.join(rel))
    }

    /// The host path of `abs`, with every symlink followed inside the root. A missing tail is kept
    /// as is (the result may not exist yet).
    pub fn resolve(&self, abs: &str) -> Result<PathBuf> {
        let rel = relative(abs)?;
        let mut todo: Vec<OsString> = rel
            .components()
            .rev()
            .map(|c| c.as_os_str().to_owned())
            .collect();
        let mut done = PathBuf::new(); // relative to the root, symlink-free
        let mut hops = 0;
        while let Some(name) = todo.pop() {
            if name == ".." {
                done.pop();
                continue;
            }
            if name == "." || name.is_empty() {
                continue;
            }
            let candidate = done.join(&name);
            let host = self.dir.join(&candidate);
            match std::fs::symlink_metadata(&host) {
                Ok(m) if m.file_type().is_symlink() => {
                    hops += 1;
                    if hops > MAX_SYMLINKS {
                        bail!(
                            "too many levels of symbolic links resolving {abs} in {}",
                            self.dir.display()
                        );
                    }
                    let target = std::fs::read_link(&host)
                        .with_context(|| format!("reading symlink {}", host.display()))?;
                    if target.is_absolute() {
                        done = PathBuf::new();
                    }
                    for c in target.components().rev() {
                        match c {
                            Component::RootDir | Component::Prefix(_) => {}
                            other => todo.push(other.as_os_str().to_owned()),
                        }
                    }
                }
                Ok(_) => done = candidate,
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    done = candidate;
                    // The rest cannot contain symlinks: it does not exist.
                    while let Some(n) = todo.pop() {
                        if n == ".." {
                            done.pop();
                        } else if n != "." {
                            done.push(n);
                        }
                    }
                }
                Err(e) => return Err(e).with_context(|| format!("inspecting {}", host.display())),
            }
        }
        Ok(self.dir.join(done))
    }

    /// Opens a file of the managed system for reading; `None` if it does not exist. Non-blocking
    /// (a FIFO never blocks the open) and refused unless it is a regular file
    /// ([`NotRegular`](crate::saferead::NotRegular), naming the path and its type).
    pub fn open(&self, abs: &str) -> Result<Option<std::fs::File>> {
        let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        let Some(fd) = self.open_fd(abs, flags)? else {
            return Ok(None);
        };
        let file = std::fs::File::from(fd);
        crate::saferead::regular(&file, &self.what(abs))?;
        Ok(Some(file))
    }

    /// `abs` as messages name it: the path alone on `/`, with the image's directory offline.
    pub fn what(&self, abs: &str) -> String {
        if self.live {
            abs.to_string()
        } else {
            format!("{abs} in {}", self.describe())
        }
    }

    /// Reads a file of the managed system; `None` if it does not exist. At most what
    /// [`limit_for`](crate::saferead::limit_for) allows for that path: a larger file is an error.
    pub fn read(&self, abs: &str) -> Result<Option<Vec<u8>>> {
        self.read_limited(abs, crate::saferead::limit_for(abs))
    }

    /// [`Root::read`] with the limit that fits the file (a database, an archive's tables).
    pub fn read_limited(&self, abs: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        let Some(mut f) = self.open(abs)? else {
            return Ok(None);
        };
        crate::saferead::read_bounded(&mut f, &self.what(abs), limit).map(Some)
    }

    /// Reads a text file of the managed system (lossy UTF-8); `None` if it does not exist.
    pub fn read_string(&self, abs: &str) -> Result<Option<String>> {
        Ok(self
            .read(abs)?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// Names in a directory of the managed system, sorted; empty if it does not exist.
    pub fn list_dir(&self, abs: &str) -> Result<Vec<String>> {
        let Some(fd) = self.open_fd(abs, OFlag::O_RDONLY | OFlag::O_DIRECTORY)? else {
            return Ok(Vec::new());
        };
        let mut dir = nix::dir::Dir::from_fd(fd).with_context(|| format!("listing {abs}"))?;
        let mut names: Vec<String> = dir
            .iter()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "." && n != "..")
            .collect();
        names.sort();
        Ok(names)
    }

    /// When `abs` was last modified (following symlinks inside the root); `None` if it does not
    /// exist.
    pub fn modified(&self, abs: &str) -> Result<Option<std::time::SystemTime>> {
        let Some(fd) = self.open_fd(abs, OFlag::O_PATH)? else {
            return Ok(None);
        };
        let st = nix::sys::stat::fstat(&fd)
            .with_context(|| format!("inspecting {abs} in {}", self.dir.display()))?;
        Ok(Some(
            std::time::UNIX_EPOCH
                + std::time::Duration::new(
                    u64::try_from(st.st_mtime).unwrap_or(0),
                    u32::try_from(st.st_mtime_nsec).unwrap_or(0),
                ),
        ))
    }

    /// Whether `abs` exists in the managed system (following symlinks inside the root).
    pub fn exists(&self, abs: &str) -> bool {
        matches!(self.open_fd(abs, OFlag::O_PATH), Ok(Some(_)))
    }

    /// Opens the directory `abs` inside the root (the kernel confines the resolution: a symlink
    /// anywhere on the way resolves inside the root). With `create`, missing directories are made
    /// one component at a time with `mkdirat` on their parent's descriptor (0755), so nothing is
    /// created through a link. `None` when it is missing and not created.
    pub fn open_dir(&self, abs: &str, create: bool) -> Result<Option<OwnedFd>> {
        let rel = relative(abs)?;
        match self.open_in(abs, OFlag::O_RDONLY | OFlag::O_DIRECTORY)? {
            At::Fd(fd) => return Ok(Some(fd)),
            At::Missing if !create => return Ok(None),
            At::Missing => {}
            At::Path(p) => {
                // No openat2: the userspace chase, then an open that does not follow the last
                // component (the chase resolved every link).
                if create {
                    std::fs::create_dir_all(&p)
                        .with_context(|| format!("creating directory {}", p.display()))?;
                }
                return match nix::fcntl::open(
                    &p,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                ) {
                    Ok(fd) => Ok(Some(fd)),
                    Err(Errno::ENOENT) => Ok(None),
                    Err(e) => Err(std::io::Error::from(e))
                        .with_context(|| format!("opening directory {}", p.display())),
                };
            }
        }
        // Create what is missing, from the top.
        let mut done = PathBuf::from("/");
        let mut parent: OwnedFd = match self.open_in("/", OFlag::O_RDONLY | OFlag::O_DIRECTORY)? {
            At::Fd(fd) => fd,
            _ => bail!("cannot open the root directory {}", self.dir.display()),
        };
        for c in rel.components() {
            let Component::Normal(name) = c else { continue };
            done.push(name);
            let here = done.to_string_lossy().into_owned();
            parent = match self.open_in(&here, OFlag::O_RDONLY | OFlag::O_DIRECTORY)? {
                At::Fd(fd) => fd,
                // A dangling symlink: create where it leads, inside the root (as systemd's chase
                // does with CHASE_MKDIR_0755).
                _ if matches!(node_at(&parent, &name.to_string_lossy())?, Node::Symlink(_)) => {
                    let target = self.resolve(&here)?;
                    let inside = target
                        .strip_prefix(&self.dir)
                        .with_context(|| format!("{here} leads outside {}", self.dir.display()))?;
                    let abs = format!("/{}", inside.display());
                    if abs == here || depth_of(&abs) > MAX_SYMLINKS {
                        bail!(
                            "{here} in {} is not a directory guestprep can use",
                            self.dir.display()
                        );
                    }
                    self.open_dir(&abs, true)?
                        .with_context(|| format!("creating {abs} in {}", self.dir.display()))?
                }
                _ => {
                    match nix::sys::stat::mkdirat(
                        &parent,
                        name,
                        nix::sys::stat::Mode::from_bits_truncate(0o755),
                    ) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => {
                            return Err(std::io::Error::from(e)).with_context(|| {
                                format!("creating directory {here} in {}", self.dir.display())
                            });
                        }
                    }
                    let _ = nix::unistd::fsync(&parent);
                    match self.open_in(&here, OFlag::O_RDONLY | OFlag::O_DIRECTORY)? {
                        At::Fd(fd) => fd,
                        _ => bail!(
                            "{here} in {} is not a directory guestprep can use",
                            self.dir.display()
                        ),
                    }
                }
            };
        }
        Ok(Some(parent))
    }

    /// The directory holding `abs`, opened (and created with `create`), and the final name.
    pub fn parent_of(&self, abs: &str, create: bool) -> Result<Option<(OwnedFd, String)>> {
        let rel = relative(abs)?;
        let name = rel
            .file_name()
            .with_context(|| format!("{abs} has no file name"))?
            .to_string_lossy()
            .into_owned();
        let parent = Path::new(abs)
            .parent()
            .map_or("/".to_string(), |p| p.to_string_lossy().into_owned());
        Ok(self.open_dir(&parent, create)?.map(|fd| (fd, name)))
    }

    /// What is at `abs`, its parents resolved inside the root, its last component not followed.
    pub fn lstat(&self, abs: &str) -> Result<Node> {
        let Some((dir, name)) = self.parent_of(abs, false)? else {
            return Ok(Node::Missing);
        };
        node_at(&dir, &name).with_context(|| format!("inspecting {abs} in {}", self.dir.display()))
    }

    /// The target of the symlink at `abs`; `None` when it is not a symlink.
    pub fn read_link(&self, abs: &str) -> Result<Option<PathBuf>> {
        Ok(match self.lstat(abs)? {
            Node::Symlink(t) => Some(t),
            _ => None,
        })
    }

    /// What `abs` is once every symlink (its last component too) is followed inside the root.
    pub fn stat(&self, abs: &str) -> Result<Node> {
        let Some(fd) = self.fd_at(self.open_in(abs, OFlag::O_PATH)?, OFlag::O_PATH)? else {
            return Ok(Node::Missing);
        };
        let st = nix::sys::stat::fstat(&fd)
            .with_context(|| format!("inspecting {abs} in {}", self.dir.display()))?;
        Ok(node_of(&st, None))
    }

    /// Reads the regular file at `abs` without following a symlink at its last component (a
    /// symlink is a [`SymlinkAtOwnedPath`] error); `None` if it does not exist.
    pub fn read_owned(&self, abs: &str) -> Result<Option<Vec<u8>>> {
        let Some((dir, name)) = self.parent_of(abs, false)? else {
            return Ok(None);
        };
        match nix::fcntl::openat(
            &dir,
            name.as_str(),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
            nix::sys::stat::Mode::empty(),
        ) {
            Ok(fd) => {
                let mut f = std::fs::File::from(fd);
                crate::saferead::regular(&f, &self.what(abs))?;
                crate::saferead::read_bounded(
                    &mut f,
                    &self.what(abs),
                    crate::saferead::CONFIG_LIMIT,
                )
                .map(Some)
            }
            Err(Errno::ENOENT) => Ok(None),
            Err(Errno::ELOOP) => Err(SymlinkAtOwnedPath {
                path: abs.to_string(),
                target: self.read_link(abs)?.unwrap_or_default(),
            }
            .into()),
            Err(e) => Err(std::io::Error::from(e))
                .with_context(|| format!("reading {abs} in {}", self.dir.display())),
        }
    }

    /// Describes the root for messages: `/` or `offline root /mnt/image`.
    pub fn describe(&self) -> String {
        if self.live {
            "/".to_string()
        } else {
            format!("offline root {}", self.dir.display())
        }
    }
}

/// What `name` in `dir` is, not following it.
pub fn node_at(dir: &OwnedFd, name: &str) -> Result<Node> {
    match nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => {
            let target = if st.st_mode & libc_mode::S_IFMT == libc_mode::S_IFLNK {
                Some(PathBuf::from(
                    nix::fcntl::readlinkat(dir, name).context("reading a symlink")?,
                ))
            } else {
                None
            };
            Ok(node_of(&st, target))
        }
        Err(Errno::ENOENT | Errno::ENOTDIR) => Ok(Node::Missing),
        Err(e) => Err(std::io::Error::from(e).into()),
    }
}

mod libc_mode {
    pub const S_IFMT: u32 = 0o170000;
    pub const S_IFLNK: u32 = 0o120000;
    pub const S_IFREG: u32 = 0o100000;
    pub const S_IFDIR: u32 = 0o040000;
}

fn node_of(st: &nix::sys::stat::FileStat, link: Option<PathBuf>) -> Node {
    #[allow(clippy::unnecessary_cast)]
    let mode = st.st_mode as u32;
    match mode & libc_mode::S_IFMT {
        libc_mode::S_IFLNK => Node::Symlink(link.unwrap_or_default()),
        libc_mode::S_IFREG => Node::File {
            mode: mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
        },
        libc_mode::S_IFDIR => Node::Dir {
            mode: mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
        },
        0o010000 => Node::Other("FIFO"),
        0o020000 => Node::Other("character device"),
        0o060000 => Node::Other("block device"),
        0o140000 => Node::Other("socket"),
        _ => Node::Other("special file"),
    }
}

fn depth_of(abs: &str) -> usize {
    abs.split('/').filter(|c| !c.is_empty()).count()
}

fn relative(abs: &str) -> Result<&Path> {
    let p = Path::new(abs);
    if !p.is_absolute() {
        bail!("internal error: path {abs:?} is not absolute");
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        bail!("internal error: path {abs:?} contains `..`");
    }
    Ok(p.strip_prefix("/").expect("absolute"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_stay_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path()).unwrap();
        std::fs::create_dir_all(t.path().join("etc/real")).unwrap();
        symlink("/etc/real", t.path().join("etc/abs")).unwrap();
        symlink("../../../../../../etc/real", t.path().join("etc/rel")).unwrap();
        symlink("/", t.path().join("etc/top")).unwrap();
        let want = root.dir().join("etc/real/f");
        assert_eq!(root.resolve("/etc/abs/f").unwrap(), want);
        assert_eq!(root.resolve("/etc/rel/f").unwrap(), want);
        assert_eq!(root.resolve("/etc/top/etc/real/f").unwrap(), want);
        assert!(!root.is_live());
    }

    #[test]
    fn reads_follow_links_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path()).unwrap();
        std::fs::create_dir_all(t.path().join("etc/real")).unwrap();
        std::fs::write(t.path().join("etc/real/b"), "x").unwrap();
        std::fs::write(t.path().join("etc/real/a"), "y").unwrap();
        symlink("/etc/real", t.path().join("etc/link")).unwrap();
        assert_eq!(root.list_dir("/etc/link").unwrap(), ["a", "b"]);
        assert_eq!(root.list_dir("/etc/none").unwrap(), Vec::<String>::new());
        assert!(root.exists("/etc/link/a") && !root.exists("/etc/link/c"));
        assert!(root.modified("/etc/link/a").unwrap().is_some());
        assert!(matches!(root.stat("/etc/link").unwrap(), Node::Dir { .. }));
        assert_eq!(root.stat("/etc/real/a/x").unwrap(), Node::Missing);
        let b = root.read_string("/etc/link/b").unwrap();
        assert_eq!(b.as_deref(), Some("x"));
    }

    #[test]
    fn symlink_loops_are_errors() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path()).unwrap();
        symlink("b", t.path().join("a")).unwrap();
        symlink("a", t.path().join("b")).unwrap();
        assert!(root.resolve("/a/x").is_err());
    }

    #[test]
    fn refuses_relative_and_dotdot() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path()).unwrap();
        assert!(root.path("etc/x").is_err());
        assert!(root.path("/etc/../x").is_err());
    }
}
