//! sshd_config as sshd reads it (OpenSSH's servconf.c), for the `ssh:` items: the first value
//! of each keyword and the file:line it comes from, with every `Include` expanded in place.
//!
//! What sshd does, and so what this does:
//! - An `Include` argument is relative to /etc/ssh unless it starts with `/` (or `~`, which
//!   sshd leaves to glob(3) as a path relative to its working directory, `/` under systemd); it
//!   is expanded by glob(3) ([`super::sshd_glob`]); each match is read and parsed in place.
//! - sshd starts at depth 0 and refuses to start ("Too many recursive configuration includes")
//!   when it would parse a file at depth 17 (`SERVCONF_MAX_DEPTH` 16); a file that includes
//!   itself, directly or not, is exactly that: sshd recurses until depth 17. A match sshd cannot
//!   open (a dangling symlink) stops it too; a directory reads as an empty file.
//! - A `Match` makes the rest of its file apply to some connections only (`Match all` to all
//!   again); an included file's `Match` ends with that file. Inside an inactive part, an Include is
//!   still read (for its depth and its errors), but nothing in it is global.
//! - A line with a keyword and no argument, an `Include` without a file or with unbalanced
//!   quotes: sshd counts a bad option and refuses to start once the file is parsed.
//!
//! Unlike sshd, a file is read and split once however often it is included, and its lines are
//! gone through at most twice (once in a global part, once in a Match part): the first value of
//! a keyword cannot change when sshd parses the same file again in the same state, and the
//! depth below a file is kept once known. So the work is linear in the files and Include lines,
//! and it is bounded: [`MAX_FILES`], [`MAX_BYTES`], [`GLOB_BUDGET`] and [`MAX_EXPANSIONS`]; past
//! any of them the reading stops with a [`Problem::Limit`] (never a silent partial answer).

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use anyhow::Result;

use super::sshd_glob::{self, Budget, Dirs, OverBudget};
use crate::engine::System;
use crate::root::Node;
use crate::text::escape;

/// servconf.c `SERVCONF_MAX_DEPTH` (ssh's readconf.c `READCONF_MAX_DEPTH` is 16 as well): the
/// deepest level sshd parses; the main file is level 0.
pub const MAX_DEPTH: usize = 16;
/// Distinct files read at most.
pub const MAX_FILES: usize = 4096;
/// Bytes read at most, over all files.
pub const MAX_BYTES: usize = 64 << 20;
/// What globbing may cost, over every pattern of one reading.
pub const GLOB_BUDGET: Budget = Budget {
    matches: 16384,
    entries: 262_144,
};
/// Include matches gone through at most (each match of each Include line of each walk).
pub const MAX_EXPANSIONS: usize = 1 << 20;

/// What the reader needs of a file system: the root's ([`System`]), or one in memory.
pub trait Tree: Dirs {
    /// What sshd reads at `path`.
    fn text(&self, path: &str) -> Result<Content>;
}

/// A file as sshd's `load_server_config` reads it.
pub enum Content {
    Text(String),
    /// fopen succeeds on a directory and getline reads nothing: an empty file.
    Directory,
    /// Nothing to open (a dangling symlink a glob matched): sshd exits.
    Missing,
}

/// One keyword's first global value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// Lowercase, as sshd compares keywords.
    pub keyword: String,
    pub value: String,
    /// `file:line`.
    pub at: String,
}

/// Why a reading is not the configuration sshd uses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// sshd refuses this configuration.
    #[error("sshd will not start: {0}")]
    WillNotStart(String),
    /// One of this reader's bounds: guestprep stopped reading (sshd would go on).
    #[error("guestprep stopped reading sshd's configuration: {0}")]
    Limit(String),
}

/// Keywords whose every global value counts (sshd listens on each `Port` and `ListenAddress`).
pub const EVERY_VALUE: &[&str] = &["port", "listenaddress"];

/// The configuration sshd reads, or as far as it could be read.
#[derive(Debug)]
pub struct Reading {
    /// First global values in the order sshd meets them.
    pub settings: Vec<Setting>,
    /// Every global value of the [`EVERY_VALUE`] keywords, in order (a file read twice in a
    /// global part adds its values once: sshd would listen on the same address twice).
    pub every: Vec<Setting>,
    /// `Some`: sshd will not start, or the reading stopped; `settings` are then incomplete.
    pub problem: Option<Problem>,
    /// Distinct files read (each once).
    pub files: usize,
    /// Times a file's lines were gone through.
    pub walks: usize,
}

impl Reading {
    pub fn get(&self, keyword: &str) -> Option<&Setting> {
        let k = keyword.to_ascii_lowercase();
        self.settings.iter().find(|s| s.keyword == k)
    }

    /// Every global value of one of the [`EVERY_VALUE`] keywords.
    pub fn all(&self, keyword: &str) -> Vec<&Setting> {
        let k = keyword.to_ascii_lowercase();
        self.every.iter().filter(|s| s.keyword == k).collect()
    }
}

/// Reads `main` and everything it includes. `None` when `main` does not exist.
pub fn read(tree: &dyn Tree, main: &str) -> Result<Option<Reading>> {
    if matches!(tree.text(&normalize(main))?, Content::Missing) {
        return Ok(None);
    }
    let mut r = Reader {
        tree,
        parsed: HashMap::new(),
        globs: HashMap::new(),
        height: HashMap::new(),
        walked_global: HashSet::new(),
        stack: Vec::new(),
        seen: HashSet::new(),
        settings: Vec::new(),
        every: Vec::new(),
        walks: 0,
        bytes: 0,
        expansions: 0,
        budget: GLOB_BUDGET,
    };
    let problem = match r.visit(main, 0, true) {
        Ok(_) => None,
        Err(e) => match e.downcast::<Problem>() {
            Ok(p) => Some(p),
            Err(e) => return Err(e),
        },
    };
    Ok(Some(Reading {
        settings: r.settings,
        every: r.every,
        problem,
        files: r.parsed.len(),
        walks: r.walks,
    }))
}

/// A line of sshd_config, as far as the reader cares.
enum Line {
    Setting {
        keyword: String,
        value: String,
    },
    Match {
        all: bool,
    },
    Include(Vec<String>),
    /// sshd counts it as a bad option (the reason, in sshd's words where it has them).
    Bad(String),
}

/// A file split into lines (1-based numbers).
struct Parsed {
    lines: Vec<(usize, Line)>,
}

struct Reader<'a> {
    tree: &'a dyn Tree,
    parsed: HashMap<String, Rc<Parsed>>,
    globs: HashMap<String, Rc<Vec<String>>>,
    /// Include levels below a file, once all of it was gone through.
    height: HashMap<String, usize>,
    /// Files gone through in a global part (a second time adds no first value).
    walked_global: HashSet<String>,
    /// The files being read, outermost first.
    stack: Vec<String>,
    seen: HashSet<String>,
    settings: Vec<Setting>,
    every: Vec<Setting>,
    walks: usize,
    bytes: usize,
    expansions: usize,
    budget: Budget,
}

impl Reader<'_> {
    /// Reads `path` at `depth`, in a global part or not; returns the Include levels below it.
    fn visit(&mut self, path: &str, depth: usize, global: bool) -> Result<usize> {
        let shown = escape(path);
        if let Some(at) = self.stack.iter().position(|p| p == path) {
            let mut cycle: Vec<_> = self.stack[at..].iter().map(|p| escape(p)).collect();
            cycle.push(shown.clone());
            anyhow::bail!(Problem::WillNotStart(format!(
                "\"Too many recursive configuration includes\": {shown} includes itself ({}), \
                 which sshd follows until it is {} levels deep",
                cycle.join(" → "),
                MAX_DEPTH + 1
            )));
        }
        if depth > MAX_DEPTH {
            anyhow::bail!(Problem::WillNotStart(format!(
                "\"Too many recursive configuration includes\": {shown} is the {}th level of \
                 Include ({}), sshd reads {MAX_DEPTH}",
                depth,
                self.chain()
            )));
        }
        if let Some(&below) = self.height.get(path)
            && (!global || self.walked_global.contains(path))
        {
            if depth + below > MAX_DEPTH {
                anyhow::bail!(Problem::WillNotStart(format!(
                    "\"Too many recursive configuration includes\": {shown}, at Include level \
                     {depth} ({}), has {below} levels of Include below it; sshd reads \
                     {MAX_DEPTH}",
                    self.chain()
                )));
            }
            return Ok(below);
        }
        let parsed = self.load(path)?;
        self.walks += 1;
        if global {
            self.walked_global.insert(path.to_string());
        }
        self.stack.push(path.to_string());
        let mut active = global;
        let mut below = 0;
        let mut bad = None;
        for (n, line) in &parsed.lines {
            match line {
                Line::Setting { keyword, value } => {
                    if active && EVERY_VALUE.contains(&keyword.as_str()) {
                        self.every.push(Setting {
                            keyword: keyword.clone(),
                            value: value.clone(),
                            at: format!("{path}:{n}"),
                        });
                    }
                    if active && self.seen.insert(keyword.clone()) {
                        self.settings.push(Setting {
                            keyword: keyword.clone(),
                            value: value.clone(),
                            at: format!("{path}:{n}"),
                        });
                    }
                }
                // An included file's Match cannot make a non-global part global (NEVERMATCH).
                Line::Match { all } => active = global && *all,
                Line::Include(patterns) => {
                    below = below.max(self.include(patterns, depth, active)?);
                }
                Line::Bad(why) => {
                    bad.get_or_insert_with(|| format!("{shown} line {n}: {why}"));
                }
            }
        }
        self.stack.pop();
        if let Some(why) = bad {
            anyhow::bail!(Problem::WillNotStart(why));
        }
        self.height.insert(path.to_string(), below);
        Ok(below)
    }

    /// Reads what an Include line at `depth` names; returns the Include levels below the line.
    fn include(&mut self, patterns: &[String], depth: usize, active: bool) -> Result<usize> {
        let mut below = 0;
        for pattern in patterns {
            let matches = self.glob(pattern)?;
            self.expansions += matches.len();
            if self.expansions > MAX_EXPANSIONS {
                anyhow::bail!(Problem::Limit(format!(
                    "the Include lines expand to more than {MAX_EXPANSIONS} files in all"
                )));
            }
            for m in matches.iter() {
                below = below.max(1 + self.visit(m, depth + 1, active)?);
            }
        }
        Ok(below)
    }

    /// The Include chain being read, shortened in the middle.
    fn chain(&self) -> String {
        let s: Vec<_> = self.stack.iter().map(|p| escape(p)).collect();
        if s.len() <= 4 {
            return s.join(" → ");
        }
        format!(
            "{} → {} → … → {} → {}",
            s[0],
            s[1],
            s[s.len() - 2],
            s[s.len() - 1]
        )
    }

    fn load(&mut self, path: &str) -> Result<Rc<Parsed>> {
        if let Some(p) = self.parsed.get(path) {
            return Ok(p.clone());
        }
        if self.parsed.len() >= MAX_FILES {
            anyhow::bail!(Problem::Limit(format!(
                "more than {MAX_FILES} files are included"
            )));
        }
        let text = match self.tree.text(&normalize(path))? {
            Content::Text(t) => t,
            Content::Directory => String::new(),
            Content::Missing => anyhow::bail!(Problem::WillNotStart(format!(
                "{} is included but cannot be opened (a dangling symlink?)",
                escape(path)
            ))),
        };
        self.bytes += text.len();
        if self.bytes > MAX_BYTES {
            anyhow::bail!(Problem::Limit(format!(
                "the included files are larger than {} MiB in all",
                MAX_BYTES >> 20
            )));
        }
        let p = Rc::new(parse(&text));
        self.parsed.insert(path.to_string(), p.clone());
        Ok(p)
    }

    fn glob(&mut self, pattern: &str) -> Result<Rc<Vec<String>>> {
        if let Some(g) = self.globs.get(pattern) {
            return Ok(g.clone());
        }
        let found =
            sshd_glob::expand(self.tree, pattern, &mut self.budget, GLOB_BUDGET).map_err(|e| {
                match e.downcast::<OverBudget>() {
                    Ok(o) => Problem::Limit(o.to_string()).into(),
                    Err(e) => e,
                }
            })?;
        let found = Rc::new(found);
        self.globs.insert(pattern.to_string(), found.clone());
        Ok(found)
    }
}

/// Splits a file as servconf.c does: lines at `\n`, leading ` \t\r` and trailing whitespace
/// stripped, the keyword up to whitespace or `=`, `#` starting a comment line.
fn parse(text: &str) -> Parsed {
    let mut lines = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw
            .trim_start_matches([' ', '\t', '\r'])
            .trim_end_matches([' ', '\t', '\r', '\n', '\x0c']);
        let (keyword, rest) = match line.find([' ', '\t', '=']) {
            Some(at) => (&line[..at], &line[at..]),
            None => (line, ""),
        };
        if keyword.is_empty() || keyword.starts_with('#') {
            continue;
        }
        let rest = rest.trim_start_matches([' ', '\t']);
        let rest = rest
            .strip_prefix('=')
            .unwrap_or(rest)
            .trim_start_matches([' ', '\t']);
        let kw = keyword.to_ascii_lowercase();
        let line = if rest.is_empty() {
            Line::Bad(format!("no argument after keyword \"{}\"", escape(keyword)))
        } else if kw == "include" {
            include(rest)
        } else if kw == "match" {
            match argv_split(rest) {
                None => Line::Bad("invalid quotes".into()),
                Some(a) if a.iter().any(|x| x.eq_ignore_ascii_case("all")) && a.len() > 1 => {
                    Line::Bad("'all' cannot be combined with other Match attributes".into())
                }
                Some(a) => Line::Match {
                    all: a.len() == 1 && a[0].eq_ignore_ascii_case("all"),
                },
            }
        } else {
            Line::Setting {
                keyword: kw,
                value: rest.to_string(),
            }
        };
        lines.push((i + 1, line));
    }
    Parsed { lines }
}

/// An `Include` line's patterns, made absolute as sshd makes them.
fn include(rest: &str) -> Line {
    let Some(args) = argv_split(rest) else {
        return Line::Bad("invalid quotes".into());
    };
    if args.is_empty() {
        return Line::Bad("Include missing filename argument".into());
    }
    if args.iter().any(String::is_empty) {
        return Line::Bad("keyword Include empty argument".into());
    }
    Line::Include(
        args.into_iter()
            .map(|a| match a.as_bytes()[0] {
                b'/' => a,
                b'~' => format!("/{a}"),
                _ => format!("/etc/ssh/{a}"),
            })
            .collect(),
    )
}

/// misc.c `argv_split` with comments ending the line: words split at blanks, `"` and `'`
/// quote, `\` escapes a quote, a backslash and (unquoted) a space. `None` for an open quote.
fn argv_split(s: &str) -> Option<Vec<String>> {
    let b: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == ' ' || b[i] == '\t' {
            i += 1;
            continue;
        }
        if b[i] == '#' {
            break;
        }
        let mut quote = None;
        let mut arg = String::new();
        while i < b.len() {
            let c = b[i];
            if c == '\\'
                && b.get(i + 1).is_some_and(|&n| {
                    n == '\'' || n == '"' || n == '\\' || (quote.is_none() && n == ' ')
                })
            {
                i += 1;
                arg.push(b[i]);
            } else if quote.is_none() && (c == ' ' || c == '\t') {
                break;
            } else if quote.is_none() && (c == '"' || c == '\'') {
                quote = Some(c);
            } else if quote == Some(c) {
                quote = None;
            } else {
                arg.push(c);
            }
            i += 1;
        }
        if quote.is_some() {
            return None;
        }
        out.push(arg);
    }
    Some(out)
}

/// `path` with `.`, `..` and repeated `/` resolved lexically (the root's paths take no `..`).
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

impl Dirs for System {
    fn names(&self, dir: &str) -> Result<Vec<String>> {
        self.list_dir(&normalize(dir))
    }

    fn exists(&self, path: &str) -> Result<bool> {
        Ok(!matches!(self.lstat(&normalize(path))?, Node::Missing))
    }
}

impl Tree for System {
    fn text(&self, path: &str) -> Result<Content> {
        Ok(match self.stat(path)? {
            Node::Dir { .. } => Content::Directory,
            Node::Missing => Content::Missing,
            _ => match self.read_string(path)? {
                Some(t) => Content::Text(t),
                None => Content::Missing,
            },
        })
    }
}

/// An in-memory tree and sshd's own (exponential) algorithm, to check [`read`] against.
#[path = "sshd_config_model.rs"]
pub mod model;

#[cfg(test)]
#[path = "sshd_config_tests.rs"]
mod tests;
