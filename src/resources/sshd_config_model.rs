//! What checks the sshd_config reader: a tree in memory (the fuzz target's and tests') and
//! sshd's own algorithm, parse every file again at every Include, which takes exponential time
//! on some trees and so runs here on a budget.

use std::collections::{HashMap, HashSet};

use anyhow::Result;

use super::{Content, Line, MAX_DEPTH, Setting, Tree, normalize, parse};
use crate::resources::sshd_glob::{self, Budget, Dirs};

/// A tree in memory (the fuzz target's, and tests'): files by absolute path; their directories
/// exist implicitly; a path ending in `/` is an empty directory.
#[derive(Default)]
pub struct MemTree {
    pub files: std::collections::BTreeMap<String, String>,
}

impl Dirs for MemTree {
    fn names(&self, dir: &str) -> Result<Vec<String>> {
        let prefix = if dir == "/" {
            "/".to_string()
        } else {
            format!("{dir}/")
        };
        let mut names: Vec<String> = self
            .files
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .filter_map(|(p, _)| p[prefix.len()..].split('/').next())
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect();
        names.dedup();
        Ok(names)
    }

    fn exists(&self, path: &str) -> Result<bool> {
        let dir = format!("{}/", path.trim_end_matches('/'));
        Ok(self.files.contains_key(path)
            || self
                .files
                .range(dir.clone()..)
                .next()
                .is_some_and(|(p, _)| p.starts_with(&dir)))
    }
}

impl Tree for MemTree {
    fn text(&self, path: &str) -> Result<Content> {
        Ok(match self.files.get(path) {
            Some(t) => Content::Text(t.clone()),
            None if self.exists(path)? => Content::Directory,
            None => Content::Missing,
        })
    }
}

/// What sshd's own algorithm finds: `Some((settings, starts))`, `starts` false when sshd would
/// refuse the configuration; `None` when `main` is missing or more than `steps` files would be
/// parsed.
pub fn sshd_algorithm(tree: &dyn Tree, main: &str, steps: usize) -> Option<(Vec<Setting>, bool)> {
    if matches!(tree.text(&normalize(main)).ok()?, Content::Missing) {
        return None;
    }
    let mut n = Naive {
        tree,
        steps,
        budget: UNBOUNDED,
        globs: HashMap::new(),
        seen: HashSet::new(),
        settings: Vec::new(),
    };
    match n.parse_file(main, 0, true) {
        Ok(starts) => Some((n.settings, starts)),
        Err(()) => None,
    }
}

/// sshd bounds nothing but the depth; `steps` bounds this.
const UNBOUNDED: Budget = Budget {
    matches: usize::MAX,
    entries: usize::MAX,
};

struct Naive<'a> {
    tree: &'a dyn Tree,
    steps: usize,
    budget: Budget,
    /// sshd keeps each pattern's matches too (servconf.c's include list, by selector).
    globs: HashMap<String, Vec<String>>,
    seen: HashSet<String>,
    settings: Vec<Setting>,
}

impl Naive<'_> {
    /// servconf.c's parse_server_config_depth; `Ok(false)`: sshd stops; `Err`: out of budget.
    fn parse_file(&mut self, path: &str, depth: usize, global: bool) -> Result<bool, ()> {
        if depth > MAX_DEPTH {
            return Ok(false);
        }
        self.steps = self.steps.checked_sub(1).ok_or(())?;
        let text = match self.tree.text(&normalize(path)).map_err(|_| ())? {
            Content::Text(t) => t,
            Content::Directory => String::new(),
            Content::Missing => return Ok(false),
        };
        let mut active = global;
        let mut bad = false;
        for (n, line) in parse(&text).lines {
            match line {
                Line::Setting { keyword, value } => {
                    if active && self.seen.insert(keyword.clone()) {
                        self.settings.push(Setting {
                            keyword,
                            value,
                            at: format!("{path}:{n}"),
                        });
                    }
                }
                Line::Match { all } => active = global && all,
                Line::Include(patterns) => {
                    for p in patterns {
                        let found = match self.globs.get(&p) {
                            Some(f) => f.clone(),
                            None => {
                                let f =
                                    sshd_glob::expand(self.tree, &p, &mut self.budget, UNBOUNDED)
                                        .map_err(|_| ())?;
                                self.globs.insert(p.clone(), f.clone());
                                f
                            }
                        };
                        for f in found {
                            if !self.parse_file(&f, depth + 1, active)? {
                                return Ok(false);
                            }
                        }
                    }
                }
                Line::Bad(_) => bad = true,
            }
        }
        Ok(!bad)
    }
}
