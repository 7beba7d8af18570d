//! A real HTTP/1.1 server on 127.0.0.1 for download tests, with misbehaviours chosen by path:
//! `/ok/F` serves F; `/flaky/N/F` answers 500 to the first N requests, then serves F;
//! `/fail/F` always 500; `/missing/F` 404; `/cut/F` promises the whole length and closes halfway;
//! `/wrong/F` serves other bytes; `/busy/CODE/RETRY_AFTER/N/F` answers 408, 429 or 503 first.
//! Every request is logged with its time.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Clone, Default)]
pub struct Server {
    pub port: u16,
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    pub log: Arc<Mutex<Vec<(String, Instant)>>>,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let s = Server {
            port,
            ..Default::default()
        };
        let srv = s.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let srv = srv.clone();
                std::thread::spawn(move || srv.handle(conn));
            }
        });
        s
    }

    pub fn add(&self, name: &str, bytes: Vec<u8>) {
        self.files.lock().unwrap().insert(name.to_string(), bytes);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Requests made for paths starting with `prefix`, with their times.
    pub fn requests(&self, prefix: &str) -> Vec<Instant> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p.starts_with(prefix))
            .map(|(_, t)| *t)
            .collect()
    }

    fn handle(&self, mut conn: TcpStream) {
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() {
            return;
        }
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                break;
            }
        }
        let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        // Files are found by path; the query is ignored (but logged).
        let path = target.split('?').next().unwrap_or("/").to_string();
        let n_before = self.requests(&path).len();
        self.log
            .lock()
            .unwrap()
            .push((path.clone(), Instant::now()));
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let file = |name: &str| self.files.lock().unwrap().get(name).cloned();
        let respond_with = |conn: &mut TcpStream,
                            status: &str,
                            extra: &str,
                            body: &[u8],
                            claimed: usize| {
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Length: {claimed}\r\n{extra}Connection: close\r\n\r\n"
            );
            let _ = conn.write_all(body);
            let _ = conn.flush();
        };
        let respond = |conn: &mut TcpStream, status: &str, body: &[u8], claimed: usize| {
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Length: {claimed}\r\nConnection: close\r\n\r\n"
            );
            let _ = conn.write_all(body);
            let _ = conn.flush();
        };
        match parts.as_slice() {
            ["ok", f] => match file(f) {
                Some(b) => respond(&mut conn, "200 OK", &b, b.len()),
                None => respond(&mut conn, "404 Not Found", b"", 0),
            },
            ["flaky", n, f] => {
                if n_before < n.parse().unwrap_or(0) {
                    respond(&mut conn, "500 Internal Server Error", b"boom", 4);
                } else if let Some(b) = file(f) {
                    respond(&mut conn, "200 OK", &b, b.len());
                }
            }
            ["fail", _] => respond(&mut conn, "500 Internal Server Error", b"boom", 4),
            // `/busy/CODE/RETRY_AFTER/N/F`: CODE (with `Retry-After: RETRY_AFTER` unless `-`) to
            // the first N requests, then F.
            ["busy", status, after, n, f] => {
                if n_before < n.parse().unwrap_or(0) {
                    let extra = if *after == "-" {
                        String::new()
                    } else {
                        format!("Retry-After: {after}\r\n")
                    };
                    let line = match *status {
                        "408" => "408 Request Timeout",
                        "429" => "429 Too Many Requests",
                        _ => "503 Service Unavailable",
                    };
                    respond_with(&mut conn, line, &extra, b"busy", 4);
                } else if let Some(b) = file(f) {
                    respond(&mut conn, "200 OK", &b, b.len());
                }
            }
            ["cut", f] => {
                if let Some(b) = file(f) {
                    respond(&mut conn, "200 OK", &b[..b.len() / 2], b.len());
                }
            }
            ["wrong", f] => {
                if let Some(mut b) = file(f) {
                    b.reverse();
                    respond(&mut conn, "200 OK", &b, b.len());
                }
            }
            _ => respond(&mut conn, "404 Not Found", b"", 0),
        }
    }
}
