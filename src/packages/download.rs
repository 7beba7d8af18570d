//! Downloading a release `.deb`: streamed to a temp file beside the cache entry, sha256 computed on
//! the fly, renamed into place only when the hash matches. Connection errors, bodies cut short and
//! 5xx answers are retried with exponential backoff; 4xx answers and a checksum mismatch are not
//! (retrying cannot fix them). A cached file with the right hash is not downloaded again.

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
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
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
    Retry(String),
    Fatal(anyhow::Error),
}

fn attempt(client: &reqwest::blocking::Client, url: &str, part: &Path, progress: bool) -> Attempt {
    let mut resp = match client.get(url).send() {
        Ok(r) => r,
        Err(e) => return Attempt::Retry(format!("{e:#}")),
    };
    let status = resp.status();
    if status.is_server_error() {
        return Attempt::Retry(format!("server answered {status}"));
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
            Err(e) => return Attempt::Retry(format!("connection lost after {got} bytes: {e}")),
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
        return Attempt::Retry(format!("body cut short: {got} of {t} bytes"));
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
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(1800))
        .user_agent(concat!("guestprep/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("creating the HTTP client")?;
    let progress = std::io::stderr().is_terminal();
    let attempts = spec.retries + 1;
    let mut last = String::new();
    for n in 1..=attempts {
        // A progress bar on a terminal; plain lines otherwise (journald, CI, cloud-init logs).
        eprintln!(
            "guestprep: downloading {} (attempt {n}/{attempts})",
            spec.url
        );
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
            Attempt::Retry(why) => {
                let _ = std::fs::remove_file(&part);
                last = why;
                if n < attempts {
                    let delay = spec.base_delay * 2u32.saturating_pow(n - 1);
                    tracing::warn!(url = %spec.url, attempt = n, "download failed: {last}; retrying in {:.2}s", delay.as_secs_f64());
                    eprintln!(
                        "guestprep: download of {} failed (attempt {n}/{attempts}): {last}; retrying in {:.2}s",
                        spec.url,
                        delay.as_secs_f64()
                    );
                    std::thread::sleep(delay);
                }
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
