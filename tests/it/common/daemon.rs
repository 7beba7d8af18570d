//! `guestprep daemon` under test: the real binary as a child process, its log captured, and a
//! real `NOTIFY_SOCKET` (a datagram socket this side binds) receiving what it tells systemd.

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::BIN;

pub struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
    notify: UnixDatagram,
    _dir: tempfile::TempDir,
    pub report: PathBuf,
    /// Every notify message received so far, in order.
    pub messages: Vec<String>,
    reading: bool,
}

impl Daemon {
    /// Starts `guestprep daemon --root ROOT --policy P…` and waits for READY=1.
    pub fn start(root: &Path, policies: &[&Path]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("notify");
        let notify = UnixDatagram::bind(&sock).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("daemon").arg("--root").arg(root);
        for p in policies {
            cmd.arg("--policy").arg(p);
        }
        let mut child = cmd
            .env("NOTIFY_SOCKET", &sock)
            .env("NO_COLOR", "1")
            .env("GUESTPREP_LOG", "info")
            .env_remove("GUESTPREP_ROOT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting guestprep daemon");
        let log = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let l = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                l.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut d = Daemon {
            child,
            log,
            notify,
            _dir: dir,
            report: root.join("run/guestprep/report.json"),
            messages: Vec::new(),
            reading: true,
        };
        d.wait_message(|m| m.contains("READY=1"), "READY=1");
        d
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// From now on, leave notify messages unread (a stuck service manager).
    pub fn stop_reading_notifications(&mut self) {
        self.reading = false;
    }

    fn receive(&mut self) {
        if !self.reading {
            return;
        }
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.notify.recv(&mut buf) {
            self.messages
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }

    /// Waits (at most 20 s: a hang guard, not a timing assertion) for a notify message.
    #[track_caller]
    pub fn wait_message(&mut self, pred: impl Fn(&str) -> bool, what: &str) -> String {
        let start = Instant::now();
        loop {
            self.receive();
            if let Some(m) = self.messages.iter().find(|m| pred(m)) {
                return m.clone();
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("daemon exited ({st}) before {what}; log:\n{}", self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no {what} from the daemon; got {:?}; log:\n{}",
                self.messages,
                self.log()
            );
        }
    }

    /// The current report, if there is one.
    pub fn read_report(&self) -> Option<serde_json::Value> {
        let bytes = std::fs::read(&self.report).ok()?;
        Some(serde_json::from_slice(&bytes).expect("the report is always whole JSON"))
    }

    /// Waits until the report satisfies `pred`; returns it and how long that took.
    #[track_caller]
    pub fn wait_report(
        &mut self,
        pred: impl Fn(&serde_json::Value) -> bool,
        what: &str,
    ) -> (serde_json::Value, Duration) {
        let start = Instant::now();
        loop {
            if let Some(r) = self.read_report()
                && pred(&r)
            {
                return (r, start.elapsed());
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "daemon exited ({st}) waiting for {what}; log:\n{}",
                    self.log()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "report never showed {what}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM, then the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                self.receive();
                return st;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "daemon did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
