//! Reading configuration the way the system's own tools do: systemd-style drop-in directories
//! (`sysctl.d`, `modules-load.d`, `modprobe.d`) where a file name in an earlier directory hides
//! the same name in a later one, files apply in name order, and a symlink to /dev/null masks.
//!
//! Used by checks to tell not only "our file is right" but "the setting is effective": another
//! file can override ours, and the report should say which.

use anyhow::Result;

use crate::engine::System;

/// Drop-in files of `dirs` (highest precedence first) ending in `suffix`, in application order,
/// as absolute paths in the managed system.
pub fn dropins(sys: &System, dirs: &[&str], suffix: &str) -> Result<Vec<String>> {
    let mut by_name: std::collections::BTreeMap<String, String> = Default::default();
    for dir in dirs.iter().rev() {
        for name in sys.list_dir(dir)? {
            if name.ends_with(suffix) && !name.starts_with('.') {
                by_name.insert(name.clone(), format!("{dir}/{name}"));
            }
        }
    }
    let mut out = Vec::new();
    for path in by_name.into_values() {
        if sys
            .read_link(&path)?
            .is_some_and(|t| t == std::path::Path::new("/dev/null"))
        {
            continue;
        }
        out.push(path);
    }
    Ok(out)
}

/// Lines of a config file without comments (`#`, and `;` when `semicolon`) and blanks, with
/// 1-based line numbers.
pub fn lines(text: &str, semicolon: bool) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(move |(i, l)| {
        let t = l.trim();
        if t.is_empty() || t.starts_with('#') || (semicolon && t.starts_with(';')) {
            None
        } else {
            Some((i + 1, t))
        }
    })
}
