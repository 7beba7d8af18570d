//! Downloading a release `.deb`: streamed to a temp file beside the cache entry, sha256 computed on
//! the fly, renamed into place only when the hash matches. Connection errors, bodies cut short,
//! 5xx, 408 and 429 answers are retried with exponential backoff and jitter, honouring the
//! server's `Retry-After`, each delay capped and all of them together too; other 4xx answers and a
//! checksum mismatch are not (retrying cannot fix them). A cached file with the right hash is not
//! downloaded again. One line per attempt, with the underlying cause. Plain `http://` needs no CA
//! store; `https://` without one is a clear error naming the package to install.

use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// Why a download failed, for callers that branch on it.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("{url} answered {status}: not retried (a client error does not go away)")]
    Client { url: String, status: u16 },
    #[error(
        "checksum mismatch for {url}: expected sha256 {expected}, got {actual}; the file was deleted and nothing installed"
    )]
    Mismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("{url}: gave up after {attempts} attempts; last error: {last}")]
    Exhausted {
        url: String,
        attempts: u32,
        last: String,
    },
}

/// What to fetch and how hard to try.
#[derive(Clone, Debug)]
pub struct Spec {
    pub url: String,
    /// Expected sha256, lowercase hex; `None` only for `guestprep prefetch`.
    pub sha256: Option<String>,
    /// Host path of the cache entry.
    pub dest: PathBuf,
    /// Retries after the first attempt.
    pub retries: u32,
    /// First backoff delay; doubled after each retry.
    pub base_delay: Duration,
    /// The longest single wait (a `Retry-After` too).
    pub max_delay: Duration,
    /// The most time spent waiting between attempts, in all.
    pub max_total: Duration,
}

/// Defaults for [`Spec::max_delay`] and [`Spec::max_total`].
pub const MAX_DELAY: Duration = Duration::from_secs(60);
pub const MAX_TOTAL: Duration = Duration::from_secs(600);

impl Spec {
    /// A spec with the default caps.
    pub fn new(
        url: &str,
        sha256: Option<String>,
        dest: PathBuf,
        retries: u32,
        base: Duration,
    ) -> Self {
        Spec {
            url: url.to_string(),
            sha256,
            dest,
            retries,
            base_delay: base,
            max_delay: MAX_DELAY,
            max_total: MAX_TOTAL,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Fetched {
    pub path: PathBuf,
    pub sha256: String,
    pub bytes: u64,
    pub attempts: u32,
    pub from_cache: bool,
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = crate::saferead::open_regular(path)?
        .with_context(|| format!("opening {}: no such file", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

enum Attempt {
    Done(String, u64),
    /// Why, and how long the server asked us to wait (`Retry-After`).
    Retry(String, Option<Duration>),
    Fatal(anyhow::Error),
}

/// An error with every cause in its chain: reqwest's own message hides the one that matters
/// ("Connection refused", "dns error").
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// `Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
fn retry_after(v: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = crate::clock::parse_http_date(v)?;
    Some(crate::clock::until(at, now))
}

/// A jitter factor in [0, 1), so that many clones retrying do not retry in step.
fn jitter() -> f64 {
    fastrand::f64()
}

fn attempt(client: &reqwest::blocking::Client, url: &str, part: &Path, progress: bool) -> Attempt {
    let mut resp = match client.get(url).send() {
        Ok(r) => r,
        Err(e) => return Attempt::Retry(chain(&e), None),
    };
    let status = resp.status();
    let asked = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry_after(v, std::time::SystemTime::now()));
    // 408 Request Timeout and 429 Too Many Requests go away with time, like a 5xx.
    if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
        return Attempt::Retry(format!("server answered {status}"), asked);
    }
    if !status.is_success() {
        return Attempt::Fatal(
            DownloadError::Client {
                url: url.to_string(),
                status: status.as_u16(),
            }
            .into(),
        );
    }
    let total = resp.content_length();
    let mut out = match File::create(part) {
        Ok(f) => f,
        Err(e) => {
            return Attempt::Fatal(
                anyhow::Error::new(e).context(format!("creating {}", part.display())),
            );
        }
    };
    let mut h = Sha256::new();
    let mut got: u64 = 0;
    let mut buf = vec![0u8; 1 << 16];
    let mut last_report = Instant::now();
    loop {
        let n = match resp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                return Attempt::Retry(
                    format!("connection lost after {got} bytes: {}", chain(&e)),
                    None,
                );
            }
        };
        h.update(&buf[..n]);
        if let Err(e) = out.write_all(&buf[..n]) {
            return Attempt::Fatal(
                anyhow::Error::new(e).context(format!("writing {}", part.display())),
            );
        }
        got += n as u64;
        if progress && last_report.elapsed() > Duration::from_millis(100) {
            last_report = Instant::now();
            match total {
                Some(t) if t > 0 => eprint!(
                    "\r  {:.1}/{:.1} MiB ({}%)   ",
                    got as f64 / 1048576.0,
                    t as f64 / 1048576.0,
                    got * 100 / t
                ),
                _ => eprint!("\r  {:.1} MiB   ", got as f64 / 1048576.0),
            }
        }
    }
    if progress {
        eprintln!();
    }
    if let Some(t) = total
        && got != t
    {
        return Attempt::Retry(format!("body cut short: {got} of {t} bytes"), None);
    }
    if let Err(e) = out.sync_all() {
        return Attempt::Fatal(
            anyhow::Error::new(e).context(format!("syncing {}", part.display())),
        );
    }
    Attempt::Done(hex::encode(h.finalize()), got)
}

/// Fetches `spec.url` into `spec.dest` (or finds it there already).
pub fn fetch(spec: &Spec) -> Result<Fetched> {
    if let Some(want) = &spec.sha256
        && spec.dest.is_file()
        && sha256_file(&spec.dest)? == *want
    {
        let bytes = std::fs::metadata(&spec.dest)?.len();
        tracing::info!(file = %spec.dest.display(), "cached download has the right sha256: not downloading");
        return Ok(Fetched {
            path: spec.dest.clone(),
            sha256: want.clone(),
            bytes,
            attempts: 0,
            from_cache: true,
        });
    }
    if let Some(dir) = spec.dest.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let part = spec.dest.with_extension("part");
    let client = client(&spec.url)?;
    let progress = std::io::stderr().is_terminal();
    let attempts = spec.retries + 1;
    let mut last = String::new();
    let mut waited = Duration::ZERO;
    // A progress bar on a terminal; plain lines otherwise (journald, CI, cloud-init logs).
    eprintln!("guestprep: downloading {}", spec.url);
    for n in 1..=attempts {
        match attempt(&client, &spec.url, &part, progress) {
            Attempt::Done(actual, bytes) => {
                if let Some(want) = &spec.sha256
                    && actual != *want
                {
                    let _ = std::fs::remove_file(&part);
                    return Err(DownloadError::Mismatch {
                        url: spec.url.clone(),
                        expected: want.clone(),
                        actual,
                    }
                    .into());
                }
                std::fs::rename(&part, &spec.dest).with_context(|| {
                    format!("renaming {} to {}", part.display(), spec.dest.display())
                })?;
                if let Some(dir) = spec.dest.parent() {
                    File::open(dir).and_then(|d| d.sync_all()).ok();
                }
                eprintln!(
                    "guestprep: downloaded {} ({bytes} bytes, sha256 {actual})",
                    spec.dest.display()
                );
                return Ok(Fetched {
                    path: spec.dest.clone(),
                    sha256: actual,
                    bytes,
                    attempts: n,
                    from_cache: false,
                });
            }
            Attempt::Fatal(e) => {
                let _ = std::fs::remove_file(&part);
                return Err(e);
            }
            Attempt::Retry(why, asked) => {
                let _ = std::fs::remove_file(&part);
                last = why;
                if n == attempts {
                    eprintln!("guestprep: attempt {n}/{attempts} failed: {last}");
                    break;
                }
                // Exponential backoff with up to 50% jitter, or what the server asked for,
                // capped each time and in all.
                let backoff = spec
                    .base_delay
                    .saturating_mul(2u32.saturating_pow(n - 1))
                    .mul_f64(1.0 + jitter() / 2.0);
                let delay = asked.unwrap_or(backoff).min(spec.max_delay);
                if waited + delay > spec.max_total {
                    eprintln!(
                        "guestprep: attempt {n}/{attempts} failed: {last}; not retrying: waiting {:.1}s more would exceed {}s in all",
                        delay.as_secs_f64(),
                        spec.max_total.as_secs()
                    );
                    return Err(DownloadError::Exhausted {
                        url: spec.url.clone(),
                        attempts: n,
                        last,
                    }
                    .into());
                }
                eprintln!(
                    "guestprep: attempt {n}/{attempts} failed: {last}; retrying in {:.2}s{}",
                    delay.as_secs_f64(),
                    if asked.is_some() {
                        " (Retry-After)"
                    } else {
                        ""
                    }
                );
                std::thread::sleep(delay);
                waited += delay;
            }
        }
    }
    Err(DownloadError::Exhausted {
        url: spec.url.clone(),
        attempts,
        last,
    }
    .into())
}

/// The HTTP client. `http://` never needs a CA store; `https://` without one is an error that
/// names what to install (rustls finds no system certificates on a minimal root).
fn client(url: &str) -> Result<reqwest::blocking::Client> {
    // The process's TLS provider (ring): installed once; a second install is refused, harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let builder = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(1800))
        .user_agent(concat!("guestprep/", env!("CARGO_PKG_VERSION")));
    let https = url.starts_with("https://");
    let builder = if https {
        builder
    } else {
        builder.tls_certs_only(Vec::<reqwest::Certificate>::new())
    };
    builder.build().map_err(|e| {
        let why = chain(&e);
        if https {
            anyhow::anyhow!(
                "cannot download {url}: no TLS certificate store ({why}); install the ca-certificates package, or serve the .deb over http:// (its sha256 still protects it)"
            )
        } else {
            anyhow::anyhow!("creating the HTTP client: {why}")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(784_111_777); // 1994-11-06T08:49:37Z
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("99999999999999999999999", now), None);
    }

    #[test]
    fn jitter_is_a_fraction() {
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }
}
