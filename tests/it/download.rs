//! The `.deb` download against a real HTTP server on loopback, with real reqwest: retries with
//! exponential backoff on 5xx and cut bodies, none on 404 or a checksum mismatch, the cache reused
//! when its hash is right, and never a partial file left behind.

use crate::common;
use common::http::Server;

use std::time::Duration;

use guestprep::packages::download::{DownloadError, Spec, fetch, sha256_file};
use sha2::{Digest, Sha256};

fn payload() -> Vec<u8> {
    (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect()
}

fn spec(url: String, dest: &std::path::Path, retries: u32) -> Spec {
    Spec::new(
        &url,
        Some(hex::encode(Sha256::digest(payload()))),
        dest.join("pkg.deb"),
        retries,
        Duration::from_millis(50),
    )
}

fn only_final_file(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn downloads_verifies_and_reuses_the_cache() {
    let srv = Server::start();
    srv.add("a.deb", payload());
    let dir = tempfile::tempdir().unwrap();
    let s = spec(srv.url("/ok/a.deb"), dir.path(), 3);
    let f = fetch(&s).unwrap();
    assert!(!f.from_cache);
    assert_eq!(f.attempts, 1);
    assert_eq!(sha256_file(&f.path).unwrap(), *s.sha256.as_ref().unwrap());
    let f = fetch(&s).unwrap();
    assert!(f.from_cache);
    assert_eq!(
        srv.requests("/ok/a.deb").len(),
        1,
        "a cached file with the right hash is not downloaded again"
    );
    assert_eq!(only_final_file(dir.path()), ["pkg.deb"]);
}

#[test]
fn server_errors_are_retried_with_exponential_backoff() {
    let srv = Server::start();
    srv.add("b.deb", payload());
    let dir = tempfile::tempdir().unwrap();
    let f = fetch(&spec(srv.url("/flaky/2/b.deb"), dir.path(), 3)).unwrap();
    assert_eq!(f.attempts, 3);
    let t = srv.requests("/flaky/2/b.deb");
    assert_eq!(t.len(), 3);
    let (d1, d2) = (t[1] - t[0], t[2] - t[1]);
    assert!(
        d1 >= Duration::from_millis(50) && d2 >= Duration::from_millis(100),
        "delays {d1:?} then {d2:?}"
    );
    assert!(d2 > d1, "backoff grows: {d1:?} then {d2:?}");
}

#[test]
fn gives_up_after_the_configured_retries() {
    let srv = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let err = fetch(&spec(srv.url("/fail/c.deb"), dir.path(), 2)).unwrap_err();
    match err.downcast_ref::<DownloadError>() {
        Some(DownloadError::Exhausted {
            attempts: 3, last, ..
        }) => assert!(last.contains("500"), "{last}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(srv.requests("/fail/c.deb").len(), 3);
    assert!(
        only_final_file(dir.path()).is_empty(),
        "nothing left behind"
    );
}

#[test]
fn client_errors_are_not_retried() {
    let srv = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let err = fetch(&spec(srv.url("/missing/d.deb"), dir.path(), 4)).unwrap_err();
    assert!(
        matches!(
            err.downcast_ref::<DownloadError>(),
            Some(DownloadError::Client { status: 404, .. })
        ),
        "{err:#}"
    );
    assert_eq!(srv.requests("/missing/d.deb").len(), 1);
}

#[test]
fn a_cut_body_is_retried_and_never_kept() {
    let srv = Server::start();
    srv.add("e.deb", payload());
    let dir = tempfile::tempdir().unwrap();
    let err = fetch(&spec(srv.url("/cut/e.deb"), dir.path(), 1)).unwrap_err();
    assert!(
        matches!(
            err.downcast_ref::<DownloadError>(),
            Some(DownloadError::Exhausted { attempts: 2, .. })
        ),
        "{err:#}"
    );
    assert_eq!(srv.requests("/cut/e.deb").len(), 2);
    assert!(only_final_file(dir.path()).is_empty());
}

#[test]
fn a_checksum_mismatch_deletes_the_file_names_both_hashes_and_is_not_retried() {
    let srv = Server::start();
    srv.add("f.deb", payload());
    let dir = tempfile::tempdir().unwrap();
    let s = spec(srv.url("/wrong/f.deb"), dir.path(), 4);
    let err = fetch(&s).unwrap_err();
    let msg = format!("{err:#}");
    let mut reversed = payload();
    reversed.reverse();
    assert!(
        msg.contains(s.sha256.as_ref().unwrap())
            && msg.contains(&hex::encode(Sha256::digest(&reversed))),
        "{msg}"
    );
    assert_eq!(srv.requests("/wrong/f.deb").len(), 1);
    assert!(only_final_file(dir.path()).is_empty());
}

#[test]
fn busy_answers_are_retried_and_retry_after_is_honoured_within_its_cap() {
    let srv = Server::start();
    srv.add("g.deb", payload());
    let dir = tempfile::tempdir().unwrap();
    // 429 with Retry-After: 1 (seconds): the second request comes a second later, not 50 ms.
    let f = fetch(&spec(srv.url("/busy/429/1/1/g.deb"), dir.path(), 3)).unwrap();
    assert_eq!(f.attempts, 2);
    let t = srv.requests("/busy/429/1/1/g.deb");
    assert!(t[1] - t[0] >= Duration::from_secs(1), "{:?}", t[1] - t[0]);
    // 408 is retried too.
    let dir = tempfile::tempdir().unwrap();
    let f = fetch(&spec(srv.url("/busy/408/-/2/g.deb"), dir.path(), 3)).unwrap();
    assert_eq!(f.attempts, 3);
    // A Retry-After of an hour is capped by max_delay.
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(srv.url("/busy/503/3600/1/g.deb"), dir.path(), 3);
    s.max_delay = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let f = fetch(&s).unwrap();
    assert_eq!(f.attempts, 2);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // And the waits in all by max_total: it gives up instead of sleeping on.
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(srv.url("/busy/429/1/9/g.deb"), dir.path(), 8);
    s.max_total = Duration::from_millis(1500);
    let err = fetch(&s).unwrap_err();
    match err.downcast_ref::<DownloadError>() {
        Some(DownloadError::Exhausted { attempts, last, .. }) => {
            assert_eq!(*attempts, 2, "{last}");
            assert!(last.contains("429"), "{last}");
        }
        other => panic!("{other:?}"),
    }
}

/// `guestprep prefetch`: one line per failed attempt with the real cause; the file named from the
/// URL's path (not its query); an existing file never overwritten; the snippet is valid TOML.
#[test]
fn prefetch_names_causes_keeps_files_and_prints_valid_toml() {
    let bin = env!("CARGO_BIN_EXE_guestprep");
    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = std::process::Command::new(bin)
        .args(["prefetch", "--retries", "2", "--retry-delay", "0.05"])
        .arg(format!("http://127.0.0.1:{port}/x.deb"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    let attempts: Vec<&str> = err.lines().filter(|l| l.contains("attempt ")).collect();
    assert_eq!(attempts.len(), 3, "{err}");
    assert!(
        attempts.iter().all(|l| l.contains("Connection refused")),
        "the cause is named: {err}"
    );
    assert_ne!(o.status.code(), Some(0));

    let srv = Server::start();
    srv.add("h.deb", payload());
    let keep = tempfile::tempdir().unwrap();
    let url = srv.url("/ok/h.deb?token=a'b\\c");
    let run = || {
        std::process::Command::new(bin)
            .args(["prefetch", "--keep-in", keep.path().to_str().unwrap(), &url])
            .output()
            .unwrap()
    };
    let o = run();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(only_final_file(keep.path()), ["h.deb"]);
    let out = String::from_utf8_lossy(&o.stdout);
    let snippet: String = out
        .lines()
        .skip_while(|l| !l.starts_with('['))
        .map(|l| format!("{l}\n"))
        .collect();
    let doc: toml::Table = toml::from_str(&snippet).unwrap_or_else(|e| panic!("{e}: {snippet}"));
    let deb = &doc["packages"]["deb"][0];
    assert_eq!(deb["url"].as_str(), Some(url.as_str()));
    assert_eq!(
        deb["sha256"].as_str(),
        Some(hex::encode(Sha256::digest(payload())).as_str())
    );
    // Again: the kept file is not overwritten.
    std::fs::write(keep.path().join("h.deb"), b"mine").unwrap();
    let o = run();
    assert_ne!(o.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not overwriting"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(std::fs::read(keep.path().join("h.deb")).unwrap(), b"mine");
}

/// A minimal root has no CA store: an `http://` download (its sha256 protects it) still works,
/// an `https://` one says which package to install. The store is hidden in a mount namespace.
#[test]
fn http_needs_no_ca_store_and_https_without_one_names_the_package() {
    let bin = env!("CARGO_BIN_EXE_guestprep");
    let srv = Server::start();
    srv.add("i.deb", payload());
    let script = r#"for d in /etc/ssl /usr/share/ca-certificates /usr/lib/ssl; do
  [ -d "$d" ] && mount -t tmpfs none "$d"
done
"$1" prefetch --retries 0 "$2"; echo "http $?"
"$1" prefetch --retries 0 "$3"; echo "https $?"
"#;
    let o = std::process::Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            bin,
        ])
        .arg(srv.url("/ok/i.deb"))
        .arg(srv.url("/ok/i.deb").replace("http://", "https://"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(out.contains("http 0"), "{out}{err}");
    assert!(
        out.contains(&format!(
            "sha256 {}",
            hex::encode(Sha256::digest(payload()))
        )),
        "{out}"
    );
    assert!(!out.contains("https 0"), "{out}");
    assert!(err.contains("install the ca-certificates package"), "{err}");
}
