//! `guestprep prefetch`'s work: a URL downloaded into a directory, its sha256 and what the `.deb`
//! says of itself, for the policy snippet the verb prints.

use std::time::Duration;

use anyhow::Result;

use super::{deb, download};

/// The file name a URL's path ends with (no query, no fragment, percent-decoding left alone);
/// `download.deb` when it has none or it is not a plain name.
pub fn file_name_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.split(['?', '#']).next().unwrap_or("");
    let path = path.split_once('/').map_or("", |(_, p)| p);
    match path.rsplit('/').next() {
        Some(n) if !n.is_empty() && n != "." && n != ".." && !n.starts_with('.') => n.to_string(),
        _ => "download.deb".to_string(),
    }
}

/// `guestprep prefetch`: downloads a URL, prints its sha256 and the policy snippet.
pub fn prefetch(
    url: &str,
    dest_dir: &std::path::Path,
    retries: u32,
    base_delay: Duration,
) -> Result<(download::Fetched, Option<deb::DebInfo>)> {
    let name = file_name_of(url);
    let dest = dest_dir.join(&name);
    if std::fs::symlink_metadata(&dest).is_ok() {
        anyhow::bail!(
            "{} exists: not overwriting it (remove it, or choose another --keep-in directory)",
            dest.display()
        );
    }
    let spec = download::Spec::new(url, None, dest, retries, base_delay);
    let f = download::fetch(&spec)?;
    let info = deb::read(&f.path).ok();
    Ok((f, info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_from_urls() {
        assert_eq!(file_name_of("https://h/a/b.deb?token=x#f"), "b.deb");
        assert_eq!(file_name_of("https://h/"), "download.deb");
        assert_eq!(file_name_of("https://h"), "download.deb");
        assert_eq!(file_name_of("https://h/a/..?x"), "download.deb");
    }
}
