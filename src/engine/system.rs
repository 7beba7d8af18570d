//! [`System`]: the managed system, and the one door checks read it through.
//!
//! Owns the root and what may run against it (`--chroot`, `--retry-failed`), the units backend
//! (D-Bus live, `systemctl --root` semantics offline), and every read a check makes: recorded, so
//! the daemon watches everything a check depended on, and cached for one pass of checks (with
//! what was derived from it, such as the effective sysctl settings) until a change runs.

use std::any::Any;
use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use anyhow::Result;

use super::JOB_TIMEOUT;
use crate::root::Root;
use crate::systemd::{UnitManager, dbus::DbusUnits, offline::OfflineUnits};

/// How a run may act on its root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The running system (`/`): live values, D-Bus, programs.
    Live,
    /// An offline root whose own programs run inside it (`apply --chroot`); no live values.
    Chroot,
    /// An offline root: files only.
    Offline,
}

impl Mode {
    /// Whether the root's programs (apt-get, update-grub) may run: live or in a chroot.
    pub fn runs_programs(self) -> bool {
        matches!(self, Mode::Live | Mode::Chroot)
    }
}

/// The managed system: its root and what may run against it.
pub struct System {
    root: Root,
    /// Live, an offline root whose programs run inside it (`apply --chroot`), or offline.
    mode: Mode,
    /// Try again what failed before although nothing it depends on changed (a DKMS build).
    pub retry_failed: bool,
    pub(super) units: OnceCell<Result<Box<dyn UnitManager>, String>>,
    /// Files and directory listings read during one pass of checks: several items read the same
    /// configuration (every sysctl key reads all of sysctl.d). Cleared whenever a change runs.
    pub(super) reads: RefCell<HashMap<String, Option<String>>>,
    pub(super) dirs: RefCell<HashMap<String, Vec<String>>>,
    /// Paths inspected without their text being kept (an lstat, a binary read, a timestamp):
    /// watched by the daemon all the same.
    pub(super) seen: RefCell<std::collections::BTreeSet<String>>,
    /// What was derived from those reads and is shared by many items (the effective sysctl
    /// settings: every key's check needs all of sysctl.d parsed), by name. Cleared with them, so
    /// a value is never older than the reads it was made from.
    pub(super) derived: RefCell<HashMap<&'static str, Rc<dyn Any>>>,
    /// Changes started and changes that succeeded since the engine last reset them: how far an
    /// item's apply got (a resource may also fail between two changes, as a preflight does).
    pub(super) started: std::cell::Cell<usize>,
    pub(super) executed: std::cell::Cell<usize>,
    /// What the root is (os-release family, package manager, sshd's units), told once.
    pub(super) platform: OnceCell<crate::platform::Platform>,
}

impl System {
    pub fn new(root: Root) -> Self {
        let root_is_live = root.is_live();
        System {
            root,
            mode: if root_is_live {
                Mode::Live
            } else {
                Mode::Offline
            },
            retry_failed: false,
            units: OnceCell::new(),
            reads: RefCell::default(),
            dirs: RefCell::default(),
            seen: RefCell::default(),
            derived: RefCell::default(),
            started: std::cell::Cell::new(0),
            executed: std::cell::Cell::new(0),
            platform: OnceCell::new(),
        }
    }

    /// The root itself, for the use cases above the engine (the apply lock, seal, the report)
    /// and the engine's changes. A check reads through the recorded methods above instead
    /// (`tests/it/floors.rs` holds `resources/` to that).
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// What the root is: every resource that differs by platform asks this, never assumes
    /// Debian.
    pub fn platform(&self) -> &crate::platform::Platform {
        self.platform
            .get_or_init(|| crate::platform::Platform::detect(&self.root))
    }

    /// Reads a text file of the managed system (cached until the next change).
    pub fn read_string(&self, abs: &str) -> Result<Option<String>> {
        if let Some(v) = self.reads.borrow().get(abs) {
            return Ok(v.clone());
        }
        let v = self.root.read_string(abs)?;
        self.reads.borrow_mut().insert(abs.to_string(), v.clone());
        Ok(v)
    }

    /// Lists a directory of the managed system (cached until the next change).
    pub fn list_dir(&self, abs: &str) -> Result<Vec<String>> {
        if let Some(v) = self.dirs.borrow().get(abs) {
            return Ok(v.clone());
        }
        let v = self.root.list_dir(abs)?;
        self.dirs.borrow_mut().insert(abs.to_string(), v.clone());
        Ok(v)
    }

    fn saw(&self, abs: &str) {
        if !self.seen.borrow().contains(abs) {
            self.seen.borrow_mut().insert(abs.to_string());
        }
    }

    /// Reads a file of the managed system, bytes (recorded: the daemon watches it).
    pub fn read(&self, abs: &str) -> Result<Option<Vec<u8>>> {
        self.saw(abs);
        self.root.read(abs)
    }

    /// Reads a regular file without following a symlink at it (recorded).
    pub fn read_owned(&self, abs: &str) -> Result<Option<Vec<u8>>> {
        self.saw(abs);
        self.root.read_owned(abs)
    }

    /// Opens a regular file of the managed system for a streamed read (recorded).
    pub fn open(&self, abs: &str) -> Result<Option<std::fs::File>> {
        self.saw(abs);
        self.root.open(abs)
    }

    /// What is at `abs`, its last component not followed (recorded).
    pub fn lstat(&self, abs: &str) -> Result<crate::root::Node> {
        self.saw(abs);
        self.root.lstat(abs)
    }

    /// What `abs` is, every symlink followed inside the root (recorded).
    pub fn stat(&self, abs: &str) -> Result<crate::root::Node> {
        self.saw(abs);
        self.root.stat(abs)
    }

    /// Where a symlink at `abs` points, `None` when it is not a link (recorded).
    pub fn read_link(&self, abs: &str) -> Result<Option<std::path::PathBuf>> {
        self.saw(abs);
        self.root.read_link(abs)
    }

    /// Whether `abs` exists, symlinks followed inside the root (recorded).
    pub fn exists(&self, abs: &str) -> bool {
        self.saw(abs);
        self.root.exists(abs)
    }

    /// When `abs` was last modified (recorded).
    pub fn modified(&self, abs: &str) -> Result<Option<std::time::SystemTime>> {
        self.saw(abs);
        self.root.modified(abs)
    }

    /// `/` or `offline root DIR`, for messages.
    pub fn describe(&self) -> String {
        self.root.describe()
    }

    /// The root's path for `abs`, symlinks chased inside the root (recorded): for a program or a
    /// library that opens the file itself (a downloaded `.deb`), never for a check's own read.
    pub fn host_path(&self, abs: &str) -> Result<std::path::PathBuf> {
        self.saw(abs);
        self.root.resolve(abs)
    }

    /// How a path of the root is named in messages (`/etc/x` live, `DIR/etc/x` offline).
    pub fn what(&self, abs: &str) -> String {
        self.root.what(abs)
    }

    /// The root directory on this host, for messages and keys (`/` live).
    pub fn dir(&self) -> &std::path::Path {
        self.root.dir()
    }

    /// Kernels installed in the root that have headers (`/usr/lib/modules/KVER/build`), oldest
    /// first (recorded): the kernels DKMS can build for.
    pub fn kernels_with_headers(&self) -> Vec<String> {
        let mut k = crate::platform::kernels_in(|d| self.list_dir(d).unwrap_or_default());
        k.retain(|k| self.exists(&crate::platform::headers_dir(k)));
        k
    }

    /// The files read and the directories listed since the last change, in the root's terms:
    /// what the checks depend on, for the daemon to watch.
    pub fn touched_paths(&self) -> (Vec<String>, Vec<String>) {
        let mut files: Vec<String> = self.reads.borrow().keys().cloned().collect();
        files.extend(self.seen.borrow().iter().cloned());
        let mut dirs: Vec<String> = self.dirs.borrow().keys().cloned().collect();
        files.sort();
        files.dedup();
        dirs.sort();
        (files, dirs)
    }

    /// A value computed from the system's files once per pass of checks and shared by every
    /// item that asks for it under `name` (one name, one type): `make` runs on the first call
    /// after a change, later calls get the same value. An `Err` is not kept: the next call tries
    /// again (and reports the same error itself).
    pub fn derived<T: 'static>(
        &self,
        name: &'static str,
        make: impl FnOnce(&System) -> Result<T>,
    ) -> Result<Rc<T>> {
        let hit = self.derived.borrow().get(name).cloned();
        if let Some(v) = hit {
            return v.downcast::<T>().map_err(|_| {
                anyhow::anyhow!("internal: derived value `{name}` asked for as two types")
            });
        }
        let v = Rc::new(make(self)?);
        self.derived
            .borrow_mut()
            .insert(name, v.clone() as Rc<dyn Any>);
        Ok(v)
    }

    /// Forgets what was read: the system may have changed.
    pub fn invalidate(&self) {
        self.forget_reads();
        self.forget_units();
    }

    /// Forgets the files, listings and what was derived from them (the units backend keeps its
    /// own view, which its changes keep up to date).
    pub(super) fn forget_reads(&self) {
        self.reads.borrow_mut().clear();
        self.seen.borrow_mut().clear();
        self.dirs.borrow_mut().clear();
        self.derived.borrow_mut().clear();
    }

    /// Forgets what the units backend read (a change outside it may have touched its files).
    pub(super) fn forget_units(&self) {
        if let Some(Ok(u)) = self.units.get() {
            u.forget();
        }
    }

    /// systemd, for the units resource: over D-Bus on a live root (connected on first use),
    /// through the image's files offline. A live root without a running systemd or bus is an
    /// error naming what is missing; there is no fallback to `systemctl`.
    pub fn units(&self) -> Result<&dyn UnitManager> {
        let r = self.units.get_or_init(|| {
            if !self.is_live() {
                return Ok(Box::new(OfflineUnits::new(self.root.clone())) as Box<dyn UnitManager>);
            }
            if !self.root.exists("/run/systemd/system") {
                return Err("systemd is not running here (no /run/systemd/system): a chroot or a container without \
                            systemd? To manage the unit files of an image offline, use --root DIR"
                    .to_string());
            }
            DbusUnits::connect(JOB_TIMEOUT)
                .map(|d| Box::new(d) as Box<dyn UnitManager>)
                .map_err(|e| format!("{e:#}"))
        });
        match r {
            Ok(b) => Ok(b.as_ref()),
            Err(e) => Err(anyhow::anyhow!("{e}")),
        }
    }

    /// How this run may act on the root: every resource asks this, nothing else.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// `apply --chroot`: an offline root's own programs run inside it. Refused for a live root.
    pub fn use_chroot(&mut self) -> anyhow::Result<()> {
        if self.mode == Mode::Live {
            anyhow::bail!("--chroot is for an offline root (--root DIR), not the running system");
        }
        self.mode = Mode::Chroot;
        Ok(())
    }

    pub fn is_live(&self) -> bool {
        self.mode == Mode::Live
    }

    /// Why this run cannot run the root's programs (package actions, update-grub, locale-gen),
    /// or `None` when it can (live, or `--chroot`).
    pub fn cannot_change(&self) -> Option<String> {
        (!self.mode.runs_programs()).then(|| {
            format!(
                "package actions on an {} run only with `apply --chroot`",
                self.describe()
            )
        })
    }

    /// `Some("offline root DIR")` when live-only checks and actions must be skipped.
    pub fn offline_reason(&self) -> Option<String> {
        (!self.is_live()).then(|| self.root.describe())
    }
}
