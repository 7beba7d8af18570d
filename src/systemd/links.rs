//! What `/etc/systemd/system` holds, read once per change: every entry, the symlinks by target,
//! and the `.wants/`, `.requires/`, `.upholds/` directories one level deep (the offline backend
//! asks it for every unit's state).

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use anyhow::Result;

use super::offline::ETC;
use crate::root::{Node, Root};

/// What is in /etc/systemd/system, one level of `.wants/`, `.requires/`, `.upholds/` deep.
pub(super) struct Links {
    /// Every entry of /etc/systemd/system, as `lstat` saw it.
    pub(super) etc: HashMap<String, Node>,
    /// The symlinks directly in /etc/systemd/system, by target.
    pub(super) by_target: HashMap<PathBuf, BTreeSet<String>>,
    /// Those directories (their names in /etc/systemd/system), with the symlinks in each.
    pub(super) dirs: Vec<(String, HashMap<String, PathBuf>)>,
}

impl Links {
    pub(super) fn read(root: &Root) -> Result<Self> {
        let mut links = Links {
            etc: HashMap::new(),
            by_target: HashMap::new(),
            dirs: Vec::new(),
        };
        for entry in root.list_dir(ETC)? {
            let abs = format!("{ETC}/{entry}");
            let node = root.lstat(&abs)?;
            match &node {
                Node::Dir { .. } if is_link_dir(&entry) => {
                    let mut names = HashMap::new();
                    for sub in root.list_dir(&abs)? {
                        if let Node::Symlink(t) = root.lstat(&format!("{abs}/{sub}"))? {
                            names.insert(sub, t);
                        }
                    }
                    links.dirs.push((entry.clone(), names));
                }
                Node::Symlink(t) => {
                    let names = links.by_target.entry(t.clone()).or_default();
                    names.insert(entry.clone());
                }
                _ => {}
            }
            links.etc.insert(entry, node);
        }
        Ok(links)
    }

    /// What is at `abs` when it is an entry of /etc/systemd/system (`Missing` included); `None`
    /// for any other path.
    pub(super) fn node(&self, abs: &str) -> Option<Node> {
        let rest = abs.strip_prefix(ETC)?.strip_prefix('/')?;
        (!rest.contains('/')).then(|| self.etc.get(rest).cloned().unwrap_or(Node::Missing))
    }

    /// The target of the symlink at `abs` (inner `None` when it is not one) when the index holds
    /// the directory `abs` is in; `None` when it does not.
    pub(super) fn link(&self, abs: &str) -> Option<Option<PathBuf>> {
        if let Some(node) = self.node(abs) {
            return Some(match node {
                Node::Symlink(t) => Some(t),
                _ => None,
            });
        }
        let rest = abs.strip_prefix(ETC)?.strip_prefix('/')?;
        let (dir, name) = rest.split_once('/')?;
        if name.contains('/') {
            return None;
        }
        let (_, names) = self.dirs.iter().find(|(d, _)| d == dir)?;
        Some(names.get(name).cloned())
    }

    /// Keeps up with a link this backend made (`target` Some) or removed at `abs`. False when
    /// the change is not one the index can follow (a directory it does not hold): read it again.
    pub(super) fn follow(&mut self, abs: &str, target: Option<&str>) -> bool {
        let Some(rest) = abs.strip_prefix(ETC).and_then(|r| r.strip_prefix('/')) else {
            return true; // outside /etc/systemd/system: not in the index
        };
        match rest.split_once('/') {
            None => {
                if let Some(Node::Symlink(old)) = self.etc.remove(rest)
                    && let Some(names) = self.by_target.get_mut(&old)
                {
                    names.remove(rest);
                }
                if let Some(t) = target {
                    let names = self.by_target.entry(PathBuf::from(t)).or_default();
                    names.insert(rest.to_string());
                    self.etc
                        .insert(rest.to_string(), Node::Symlink(PathBuf::from(t)));
                }
                true
            }
            Some((dir, name)) if !name.contains('/') => {
                match self.dirs.iter_mut().find(|(d, _)| d == dir) {
                    Some((_, names)) => {
                        match target {
                            Some(t) => names.insert(name.to_string(), PathBuf::from(t)),
                            None => names.remove(name),
                        };
                        true
                    }
                    // Not a directory the index holds: one made just now (read it again), one
                    // that is a link itself, or one whose links do not count.
                    None => target.is_none() || !is_link_dir(dir),
                }
            }
            Some(_) => true,
        }
    }
}

pub(super) fn is_link_dir(entry: &str) -> bool {
    entry.ends_with(".wants") || entry.ends_with(".requires") || entry.ends_with(".upholds")
}
