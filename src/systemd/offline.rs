//! The offline backend: what `systemctl --root DIR` does to an image's files.
//!
//! Masking is a symlink `etc/systemd/system/NAME -> /dev/null`; enabling follows the unit's
//! `[Install]` section (`WantedBy=`, `RequiredBy=`, `UpheldBy=` symlinks in `.wants/`,
//! `.requires/`, `.upholds/`, `Alias=` symlinks, `Also=` units), linking to the unit file where
//! systemd finds it; the unit-file state is read back from those files. Every symlink is created
//! atomically (made under a temp name, then renamed). Starting and stopping need a running system
//! and are refused.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use super::install::{Install, parse_install, template_of};
use super::links::Links;
use super::{FileChange, UnitManager, UnitState};
use crate::root::{Node, Root};

pub(super) const ETC: &str = "/etc/systemd/system";

/// Unit search path, highest precedence first (as systemd's, without the runtime directories).
const SEARCH: &[&str] = &[
    ETC,
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

pub struct OfflineUnits {
    root: Root,
    /// The links under /etc/systemd/system, read once and kept until something changes: every
    /// unit's state asks which links name it or point at its file, and a policy of thousands of
    /// units would otherwise read the directory thousands of times.
    links: RefCell<Option<Links>>,
    /// Stale temps beside the links this backend makes: each directory listed once.
    sweep: RefCell<crate::fsutil::Sweep>,
}

impl OfflineUnits {
    pub fn new(root: Root) -> Self {
        OfflineUnits {
            root,
            links: RefCell::default(),
            sweep: RefCell::default(),
        }
    }

    /// Keeps the index of links (if read) up with a link made or removed at `abs`.
    fn follow(&self, abs: &str, target: Option<&str>) {
        let mut links = self.links.borrow_mut();
        if let Some(l) = links.as_mut()
            && !l.follow(abs, target)
        {
            *links = None;
        }
    }

    fn is_masked_link(&self, abs: &str) -> Result<bool> {
        Ok(self
            .read_link(abs)?
            .is_some_and(|t| t == Path::new("/dev/null")))
    }

    fn is_link_to(&self, abs: &str, target: &str) -> Result<bool> {
        Ok(self.read_link(abs)?.is_some_and(|t| t == Path::new(target)))
    }

    /// Where systemd would find the unit file (the template for an instance), following an
    /// `/etc` symlink that points into another search directory; skips masks.
    fn find(&self, name: &str) -> Result<Option<String>> {
        let mut names = vec![name.to_string()];
        names.extend(template_of(name));
        for n in &names {
            for dir in SEARCH {
                // /lib is /usr/lib on a merged-/usr system: systemd reports the /usr path.
                if *dir == "/lib/systemd/system"
                    && matches!(self.root.lstat("/lib")?, Node::Symlink(_))
                {
                    continue;
                }
                let abs = format!("{dir}/{n}");
                let node = match self.lstat(&abs)? {
                    Node::Missing => continue,
                    Node::Symlink(t) if t == Path::new("/dev/null") => continue,
                    // Followed where it leads, inside the root.
                    Node::Symlink(_) => self.root.stat(&abs)?,
                    // Not a link: what stat would say.
                    other => other,
                };
                match node {
                    Node::File { .. } => return Ok(Some(abs)),
                    // systemd refuses a unit file that is not regular (stat_verify_regular): say
                    // what is there rather than "not found".
                    Node::Other(kind) => {
                        return Err(crate::saferead::NotRegular { path: abs, kind }.into());
                    }
                    _ => {}
                }
            }
        }
        Ok(None)
    }

    fn install_of(&self, unit_path: &str) -> Result<Install> {
        let text = self.root.read_string(unit_path)?.unwrap_or_default();
        Ok(parse_install(&text))
    }

    /// Creates `abs -> target` atomically; an existing identical link is left alone. Through the
    /// parent's descriptor inside the root: an image whose /etc/systemd is a symlink to a host
    /// path cannot make this write on the host.
    fn symlink(&self, abs: &str, target: &str) -> Result<Option<FileChange>> {
        if self.is_link_to(abs, target)? {
            return Ok(None);
        }
        let stale = self.sweep.borrow_mut().clean(&self.root, abs)?;
        if !stale.is_empty() {
            self.forget(); // a stale temp link may be in the index
        }
        for stale in stale {
            tracing::warn!(file = %stale.display(), "removed temp symlink left by an interrupted run");
        }
        let made = crate::fsutil::symlink_atomic(&self.root, abs, target);
        match &made {
            Ok(_) => self.follow(abs, Some(target)),
            Err(_) => self.forget(),
        }
        if !made? {
            return Ok(None);
        }
        Ok(Some(FileChange {
            kind: "symlink".into(),
            path: abs.to_string(),
            dest: target.to_string(),
        }))
    }

    fn unlink(&self, abs: &str) -> Result<Option<FileChange>> {
        if !matches!(self.root.lstat(abs)?, Node::Symlink(_)) {
            return Ok(None);
        }
        let removed = crate::fsutil::remove(&self.root, abs);
        match &removed {
            Ok(_) => self.follow(abs, None),
            Err(_) => self.forget(),
        }
        removed?;
        Ok(Some(FileChange {
            kind: "unlink".into(),
            path: abs.to_string(),
            dest: String::new(),
        }))
    }

    /// Every symlink under /etc/systemd/system (one level of `.wants/` etc. directories) named
    /// `name`, or pointing at `target`, in the order of a listing of /etc/systemd/system.
    fn links_to(&self, name: &str, target: Option<&str>) -> Result<Vec<String>> {
        self.with_links(|links| {
            // (the entry of /etc/systemd/system it is under, path)
            let mut out: Vec<(&str, String)> = Vec::new();
            for (dir, names) in &links.dirs {
                if names.contains_key(name) {
                    out.push((dir, format!("{ETC}/{dir}/{name}")));
                }
            }
            if let Some(t) = target.and_then(|t| links.by_target.get(Path::new(t))) {
                for entry in t.iter().filter(|e| *e != name) {
                    out.push((entry, format!("{ETC}/{entry}")));
                }
            }
            out.sort();
            out.into_iter().map(|(_, p)| p).collect()
        })
    }

    /// `f` of the index of links, read first if it is not kept.
    fn with_links<R>(&self, f: impl FnOnce(&Links) -> R) -> Result<R> {
        if self.links.borrow().is_none() {
            let read = Links::read(&self.root)?;
            *self.links.borrow_mut() = Some(read);
        }
        let links = self.links.borrow();
        Ok(f(links.as_ref().expect("read above")))
    }

    /// `lstat` of `abs`, from the index for an entry of /etc/systemd/system.
    fn lstat(&self, abs: &str) -> Result<Node> {
        match self.with_links(|l| l.node(abs))? {
            Some(node) => Ok(node),
            None => self.root.lstat(abs),
        }
    }

    /// The target of the symlink at `abs`, from the index under /etc/systemd/system.
    fn read_link(&self, abs: &str) -> Result<Option<PathBuf>> {
        match self.with_links(|l| l.link(abs))? {
            Some(link) => Ok(link),
            None => self.root.read_link(abs),
        }
    }

    fn enable_inner(&self, name: &str, depth: usize, changes: &mut Vec<FileChange>) -> Result<()> {
        let Some(path) = self.find(name)? else {
            bail!(
                "unit {name} not found in {} (is its package installed?)",
                SEARCH.join(", ")
            );
        };
        if self.is_masked_link(&format!("{ETC}/{name}"))? {
            bail!("unit {name} is masked: unmask it first");
        }
        let inst = self.install_of(&path)?;
        let link_name = match (template_of(name), name.contains("@.")) {
            (_, true) => match &inst.default_instance {
                Some(i) => name.replacen("@.", &format!("@{i}."), 1),
                None => bail!(
                    "template {name} has no DefaultInstance: enable an instance (like {})",
                    name.replacen("@.", "@NAME.", 1)
                ),
            },
            _ => name.to_string(),
        };
        for link in inst.links(&link_name) {
            changes.extend(self.symlink(&link, &path)?);
        }
        if depth < 4 {
            for also in &inst.also {
                self.enable_inner(also, depth + 1, changes)?;
            }
        }
        Ok(())
    }

    fn disable_inner(&self, name: &str, depth: usize, changes: &mut Vec<FileChange>) -> Result<()> {
        let path = self.find(name)?;
        for link in self.links_to(name, path.as_deref())? {
            changes.extend(self.unlink(&link)?);
        }
        if let Some(p) = &path {
            let inst = self.install_of(p)?;
            for a in &inst.alias {
                let abs = format!("{ETC}/{a}");
                if self.is_link_to(&abs, p)? {
                    changes.extend(self.unlink(&abs)?);
                }
            }
            if depth < 4 {
                for also in &inst.also {
                    self.disable_inner(also, depth + 1, changes)?;
                }
            }
        }
        Ok(())
    }
}

impl UnitManager for OfflineUnits {
    fn forget(&self) {
        self.links.borrow_mut().take();
    }

    fn state(&self, name: &str) -> Result<UnitState> {
        let masked = self.is_masked_link(&format!("{ETC}/{name}"))?;
        let mut missing_links = Vec::new();
        let file_state = if masked {
            "masked".to_string()
        } else {
            match self.find(name)? {
                None => "not-found".to_string(),
                Some(path) => {
                    let inst = self.install_of(&path)?;
                    if path.starts_with(ETC)
                        && matches!(self.lstat(&path)?, Node::Symlink(_))
                        && !path.ends_with(&format!("/{name}"))
                    {
                        "alias".to_string()
                    } else if inst.is_empty() {
                        "static".to_string()
                    } else if !self.links_to(name, Some(&path))?.is_empty() {
                        for link in inst.links(name) {
                            if !self.is_link_to(&link, &path)? {
                                missing_links.push(link);
                            }
                        }
                        "enabled".to_string()
                    } else {
                        "disabled".to_string()
                    }
                }
            }
        };
        Ok(UnitState {
            unit_file_state: file_state,
            active_state: None,
            sub_state: None,
            condition_failed: None,
            missing_links,
        })
    }

    fn mask(&self, name: &str) -> Result<Vec<FileChange>> {
        Ok(self
            .symlink(&format!("{ETC}/{name}"), "/dev/null")?
            .into_iter()
            .collect())
    }

    fn unmask(&self, name: &str) -> Result<Vec<FileChange>> {
        let abs = format!("{ETC}/{name}");
        if self.is_masked_link(&abs)? {
            Ok(self.unlink(&abs)?.into_iter().collect())
        } else {
            Ok(Vec::new())
        }
    }

    fn enable(&self, name: &str) -> Result<Vec<FileChange>> {
        let mut changes = Vec::new();
        self.enable_inner(name, 0, &mut changes)?;
        Ok(changes)
    }

    fn disable(&self, name: &str) -> Result<Vec<FileChange>> {
        let mut changes = Vec::new();
        self.disable_inner(name, 0, &mut changes)?;
        Ok(changes)
    }

    fn reload(&self) -> Result<()> {
        Ok(()) // nothing runs offline
    }

    fn start(&self, name: &str) -> Result<String> {
        bail!("cannot start {name} on an {}", self.root.describe())
    }

    fn stop(&self, name: &str) -> Result<String> {
        bail!("cannot stop {name} on an {}", self.root.describe())
    }

    fn runtime(&self, name: &str) -> Result<super::UnitRuntime> {
        bail!(
            "no run-time state of {name} on an {}: nothing runs there",
            self.root.describe()
        )
    }

    fn reload_or_try_restart(&self, name: &str) -> Result<String> {
        bail!("cannot reload {name} on an {}", self.root.describe())
    }

    fn try_restart(&self, name: &str) -> Result<String> {
        bail!("cannot restart {name} on an {}", self.root.describe())
    }

    fn settle(&self) -> Result<(String, Vec<String>)> {
        bail!(
            "an {} is not running: nothing to wait for",
            self.root.describe()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The links an older version found by listing /etc/systemd/system for each question: the
    /// reference the kept index must agree with.
    fn listed(root: &Root, name: &str, target: Option<&str>) -> Vec<String> {
        let mut out = Vec::new();
        for entry in root.list_dir(ETC).unwrap() {
            let abs = format!("{ETC}/{entry}");
            match root.lstat(&abs).unwrap() {
                Node::Dir { .. } if entry.ends_with(".wants") || entry.ends_with(".requires") => {
                    for sub in root.list_dir(&abs).unwrap() {
                        let p = format!("{abs}/{sub}");
                        if sub == name && matches!(root.lstat(&p).unwrap(), Node::Symlink(_)) {
                            out.push(p);
                        }
                    }
                }
                Node::Symlink(t) if entry != name && target.is_some_and(|g| t == Path::new(g)) => {
                    out.push(abs)
                }
                _ => {}
            }
        }
        out
    }

    #[test]
    fn kept_links_follow_every_change() {
        let t = tempfile::tempdir().unwrap();
        let lib = t.path().join("usr/lib/systemd/system");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::create_dir_all(t.path().join("etc/systemd/system")).unwrap();
        std::fs::write(
            lib.join("a.service"),
            "[Install]\nWantedBy=multi-user.target\nRequiredBy=z.target\nAlias=b.service\nAlso=c.socket\n",
        )
        .unwrap();
        std::fs::write(lib.join("c.socket"), "[Install]\nWantedBy=sockets.target\n").unwrap();
        std::fs::write(
            lib.join("d.service"),
            "[Install]\nWantedBy=multi-user.target\n",
        )
        .unwrap();
        let root = Root::new(t.path()).unwrap();
        let u = OfflineUnits::new(root.clone());
        let a = "/usr/lib/systemd/system/a.service";
        let state = |n: &str| u.state(n).unwrap().unit_file_state;
        // The kept index, updated by each change rather than read again, answers as a fresh
        // listing does.
        let agree = || {
            for (n, f) in [
                ("a.service", a),
                ("b.service", a),
                ("c.socket", "/usr/lib/systemd/system/c.socket"),
                ("d.service", "/usr/lib/systemd/system/d.service"),
                ("d.service", "/dev/null"),
            ] {
                assert_eq!(
                    u.links_to(n, Some(f)).unwrap(),
                    listed(&root, n, Some(f)),
                    "{n}"
                );
            }
        };
        agree();
        assert_eq!(state("a.service"), "disabled");
        u.enable("a.service").unwrap();
        u.enable("d.service").unwrap();
        agree();
        assert_eq!(state("a.service"), "enabled");
        assert_eq!(state("c.socket"), "enabled");
        assert_eq!(state("d.service"), "enabled");
        let got = u.links_to("a.service", Some(a)).unwrap();
        assert_eq!(got, listed(&root, "a.service", Some(a)));
        assert_eq!(
            got,
            [
                "/etc/systemd/system/b.service",
                "/etc/systemd/system/multi-user.target.wants/a.service",
                "/etc/systemd/system/z.target.requires/a.service",
            ]
        );
        u.mask("d.service").unwrap();
        agree();
        assert_eq!(state("d.service"), "masked");
        u.unmask("d.service").unwrap();
        agree();
        assert_eq!(state("d.service"), "enabled");
        u.disable("a.service").unwrap();
        agree();
        assert_eq!(state("a.service"), "disabled");
        assert_eq!(state("c.socket"), "disabled");
        assert!(u.links_to("a.service", Some(a)).unwrap().is_empty());
        assert_eq!(state("d.service"), "enabled");
        // A change made elsewhere is seen once the backend is told to forget.
        std::fs::remove_file(
            t.path()
                .join("etc/systemd/system/multi-user.target.wants/d.service"),
        )
        .unwrap();
        u.forget();
        assert_eq!(state("d.service"), "disabled");
        assert_eq!(
            u.links_to("d.service", None).unwrap(),
            listed(&root, "d.service", None)
        );
    }
}
