//! `[[files]]`: whole files, directories and absent paths guestprep owns, their keys, validation
//! and typed value (the items are `resources/file.rs`).

use serde::Serialize;

use super::tree::{Entry, Node, Value};
use super::validate::{V, check_abs_path, parse_mode};

/// `[[files]]`: a managed file, the escape hatch.
#[derive(Clone, Debug, Serialize)]
pub struct ManagedFile {
    pub path: String,
    /// The exact content of a file (`None` for a directory or an absent file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// `file` (default) or `directory`.
    #[serde(skip_serializing_if = "FileKind::is_file")]
    pub kind: FileKind,
    /// `present` (default) or `absent`: the path must not exist.
    #[serde(skip_serializing_if = "FileState::is_present")]
    pub state: FileState,
    /// Owner and group by name (looked up in the root's /etc/passwd and /etc/group) or number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Octal mode; `None` keeps the mode of an existing file (0644 for a new one).
    #[serde(serialize_with = "ser_mode", skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Units restarted (if running) after this file changed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub restart: Vec<String>,
    /// Units reloaded (or restarted when they cannot reload; if running) after this file changed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reload: Vec<String>,
}

/// What a `[[files]]` entry manages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    #[default]
    File,
    Directory,
}

impl FileKind {
    fn is_file(&self) -> bool {
        *self == FileKind::File
    }
}

/// Whether a `[[files]]` path must exist.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileState {
    #[default]
    Present,
    Absent,
}

impl FileState {
    fn is_present(&self) -> bool {
        *self == FileState::Present
    }
}

fn ser_mode<S: serde::Serializer>(mode: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
    match mode {
        Some(m) => s.serialize_str(&format!("{m:04o}")),
        None => s.serialize_none(),
    }
}

impl V {
    pub(super) fn files(&mut self, e: &Entry) -> Vec<ManagedFile> {
        let want = "an array of tables `[[files]]`";
        let Some(items) = self.typed(e, "files", want, |v| match v {
            Value::Array(a) => Some(a),
            _ => None,
        }) else {
            return Vec::new();
        };
        let mut out: Vec<ManagedFile> = Vec::new();
        // The paths in `out`, to find one managed twice without a scan of `out` per entry.
        let mut paths: std::collections::HashSet<String> = Default::default();
        for (i, n) in items.iter().enumerate() {
            let p = format!("files[{i}]");
            let Node {
                value: Value::Table(t),
                origin,
            } = n
            else {
                self.err(
                    &n.origin,
                    &p,
                    format!("expected a table, found {}", n.value.type_name()),
                );
                continue;
            };
            self.known_keys(
                t,
                &p,
                &[
                    "path", "content", "mode", "owner", "group", "state", "kind", "restart",
                    "reload",
                ],
            );
            let kind = match self.string(t, &p, "kind").as_deref() {
                None | Some("file") => FileKind::File,
                Some("directory") => FileKind::Directory,
                Some(other) => {
                    let o = t.get("kind").expect("present").node.origin.clone();
                    let msg = format!("`{other}` is not a kind: \"file\" or \"directory\"");
                    self.err(&o, &format!("{p}.kind"), msg);
                    FileKind::File
                }
            };
            let state = match self.string(t, &p, "state").as_deref() {
                None | Some("present") => FileState::Present,
                Some("absent") => FileState::Absent,
                Some(other) => {
                    let o = t.get("state").expect("present").node.origin.clone();
                    let msg = format!("`{other}` is not a state: \"present\" or \"absent\"");
                    self.err(&o, &format!("{p}.state"), msg);
                    FileState::Present
                }
            };
            let mut ids = [None, None];
            for (slot, key) in ids.iter_mut().zip(["owner", "group"]) {
                if let Some(v) = self.string(t, &p, key) {
                    match check_account(&v) {
                        Ok(()) => *slot = Some(v),
                        Err(m) => {
                            let o = t.get(key).expect("present").node.origin.clone();
                            self.err(&o, &format!("{p}.{key}"), m);
                        }
                    }
                }
            }
            let [owner, group] = ids;
            let restart = self.list(t, &p, "restart", crate::systemd::check_unit_name);
            let reload = self.list(t, &p, "reload", crate::systemd::check_unit_name);
            for (i, u) in reload.iter().enumerate() {
                if restart.contains(u) {
                    let o = t.get("reload").expect("present").node.origin.clone();
                    self.err(
                        &o,
                        &format!("{p}.reload[{i}]"),
                        format!("`{u}` is also in {p}.restart: choose one"),
                    );
                }
            }
            let path = match self.string(t, &p, "path") {
                Some(path) => {
                    match check_abs_path(&path).and_then(|()| check_not_reserved(&path)) {
                        Ok(()) => Some(path),
                        Err(m) => {
                            self.err(
                                &t.get("path").expect("present").node.origin,
                                &format!("{p}.path"),
                                m,
                            );
                            None
                        }
                    }
                }
                None => {
                    if t.get("path").is_none() {
                        self.err(origin, &format!("{p}.path"), "missing required key `path`");
                    }
                    None
                }
            };
            let content = self.string(t, &p, "content");
            let wants_content = kind == FileKind::File && state == FileState::Present;
            if wants_content && content.is_none() && t.get("content").is_none() {
                self.err(
                    origin,
                    &format!("{p}.content"),
                    "missing required key `content`",
                );
            }
            if !wants_content && let Some(e) = t.get("content") {
                let why = if state == FileState::Absent {
                    "an absent path has no content"
                } else {
                    "a directory has no content"
                };
                self.err(&e.key_origin, &format!("{p}.content"), why);
            }
            if state == FileState::Absent {
                for key in ["mode", "owner", "group", "restart", "reload"] {
                    if let Some(e) = t.get(key) {
                        let msg = format!("`{key}` does not apply to an absent path");
                        self.err(&e.key_origin, &format!("{p}.{key}"), msg);
                    }
                }
            }
            let mode = match self.string(t, &p, "mode") {
                Some(m) => match parse_mode(&m) {
                    Ok(m) => Some(m),
                    Err(msg) => {
                        self.err(
                            &t.get("mode").expect("present").node.origin,
                            &format!("{p}.mode"),
                            msg,
                        );
                        None
                    }
                },
                None => None,
            };
            let content = if wants_content {
                content
            } else {
                Some(String::new())
            };
            if let (Some(path), Some(content)) = (path, content) {
                if !paths.insert(path.clone()) {
                    self.err(
                        origin,
                        &format!("{p}.path"),
                        format!("`{path}` is managed twice"),
                    );
                    continue;
                }
                out.push(ManagedFile {
                    path,
                    content: wants_content.then_some(content),
                    kind,
                    state,
                    owner,
                    group,
                    mode,
                    restart,
                    reload,
                });
            }
        }
        out
    }
}

/// A path `[[files]]` may manage: not guestprep's own files, not a kernel file system.
fn check_not_reserved(path: &str) -> Result<(), String> {
    use crate::paths::{KERNEL_DIRS, OWN_DIRS, is_at_or_under};
    if let Some(d) = OWN_DIRS.iter().find(|d| is_at_or_under(path, d)) {
        return Err(format!(
            "`{path}` is guestprep's own ({d}): a policy cannot manage its policy, report, state \
             or cache through [[files]] (use a fragment in /etc/guestprep/policy.d/ for policy)"
        ));
    }
    if let Some(d) = KERNEL_DIRS.iter().find(|d| is_at_or_under(path, d)) {
        return Err(format!(
            "`{path}` is on the kernel's {d} file system, not a file a policy can own (use \
             [sysctl] for /proc/sys, [modules] for module options)"
        ));
    }
    Ok(())
}

/// A user or group: a name as useradd allows it, or a number.
fn check_account(s: &str) -> Result<(), String> {
    let name_ok = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c));
    let number = (!s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse::<u64>().ok())
        .flatten();
    if let Some(n) = number {
        // chown(2) reads (uid_t)-1 as "leave it unchanged": apply would never converge.
        if n >= u64::from(u32::MAX) {
            return Err(format!(
                "`{s}` is not an id a file can have: ids go up to 4294967294 (4294967295 means \
                 \"unchanged\" to chown)"
            ));
        }
        Ok(())
    } else if name_ok {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not a user or group name (lowercase letters, digits, `_`, `-`) or number"
        ))
    }
}
