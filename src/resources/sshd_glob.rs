//! sshd's `Include` patterns as sshd expands them: glob(3) with flags 0, and the glob(3) is
//! OpenBSD's, which openssh-portable bundles (`openbsd-compat/glob.c`) and uses on Linux because
//! glibc's glob_t lacks `gl_matchc` (Debian's sshd imports opendir/readdir, not glob).
//!
//! What that glob does, and so what this does:
//! - `\x` quotes `x`; `*` (runs collapse to one) and `?` match within one path component;
//! - `[...]` is a set: `!` first negates, `]` first is literal, `a-z` ranges (bytes), and the
//!   C-locale classes `[:alpha:]` etc.; an unknown class makes the whole pattern match nothing;
//!   a `[` with no `]` after it is a literal `[`;
//! - no braces, no `~` expansion, no `**` (it is `*`);
//! - a name starting with `.` matches only a component whose pattern starts with a literal `.`;
//! - components without a metacharacter are taken as written, and the whole match must exist
//!   (lstat: a dangling symlink matches); no match is not an error (no GLOB_NOCHECK);
//! - the matches of one pattern come sorted by strcmp.
//!
//! Two corners are not followed: a set whose `]` is only found past a `/` (OpenBSD's compiler
//! lets a set span components, which its matcher then reads past), here a literal `[`; and the
//! directory entries `.` and `..`, which `list_dir` never returns (a `.*` component in sshd also
//! matches them: directories, which sshd reads as empty files).
//!
//! Matching is done by `regex::bytes` (linear time on any pattern and name); this module only
//! translates glob(3)'s syntax, which neither the `glob` crate (no `\` quoting, no classes, an
//! unclosed `[` is an error) nor `globset` (adds `{a,b}`, no classes, no leading-dot rule) speaks.

use anyhow::{Context, Result};

/// glob(3)'s PATH_MAX: a longer pattern matches nothing.
const PATH_MAX: usize = 4096;

/// One compiled path component.
enum Segment {
    /// No metacharacter: the name as written (quotes removed).
    Literal(Vec<u8>),
    /// A pattern: its matcher, and whether a leading `.` in a name may match.
    Pattern { re: regex::bytes::Regex, dot: bool },
}

/// What glob(3) needs of a file system: the root's, or one in memory.
pub trait Dirs {
    /// The names in directory `dir` (following symlinks); empty when it is not a directory.
    fn names(&self, dir: &str) -> Result<Vec<String>>;
    /// Whether anything, a dangling symlink included, is at `path` (lstat).
    fn exists(&self, path: &str) -> Result<bool>;
}

/// A pattern character: its byte, and whether a `\` quoted it.
#[derive(Clone, Copy, PartialEq)]
struct Pc {
    c: u8,
    quoted: bool,
}

impl Pc {
    fn is(self, c: u8) -> bool {
        !self.quoted && self.c == c
    }
}

/// The classes of OpenBSD's `charclass.h`, C locale.
fn class(name: &[u8]) -> Option<fn(u8) -> bool> {
    Some(match name {
        b"alnum" => |c: u8| c.is_ascii_alphanumeric(),
        b"alpha" => |c: u8| c.is_ascii_alphabetic(),
        b"blank" => |c: u8| c == b' ' || c == b'\t',
        b"cntrl" => |c: u8| c.is_ascii_control(),
        b"digit" => |c: u8| c.is_ascii_digit(),
        b"graph" => |c: u8| c.is_ascii_graphic(),
        b"lower" => |c: u8| c.is_ascii_lowercase(),
        b"print" => |c: u8| c.is_ascii_graphic() || c == b' ',
        b"punct" => |c: u8| c.is_ascii_punctuation(),
        b"space" => |c: u8| matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'),
        b"upper" => |c: u8| c.is_ascii_uppercase(),
        b"xdigit" => |c: u8| c.is_ascii_hexdigit(),
        _ => return None,
    })
}

/// The regex of a byte set, as ranges (`[^\x00-\xFF]`-free: an empty set never matches).
fn set_regex(set: &[bool; 256]) -> String {
    let mut out = String::from("[");
    let mut i = 0;
    while i < 256 {
        if !set[i] {
            i += 1;
            continue;
        }
        let start = i;
        while i < 256 && set[i] {
            i += 1;
        }
        out.push_str(&format!("\\x{start:02X}-\\x{:02X}", i - 1));
    }
    if out.len() == 1 {
        return "(?:\\b\\B)".to_string(); // never matches
    }
    out.push(']');
    out
}

/// Compiles a `[` set starting after the `[` at `p[*i]`; `None` when the `[` is literal
/// (no `]` after it), `Some(None)` for an unknown class (the pattern matches nothing).
fn compile_set(p: &[Pc], i: &mut usize) -> Option<Option<String>> {
    let mut j = *i;
    let negate = j < p.len() && p[j].is(b'!');
    if negate {
        j += 1;
    }
    // OpenBSD: the `]` is searched from the set's second character on.
    if j >= p.len() || !p[j + 1..].iter().any(|c| c.is(b']')) {
        return None;
    }
    let mut set = [false; 256];
    let mut c = p[j];
    j += 1;
    loop {
        if c.is(b'[') && j < p.len() && p[j].is(b':') {
            // One or more `[:name:]`; a `[:` that is no class falls through as a literal `[`.
            let mut known = true;
            while c.is(b'[') && j < p.len() && p[j].is(b':') {
                let rest = &p[j + 1..];
                let Some(colon) = rest.iter().position(|x| x.is(b':')) else {
                    break;
                };
                if !rest.get(colon + 1).is_some_and(|x| x.is(b']')) {
                    break;
                }
                // A quoted letter never equals a class name's (OpenBSD compares marked chars).
                let name: Vec<u8> = rest[..colon]
                    .iter()
                    .map(|x| if x.quoted { 0 } else { x.c })
                    .collect();
                let Some(f) = class(&name) else {
                    known = false;
                    break;
                };
                for (b, s) in set.iter_mut().enumerate() {
                    *s |= f(b as u8);
                }
                j += colon + 3;
                let Some(&next) = p.get(j) else {
                    // `[[:alpha:]`: the `]` seen ahead was the class's own; OpenBSD reads past
                    // the pattern's end here. Nothing matches.
                    return Some(None);
                };
                c = next;
                j += 1;
            }
            if !known {
                return Some(None);
            }
            if c.is(b']') {
                break;
            }
        }
        let lo = c.c;
        if j + 1 < p.len() && p[j].is(b'-') && !p[j + 1].is(b']') {
            let hi = p[j + 1].c;
            if lo <= hi {
                (lo..=hi).for_each(|b| set[b as usize] = true);
            }
            j += 2;
        } else {
            set[lo as usize] = true;
        }
        let Some(&next) = p.get(j) else {
            return Some(None); // as above: the `]` ahead was a class's
        };
        j += 1;
        if next.is(b']') {
            break;
        }
        c = next;
    }
    *i = j;
    if negate {
        set.iter_mut().for_each(|s| *s = !*s);
    }
    Some(Some(set_regex(&set)))
}

/// One component: a literal, a pattern, or `None` when it can match nothing (an unknown class).
fn compile_segment(p: &[Pc]) -> Result<Option<Segment>> {
    let mut re = String::from("(?s-u)\\A");
    let mut meta = false;
    let mut literal = Vec::new();
    let mut i = 0;
    while i < p.len() {
        let c = p[i];
        i += 1;
        if c.is(b'[') {
            let mut j = i;
            match compile_set(p, &mut j) {
                Some(Some(set)) => {
                    meta = true;
                    re.push_str(&set);
                    i = j;
                    continue;
                }
                Some(None) => return Ok(None),
                None => {}
            }
        } else if c.is(b'?') {
            meta = true;
            re.push('.');
            continue;
        } else if c.is(b'*') {
            meta = true;
            if !re.ends_with(".*") {
                re.push_str(".*");
            }
            continue;
        }
        literal.push(c.c);
        re.push_str(&format!("\\x{:02X}", c.c));
    }
    if !meta {
        return Ok(Some(Segment::Literal(literal)));
    }
    re.push_str("\\z");
    let re = regex::bytes::Regex::new(&re).context("compiling an Include pattern")?;
    Ok(Some(Segment::Pattern {
        re,
        dot: p.first().is_some_and(|c| c.c == b'.'),
    }))
}

/// The compiled pattern, component by component; `None` if it can match nothing.
fn compile(pattern: &str) -> Result<Option<Vec<Segment>>> {
    let b = pattern.as_bytes();
    let mut chars = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            chars.push(Pc {
                c: b[i + 1],
                quoted: true,
            });
            i += 2;
        } else {
            chars.push(Pc {
                c: b[i],
                quoted: false,
            });
            i += 1;
        }
    }
    let mut out = Vec::new();
    for seg in chars.split(|c| c.is(b'/')) {
        if seg.is_empty() {
            continue;
        }
        match compile_segment(seg)? {
            Some(s) => out.push(s),
            None => return Ok(None),
        }
    }
    Ok(Some(out))
}

/// What a whole read may spend on globbing (OpenBSD's glob has GLOB_LIMIT for this, which sshd
/// does not pass): matches returned and directory entries looked at, over every pattern.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub matches: usize,
    pub entries: usize,
}

/// The budget ran out: guestprep reads no further (sshd would).
#[derive(Debug, thiserror::Error)]
pub enum OverBudget {
    #[error("more than {0} files match the Include patterns")]
    Matches(usize),
    #[error("the Include patterns make glob look at more than {0} directory entries")]
    Entries(usize),
}

/// The paths `pattern` (absolute) matches, sorted, as sshd's glob(3) returns them. Every match
/// and every directory entry looked at is taken from `budget` ([`OverBudget`] when it runs out;
/// `limits` are the starting amounts, for the message).
pub fn expand(
    dirs: &dyn Dirs,
    pattern: &str,
    budget: &mut Budget,
    limits: Budget,
) -> Result<Vec<String>> {
    if pattern.len() >= PATH_MAX || !pattern.starts_with('/') {
        return Ok(Vec::new());
    }
    let Some(segments) = compile(pattern)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let mut w = Walk {
        dirs,
        out: &mut out,
        budget,
        limits,
    };
    w.walk(&segments, String::new())?;
    out.sort();
    Ok(out)
}

struct Walk<'a> {
    dirs: &'a dyn Dirs,
    out: &'a mut Vec<String>,
    budget: &'a mut Budget,
    limits: Budget,
}

impl Walk<'_> {
    /// Matches `segments` below `at` (a path without its trailing `/`; "" for the root).
    fn walk(&mut self, segments: &[Segment], mut at: String) -> Result<()> {
        let mut rest = segments;
        // Components without metacharacters are taken as written (glob2).
        while let Some((Segment::Literal(name), tail)) = rest.split_first() {
            at.push('/');
            at.push_str(&String::from_utf8_lossy(name));
            rest = tail;
        }
        let Some((Segment::Pattern { re, dot }, tail)) = rest.split_first() else {
            let path = if at.is_empty() { "/".to_string() } else { at };
            if self.dirs.exists(&path)? {
                if self.budget.matches == 0 {
                    anyhow::bail!(OverBudget::Matches(self.limits.matches));
                }
                self.budget.matches -= 1;
                self.out.push(path);
            }
            return Ok(());
        };
        let dir = if at.is_empty() { "/" } else { at.as_str() };
        let names = self.dirs.names(dir)?;
        if names.len() > self.budget.entries {
            anyhow::bail!(OverBudget::Entries(self.limits.entries));
        }
        self.budget.entries -= names.len();
        for name in names {
            if (name.starts_with('.') && !dot) || !re.is_match(name.as_bytes()) {
                continue;
            }
            self.walk(tail, format!("{at}/{name}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// A directory tree of names: "dir/" entries are directories.
    struct Names(BTreeSet<String>);

    impl Dirs for Names {
        fn names(&self, dir: &str) -> Result<Vec<String>> {
            let prefix = if dir == "/" {
                "/".to_string()
            } else {
                format!("{dir}/")
            };
            let mut v: Vec<String> = self
                .0
                .iter()
                .filter_map(|p| p.strip_prefix(&prefix))
                .filter_map(|r| r.trim_end_matches('/').split('/').next())
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect();
            v.dedup();
            Ok(v)
        }
        fn exists(&self, path: &str) -> Result<bool> {
            Ok(self.0.contains(path) || self.0.contains(&format!("{path}/")))
        }
    }

    fn tree(paths: &[&str]) -> Names {
        Names(paths.iter().map(|p| format!("/d/{p}")).collect())
    }

    const PLENTY: Budget = Budget {
        matches: 100,
        entries: 100,
    };

    fn names(t: &Names, pat: &str) -> Vec<String> {
        expand(t, &format!("/d/{pat}"), &mut PLENTY.clone(), PLENTY)
            .unwrap()
            .into_iter()
            .map(|p| p.trim_start_matches("/d/").to_string())
            .collect()
    }

    #[test]
    fn sets_ranges_classes_and_negation() {
        let t = tree(&["a.conf", "b.conf", "c.conf", "1.conf", "]x", "-y", "[z"]);
        assert_eq!(names(&t, "[ab].conf"), ["a.conf", "b.conf"]);
        assert_eq!(names(&t, "[!ab].conf"), ["1.conf", "c.conf"]);
        assert_eq!(names(&t, "[a-b].conf"), ["a.conf", "b.conf"]);
        assert_eq!(names(&t, "[[:digit:]].conf"), ["1.conf"]);
        assert_eq!(names(&t, "[[:alpha:][:digit:]].conf").len(), 4);
        assert_eq!(names(&t, "[]]x"), ["]x"], "`]` first is a member");
        assert_eq!(names(&t, "[a-]y"), ["-y"], "a `-` before `]` is a member");
        assert_eq!(names(&t, "[-]y"), ["-y"]);
        assert_eq!(names(&t, "[z"), ["[z"], "an unclosed `[` is literal");
        assert!(names(&t, "[[:nope:]].conf").is_empty(), "unknown class");
        assert!(
            names(&t, "[z-a].conf").is_empty(),
            "a reversed range is empty"
        );
    }

    #[test]
    fn stars_quotes_dots_and_order() {
        let t = tree(&[".hidden.conf", "b.conf", "a.conf", "*.conf", "x.conf.bak"]);
        assert_eq!(names(&t, "*.conf"), ["*.conf", "a.conf", "b.conf"]);
        assert_eq!(names(&t, "**.conf"), ["*.conf", "a.conf", "b.conf"]);
        assert_eq!(
            names(&t, "\\*.conf"),
            ["*.conf"],
            "a quoted star is literal"
        );
        assert_eq!(names(&t, ".*"), [".hidden.conf"]);
        assert_eq!(names(&t, "?.conf"), ["*.conf", "a.conf", "b.conf"]);
        assert!(
            names(&t, "[.]hidden.conf").is_empty(),
            "a leading dot is literal"
        );
    }

    #[test]
    fn literal_components_and_patterns_in_directories() {
        let t = tree(&["x/", "x/1.conf", "y/", "y/2.conf", "z.conf"]);
        assert_eq!(names(&t, "*/*.conf"), ["x/1.conf", "y/2.conf"]);
        assert_eq!(names(&t, "z.conf"), ["z.conf"]);
        assert!(names(&t, "missing.conf").is_empty());
        assert_eq!(
            names(&t, "*"),
            ["x", "y", "z.conf"],
            "directories match too"
        );
        let one = Budget {
            matches: 1,
            entries: 100,
        };
        let err = expand(&t, "/d/*/*.conf", &mut one.clone(), one).unwrap_err();
        assert!(
            matches!(
                err.downcast_ref::<OverBudget>(),
                Some(OverBudget::Matches(1))
            ),
            "{err}"
        );
        let few = Budget {
            matches: 100,
            entries: 4,
        };
        let err = expand(&t, "/d/*/*.conf", &mut few.clone(), few).unwrap_err();
        assert!(
            matches!(
                err.downcast_ref::<OverBudget>(),
                Some(OverBudget::Entries(4))
            ),
            "{err}"
        );
    }
}
