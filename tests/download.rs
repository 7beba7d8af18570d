//! The `.deb` download against a real HTTP server on loopback, with real reqwest: retries with
//! exponential backoff on 5xx and cut bodies, none on 404 or a checksum mismatch, the cache reused
//! when its hash is right, and never a partial file left behind.

mod common;
use common::http::Server;

use std::time::Duration;

use guestprep::packages::download::{DownloadError, Spec, fetch, sha256_file};
use sha2::{Digest, Sha256};

fn payload() -> Vec<u8> {
    (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect()
}

fn spec(url: String, dest: &std::path::Path, retries: u32) -> Spec {
    Spec {
        url,
        sha256: Some(hex::encode(Sha256::digest(payload()))),
        dest: dest.join("pkg.deb"),
        retries,
        base_delay: Duration::from_millis(50),
    }
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
