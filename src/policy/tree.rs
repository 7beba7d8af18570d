//! The merged policy tree: every key and value of every fragment, with the file, line and column it
//! came from.
//!
//! Owns parsing one TOML fragment into a [`Table`] (keeping spans) and showing the merged tree as
//! TOML. Merging fragments is `merge`'s; what the keys mean is `validate`'s.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::diag::Diagnostic;

/// Where a key or value was written: file, 1-based line and column.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Origin {
    pub file: Arc<PathBuf>,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// A parsed TOML value with its origin.
#[derive(Clone, Debug)]
pub struct Node {
    pub value: Value,
    pub origin: Origin,
}

#[derive(Clone, Debug)]
pub enum Value {
    String(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
    Datetime(String),
    Array(Vec<Node>),
    Table(Table),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Bool(_) => "a boolean",
            Value::Datetime(_) => "a datetime",
            Value::Array(_) => "an array",
            Value::Table(_) => "a table",
        }
    }
}

/// One key of a table: where the key was written and its value.
#[derive(Clone, Debug)]
pub struct Entry {
    pub key_origin: Origin,
    pub node: Node,
}

/// A table, sorted by key (output order does not depend on fragment order).
#[derive(Clone, Debug, Default)]
pub struct Table {
    pub entries: BTreeMap<String, Entry>,
}

pub use super::merge::ADD_SUFFIX;

impl Table {
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }
}

impl Table {
    /// The table as TOML, each value followed by a comment naming where it came from (`policy
    /// show`). Values are written by the toml crate, so any string round-trips: parsing the
    /// output gives the same policy (a property the fuzz target checks).
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        for (name, e) in &self.entries {
            match &e.node.value {
                Value::Table(t) => {
                    let _ = writeln!(s, "\n[{}]", toml_key(name));
                    // Lists of tables after the plain keys, each entry with its own origin.
                    let (lists, plain): (Vec<_>, Vec<_>) = t
                        .entries
                        .iter()
                        .partition(|(_, e)| tables(&e.node.value).is_some());
                    for (k, e) in plain {
                        let _ = writeln!(
                            s,
                            "{} = {}  # {}",
                            toml_key(k),
                            to_toml(&e.node),
                            comment(&e.node.origin)
                        );
                    }
                    for (k, e) in lists {
                        let header = format!("{}.{}", toml_key(name), toml_key(k));
                        render_entries(&mut s, &header, tables(&e.node.value).unwrap_or(&[]));
                    }
                }
                Value::Array(a) if tables(&e.node.value).is_some() => {
                    render_entries(&mut s, &toml_key(name), a);
                }
                _ => {
                    let _ = writeln!(
                        s,
                        "{} = {}  # {}",
                        toml_key(name),
                        to_toml(&e.node),
                        comment(&e.node.origin)
                    );
                }
            }
        }
        s
    }
}

/// The entries of a non-empty list made only of tables.
fn tables(v: &Value) -> Option<&[Node]> {
    match v {
        Value::Array(a)
            if !a.is_empty() && a.iter().all(|n| matches!(n.value, Value::Table(_))) =>
        {
            Some(a)
        }
        _ => None,
    }
}

/// `[[header]]` blocks, one per entry, each naming the fragment it came from.
fn render_entries(s: &mut String, header: &str, entries: &[Node]) {
    use std::fmt::Write;
    for n in entries {
        let _ = writeln!(s, "\n[[{header}]]  # {}", comment(&n.origin));
        if let Value::Table(t) = &n.value {
            for (k, e) in &t.entries {
                let _ = writeln!(s, "{} = {}", toml_key(k), to_toml(&e.node));
            }
        }
    }
}

/// An origin as a comment: one line, whatever the file name holds.
fn comment(o: &Origin) -> String {
    o.to_string().replace(['\n', '\r'], " ")
}

fn toml_key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        toml::Value::String(k.to_string()).to_string()
    }
}

fn to_value(n: &Node) -> toml::Value {
    match &n.value {
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Integer(i) => toml::Value::Integer(*i),
        Value::Float(f) => toml::Value::Float(*f),
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Datetime(d) => d
            .parse::<toml::value::Datetime>()
            .map_or_else(|_| toml::Value::String(d.clone()), toml::Value::Datetime),
        Value::Array(a) => toml::Value::Array(a.iter().map(to_value).collect()),
        Value::Table(t) => toml::Value::Table(
            t.entries
                .iter()
                .map(|(k, e)| (k.clone(), to_value(&e.node)))
                .collect(),
        ),
    }
}

/// One value as inline TOML.
pub(super) fn to_toml(n: &Node) -> String {
    to_value(n).to_string()
}

/// Maps byte offsets of one file to line and column.
struct Locator {
    file: Arc<PathBuf>,
    line_starts: Vec<usize>,
    text: Arc<str>,
}

impl Locator {
    fn new(file: &Path, text: &str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Locator {
            file: Arc::new(file.to_path_buf()),
            line_starts,
            text: Arc::from(text),
        }
    }

    fn origin(&self, offset: usize) -> Origin {
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[line];
        let end = offset.min(self.text.len());
        let column = self
            .text
            .get(start..end)
            .map_or(1, |s| s.chars().count() + 1);
        Origin {
            file: self.file.clone(),
            line: line + 1,
            column,
        }
    }
}

/// Parses one fragment. A syntax error stops the fragment: only the first is reported (the
/// parser's later ones are mostly knock-on noise of the first), never a partial table. A
/// duplicate key names the key and the line that defined it first.
pub fn parse_fragment(file: &Path, text: &str) -> Result<Table, Vec<Diagnostic>> {
    let locator = Locator::new(file, text);
    let (doc, errors) = DeTable::parse_recoverable(text);
    if let Some(e) = errors
        .iter()
        .min_by_key(|e| e.span().map_or(usize::MAX, |s| s.start))
    {
        let span = e.span().unwrap_or(0..0);
        let origin = locator.origin(span.start);
        let msg = e.message().trim();
        let msg = match duplicate_key(text, &span, origin.line) {
            Some((key, first)) if msg.contains("duplicate key") => {
                format!("TOML syntax: duplicate key `{key}`: first defined at line {first}")
            }
            _ => format!("TOML syntax: {msg}"),
        };
        return Err(vec![Diagnostic::new(origin, "", msg)]);
    }
    let mut diags = Vec::new();
    let table = convert_table(&locator, doc.get_ref(), &mut diags);
    if diags.is_empty() {
        Ok(table)
    } else {
        Err(diags)
    }
}

/// The key a duplicate-key error points at, and the line where it was first defined (a
/// `key =` line or a `[table]` header of that name, before the error's line).
fn duplicate_key(
    text: &str,
    span: &std::ops::Range<usize>,
    line: usize,
) -> Option<(String, usize)> {
    let raw = text.get(span.clone())?.trim();
    let raw = raw.trim_start_matches('[').trim_end_matches(']').trim();
    let key = raw
        .split(|c: char| c == '=' || c.is_whitespace())
        .next()?
        .trim_matches('"')
        .to_string();
    if key.is_empty() {
        return None;
    }
    let last = key.rsplit('.').next().unwrap_or(&key).to_string();
    let first = text.lines().take(line.saturating_sub(1)).position(|l| {
        let l = l.trim_start();
        let header = l
            .trim_start_matches('[')
            .trim_end()
            .trim_end_matches(']')
            .trim();
        let lhs = l.split('=').next().unwrap_or("").trim().trim_matches('"');
        (l.starts_with('[') && (header == key || header.ends_with(&format!(".{last}"))))
            || (l.contains('=') && (lhs == key || lhs == last))
    })?;
    Some((key, first + 1))
}

fn convert_table(loc: &Locator, table: &DeTable<'_>, diags: &mut Vec<Diagnostic>) -> Table {
    let mut out = Table::default();
    for (key, value) in table.iter() {
        let key_origin = loc.origin(key.span().start);
        let node = convert_value(loc, value, diags);
        out.entries
            .insert(key.get_ref().to_string(), Entry { key_origin, node });
    }
    out
}

fn convert_value(loc: &Locator, value: &Spanned<DeValue<'_>>, diags: &mut Vec<Diagnostic>) -> Node {
    let origin = loc.origin(value.span().start);
    let v = match value.get_ref() {
        DeValue::String(s) => Value::String(s.to_string()),
        DeValue::Integer(i) => match i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()) {
            Ok(n) => Value::Integer(n),
            Err(_) => {
                diags.push(Diagnostic::new(
                    origin.clone(),
                    "",
                    format!("integer {} does not fit in 64 bits", i.as_str()),
                ));
                Value::Integer(0)
            }
        },
        DeValue::Float(f) => Value::Float(f.as_str().replace('_', "").parse().unwrap_or(f64::NAN)),
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(d) => Value::Datetime(d.to_string()),
        DeValue::Array(a) => Value::Array(a.iter().map(|v| convert_value(loc, v, diags)).collect()),
        DeValue::Table(t) => Value::Table(convert_table(loc, t, diags)),
    };
    Node { value: v, origin }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str, text: &str) -> Table {
        parse_fragment(Path::new(name), text).expect("valid TOML")
    }

    #[test]
    fn origins_point_at_key_and_value() {
        let t = parse("a.toml", "# c\n[sysctl]\n\"net.ipv4.ip_forward\" = 1\n");
        let sysctl = t.get("sysctl").unwrap();
        let Value::Table(s) = &sysctl.node.value else {
            panic!("table")
        };
        let e = s.get("net.ipv4.ip_forward").unwrap();
        assert_eq!((e.key_origin.line, e.key_origin.column), (3, 1));
        assert_eq!((e.node.origin.line, e.node.origin.column), (3, 25));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = parse_fragment(Path::new("bad.toml"), "[x]\nkey = \n").unwrap_err();
        assert!(!err.is_empty());
        assert_eq!(err[0].origin.line, 2);
    }

    #[test]
    fn add_appends_only_what_is_new_whatever_its_origin() {
        let mut base = parse(
            "a.toml",
            "[x]\nl = ['a', 1, 1.5, true, 1979-05-27, [1, 2], {p = 'q', r = [1]}]\n",
        );
        // Equal values written elsewhere (another file, another spacing) are not added again;
        // values that only look alike (1 and 1.0, a string and a date, [2, 1]) are; a value
        // repeated within the addition is added once.
        base.merge(parse(
            "b.toml",
            "[x]\nl_add = [ 'a' , 1.0, 1, 1.5, 'b', 'b', '1979-05-27', 1979-05-27, [2, 1], [1,2],\n  { r = [1], p = 'q' }, {p = 'q'}, false, true]\n",
        ));
        let Value::Table(x) = &base.get("x").unwrap().node.value else {
            panic!()
        };
        let Value::Array(l) = &x.get("l").unwrap().node.value else {
            panic!()
        };
        let shown: Vec<String> = l.iter().map(to_toml).collect();
        assert_eq!(
            shown,
            [
                "\"a\"",
                "1",
                "1.5",
                "true",
                "1979-05-27",
                "[1, 2]",
                "{ p = \"q\", r = [1] }",
                "1.0",
                "\"b\"",
                "\"1979-05-27\"",
                "[2, 1]",
                "{ p = \"q\" }",
                "false",
            ]
        );
        assert_eq!(l[7].origin.file.to_str(), Some("b.toml"));
        assert_eq!(l[0].origin.file.to_str(), Some("a.toml"));
    }
}
