//! Change events for the daemon: inotify on the directories holding what the checks read.
//!
//! Owns turning paths (in the root's terms) into directory watches and events back into "this
//! matters". Directories are watched, not files: guestprep and editors replace files by rename,
//! which a watch on the old inode would miss. A directory watched for one file ignores its other
//! entries; a missing directory is watched through its nearest existing ancestor, so creating it
//! counts. Values in /proc and /sys have no events: the daemon's timer covers them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use futures_util::StreamExt;
use inotify::{EventMask, EventOwned, EventStream, Inotify, WatchDescriptor, WatchMask};

use crate::root::Root;

/// What to watch in one directory: any entry, or only these names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirSpec {
    pub any: bool,
    pub names: BTreeSet<OsString>,
}

/// The directories (host paths) to watch for a set of files and listed directories of the root.
pub fn specs(root: &Root, files: &[String], dirs: &[String]) -> BTreeMap<PathBuf, DirSpec> {
    let mut out: BTreeMap<PathBuf, DirSpec> = BTreeMap::new();
    let live_only = |p: &str| {
        ["/proc", "/sys", "/dev"]
            .iter()
            .any(|x| p == *x || p.starts_with(&format!("{x}/")))
    };
    let mut add = |host: PathBuf, name: Option<OsString>| {
        // The nearest existing directory: a missing one is seen when it is created.
        let (mut dir, mut name) = (host, name);
        while !dir.is_dir() {
            let Some(parent) = dir.parent() else { return };
            name = dir.file_name().map(|n| n.to_os_string());
            dir = parent.to_path_buf();
        }
        let spec = out.entry(dir).or_default();
        match name {
            Some(n) => {
                spec.names.insert(n);
            }
            None => spec.any = true,
        }
    };
    for f in files.iter().filter(|f| !live_only(f)) {
        // The file's directory as resolved inside the root: a symlinked directory in an image is
        // watched where it leads in the image, never on the host.
        let Some((parent, name)) = f.rsplit_once('/') else {
            continue;
        };
        let parent = if parent.is_empty() { "/" } else { parent };
        let Ok(dir) = root.resolve(parent) else {
            continue;
        };
        let host = dir.join(name);
        if let (Some(dir), Some(name)) = (host.parent(), host.file_name()) {
            add(dir.to_path_buf(), Some(name.to_os_string()));
        }
    }
    for d in dirs.iter().filter(|d| !live_only(d)) {
        if let Ok(host) = root.resolve(d) {
            add(host, None);
        }
    }
    out
}

/// An inotify instance on the daemon's runtime.
pub struct Watcher {
    events: EventStream<Vec<u8>>,
    watches: HashMap<i32, (PathBuf, DirSpec, WatchDescriptor)>,
}

fn mask() -> WatchMask {
    WatchMask::CLOSE_WRITE
        | WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::ATTRIB
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
}

impl Watcher {
    /// Needs the tokio runtime (the inotify descriptor is registered with its reactor).
    pub fn new() -> Result<Self> {
        let events = Inotify::init()
            .context("creating an inotify instance")?
            .into_event_stream(vec![0u8; 4096])
            .context("registering inotify with the runtime")?;
        Ok(Watcher {
            events,
            watches: HashMap::new(),
        })
    }

    /// Makes the watched set exactly `specs`.
    pub fn set(&mut self, specs: &BTreeMap<PathBuf, DirSpec>) {
        let mut w = self.events.watches();
        let mut keep = HashMap::new();
        for (dir, spec) in specs {
            match w.add(dir, mask()) {
                Ok(wd) => {
                    keep.insert(
                        wd.get_watch_descriptor_id(),
                        (dir.clone(), spec.clone(), wd),
                    );
                }
                Err(e) => tracing::warn!("cannot watch {}: {e}", dir.display()),
            }
        }
        for (id, (_, _, wd)) in self.watches.drain() {
            if !keep.contains_key(&id) {
                let _ = w.remove(wd);
            }
        }
        self.watches = keep;
    }

    /// The number of directories watched.
    pub fn len(&self) -> usize {
        self.watches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.watches.is_empty()
    }

    /// Waits for the next event; returns the path it is about when it matters, `None` when not.
    pub async fn next(&mut self) -> Result<Option<PathBuf>> {
        match self.events.next().await {
            Some(Ok(ev)) => Ok(self.relevant(ev)),
            Some(Err(e)) => Err(e).context("reading inotify events"),
            None => anyhow::bail!("the inotify stream ended"),
        }
    }

    /// Discards the events already queued.
    pub async fn drain(&mut self) {
        while let Ok(Some(_)) =
            tokio::time::timeout(std::time::Duration::ZERO, self.events.next()).await
        {}
    }

    fn relevant(&self, ev: EventOwned) -> Option<PathBuf> {
        if ev.mask.contains(EventMask::Q_OVERFLOW) {
            return Some(PathBuf::from("(inotify queue overflow)"));
        }
        let (dir, spec, _) = self.watches.get(&ev.wd.get_watch_descriptor_id())?;
        if ev
            .mask
            .intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF)
        {
            return Some(dir.clone());
        }
        let name = ev.name?;
        if name.to_string_lossy().contains(crate::fsutil::TMP_MARK) {
            return None; // our own write in progress; its rename is the event that counts
        }
        (spec.any || spec.names.contains(&name)).then(|| dir.join(name))
    }
}

/// Shows a host path in the root's terms for log lines.
pub fn display(root: &Root, host: &Path) -> String {
    match host.strip_prefix(root.dir()) {
        Ok(rel) if !root.is_live() => format!("/{}", rel.display()),
        _ => host.display().to_string(),
    }
}
