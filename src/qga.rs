//! A client of the QEMU guest agent protocol, for the host side: the same binary on the Proxmox
//! host reads a VM's report from `/var/run/qemu-server/VMID.qga` (QEMU's chardev socket) or from
//! `qemu-ga -m unix-listen` directly.
//!
//! Owns the wire protocol: JSON commands, one per line; `guest-sync-delimited` with a random id
//! (its answer is preceded by a 0xFF byte, so stale output of an earlier client is skipped);
//! errors as `{"error": {"class", "desc"}}`; file-open/read/close with base64 chunks;
//! guest-exec and guest-exec-status polling; and a timeout on every answer. Typed errors, since
//! the caller maps each to its own exit code and message.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// What went wrong talking to the agent.
#[derive(Debug, thiserror::Error)]
pub enum QgaError {
    #[error(
        "cannot connect to the guest agent socket {path}: {source} (is the VM running, with the guest agent option enabled?)"
    )]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the guest agent at {path} did not answer {command} within {secs}s: is qemu-guest-agent installed and running in the guest?"
    )]
    NoAnswer {
        path: PathBuf,
        command: String,
        secs: u64,
    },
    #[error("{command}: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
    #[error("guest agent protocol error: {0}")]
    Protocol(String),
    #[error("guest agent connection: {0}")]
    Io(#[from] std::io::Error),
}

impl QgaError {
    /// The agent answered with an error whose description says the file or program is missing.
    pub fn is_not_found(&self) -> bool {
        matches!(self, QgaError::Command { desc, .. } if desc.contains("No such file"))
    }

    /// The guest's agent has this command disabled (or is too old to know it).
    pub fn is_disabled(&self) -> bool {
        matches!(self, QgaError::Command { class, desc, .. }
            if class == "CommandNotFound" || desc.contains("disabled") || desc.contains("has been disabled"))
    }
}

/// What a guest-exec'd program did.
#[derive(Debug, Default)]
pub struct ExecResult {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub truncated: bool,
}

/// The longest answer line read from an agent: qemu-ga's guest-exec output is capped at 16 MiB
/// before base64, so a real answer fits.
pub const MAX_LINE: usize = 32 << 20;

/// A connection to one guest agent.
pub struct Agent {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    timeout: Duration,
    /// No answer is awaited past this instant, however many commands remain (`fleet`: one hung
    /// agent costs its timeout once).
    deadline: Option<Instant>,
}

impl Agent {
    /// Connects and synchronises (guest-sync-delimited), so the next answer is ours.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, QgaError> {
        Self::connect_until(path, timeout, None)
    }

    /// As [`Agent::connect`], and every later answer must also come before `deadline`.
    pub fn connect_until(
        path: &Path,
        timeout: Duration,
        deadline: Option<Instant>,
    ) -> Result<Self, QgaError> {
        let stream = connect_within(path, Instant::now() + timeout, deadline)?;
        let writer = stream.try_clone()?;
        let mut a = Agent {
            path: path.to_path_buf(),
            reader: BufReader::new(stream),
            writer,
            timeout,
            deadline,
        };
        a.sync()?;
        Ok(a)
    }

    /// When the answer to a command sent now is due.
    fn due(&self) -> Instant {
        let d = Instant::now() + self.timeout;
        self.deadline.map_or(d, |end| d.min(end))
    }

    fn no_answer(&self, command: &str) -> QgaError {
        QgaError::NoAnswer {
            path: self.path.clone(),
            command: command.to_string(),
            secs: self.timeout.as_secs().max(1),
        }
    }

    /// Reads until `delim` (included) within the deadline, and at most [`MAX_LINE`] bytes: an
    /// agent that never ends its line cannot fill the host's memory.
    fn read_until(
        &mut self,
        delim: u8,
        command: &str,
        deadline: Instant,
    ) -> Result<Vec<u8>, QgaError> {
        let mut buf = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.no_answer(command));
            }
            let room = MAX_LINE.saturating_sub(buf.len()) as u64;
            if room == 0 {
                return Err(QgaError::Protocol(format!(
                    "{command}: the agent sent more than {MAX_LINE} bytes without ending its answer"
                )));
            }
            self.reader.get_ref().set_read_timeout(Some(left))?;
            match (&mut self.reader).take(room).read_until(delim, &mut buf) {
                Ok(0) => {
                    return Err(QgaError::Protocol(format!(
                        "the agent closed the connection during {command}"
                    )));
                }
                Ok(_) if buf.last() == Some(&delim) => return Ok(buf),
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(self.no_answer(command));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn send(&mut self, msg: &Value) -> Result<(), QgaError> {
        let mut line = serde_json::to_vec(msg).expect("JSON");
        line.push(b'\n');
        self.writer.write_all(&line)?;
        Ok(())
    }

    /// `guest-sync-delimited`: a 0xFF byte resets the agent's parser; its answer starts with
    /// 0xFF; whatever an earlier client left unread is skipped until our id comes back.
    fn sync(&mut self) -> Result<(), QgaError> {
        let id = (std::process::id() as u64) << 20
            ^ (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos() as u64)
                .unwrap_or(0));
        let id = id & 0x7fff_ffff;
        self.writer.write_all(&[0xff])?;
        self.send(&json!({"execute": "guest-sync-delimited", "arguments": {"id": id}}))?;
        let deadline = self.due();
        loop {
            self.read_until(0xff, "guest-sync-delimited", deadline)?;
            let line = self.read_until(b'\n', "guest-sync-delimited", deadline)?;
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\u{FFFD}');
            if let Ok(v) = serde_json::from_str::<Value>(text)
                && v["return"].as_u64() == Some(id)
            {
                return Ok(());
            }
        }
    }

    /// Runs one command and returns its `return` value.
    pub fn execute(&mut self, command: &str, args: Option<Value>) -> Result<Value, QgaError> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = args {
            msg["arguments"] = a;
        }
        self.send(&msg)?;
        let deadline = self.due();
        loop {
            let line = self.read_until(b'\n', command, deadline)?;
            if let Some(v) = parse_answer(&line, command)? {
                return Ok(v);
            }
            // An event or anything else: not our answer.
        }
    }

    /// `guest-info`: the agent's version and its commands with their enabled flags.
    pub fn info(&mut self) -> Result<Value, QgaError> {
        self.execute("guest-info", None)
    }

    /// The guest's clock, in seconds since the epoch (`guest-get-time`).
    pub fn guest_time(&mut self) -> Result<f64, QgaError> {
        let ns = self.execute("guest-get-time", None)?;
        ns.as_f64()
            .map(|n| n / 1e9)
            .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e11)
            .ok_or_else(|| QgaError::Protocol(format!("guest-get-time returned {ns}")))
    }

    /// Reads a whole file of the guest (at most `limit` bytes).
    pub fn read_file(&mut self, path: &str, limit: usize) -> Result<Vec<u8>, QgaError> {
        let handle = self.execute("guest-file-open", Some(json!({"path": path, "mode": "r"})))?;
        let result = self.read_handle(&handle, limit);
        let closed = self.execute("guest-file-close", Some(json!({"handle": handle})));
        let data = result?;
        closed?;
        Ok(data)
    }

    fn read_handle(&mut self, handle: &Value, limit: usize) -> Result<Vec<u8>, QgaError> {
        let mut data = Vec::new();
        loop {
            let r = self.execute(
                "guest-file-read",
                Some(json!({"handle": handle, "count": 65536})),
            )?;
            if let Some(b) = r["buf-b64"].as_str() {
                data.extend(decode(b)?);
            }
            if data.len() > limit {
                return Err(QgaError::Protocol(format!(
                    "the file is larger than {limit} bytes"
                )));
            }
            if r["eof"].as_bool().unwrap_or(true) || r["count"].as_u64() == Some(0) {
                return Ok(data);
            }
        }
    }

    /// Runs a program in the guest (`guest-exec` with captured output, `input` as its standard
    /// input) and waits for it with `guest-exec-status`, polling, up to `timeout`.
    pub fn exec(
        &mut self,
        program: &str,
        args: &[String],
        input: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<ExecResult, QgaError> {
        let mut req = json!({"path": program, "arg": args, "capture-output": true});
        if let Some(data) = input {
            req["input-data"] = base64::engine::general_purpose::STANDARD
                .encode(data)
                .into();
        }
        let r = self.execute("guest-exec", Some(req))?;
        let pid = r["pid"]
            .as_i64()
            .ok_or_else(|| QgaError::Protocol(format!("guest-exec returned {r}")))?;
        let deadline = Instant::now() + timeout;
        let mut delay = Duration::from_millis(20);
        loop {
            let s = self.execute("guest-exec-status", Some(json!({"pid": pid})))?;
            if s["exited"].as_bool() == Some(true) {
                let field = |k: &str| -> Result<Vec<u8>, QgaError> {
                    s[k].as_str()
                        .map(decode)
                        .transpose()
                        .map(Option::unwrap_or_default)
                };
                return Ok(ExecResult {
                    exit_code: s["exitcode"].as_i64().map(|c| c as i32),
                    signal: s["signal"].as_i64().map(|c| c as i32),
                    stdout: field("out-data")?,
                    stderr: field("err-data")?,
                    truncated: s["out-truncated"].as_bool().unwrap_or(false)
                        || s["err-truncated"].as_bool().unwrap_or(false),
                });
            }
            if Instant::now() >= deadline {
                return Err(QgaError::NoAnswer {
                    path: self.path.clone(),
                    command: format!("guest-exec of {program} (pid {pid} still running)"),
                    secs: timeout.as_secs(),
                });
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(250));
        }
    }
}

/// Connects to a unix socket without ever blocking past the timeout: an agent that accepts no
/// connection (hung, or busy with another client) leaves its listen backlog full, and a blocking
/// `connect` would then wait forever. Non-blocking, a full backlog is `EAGAIN`: retried until due.
fn connect_within(
    path: &Path,
    due: Instant,
    deadline: Option<Instant>,
) -> Result<UnixStream, QgaError> {
    use nix::errno::Errno;
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
    use std::os::fd::AsRawFd;
    let start = Instant::now();
    let due = deadline.map_or(due, |d| due.min(d));
    let failed = |source: std::io::Error| QgaError::Connect {
        path: path.to_path_buf(),
        source,
    };
    let addr = UnixAddr::new(path).map_err(|e| failed(e.into()))?;
    loop {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| failed(e.into()))?;
        match connect(fd.as_raw_fd(), &addr) {
            Ok(()) => {
                let stream = UnixStream::from(fd);
                stream.set_nonblocking(false)?;
                return Ok(stream);
            }
            Err(Errno::EAGAIN | Errno::EINPROGRESS) if Instant::now() < due => {
                std::thread::sleep(Duration::from_millis(25));
            }
            Err(Errno::EAGAIN | Errno::EINPROGRESS) => {
                return Err(QgaError::NoAnswer {
                    path: path.to_path_buf(),
                    command: "connect (the agent accepts no connection)".into(),
                    secs: due.saturating_duration_since(start).as_secs().max(1),
                });
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(failed(e.into())),
        }
    }
}

/// One answer line from an agent: `Some(return value)`, an error the agent reported, or `None`
/// for a line that is not an answer (an event, a blank). Never panics, whatever the guest sends.
pub fn parse_answer(line: &[u8], command: &str) -> Result<Option<Value>, QgaError> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\u{FFFD}');
    if text.is_empty() {
        return Ok(None);
    }
    let v: Value = serde_json::from_str(text)
        .map_err(|e| QgaError::Protocol(format!("{command}: not JSON ({e}): {text}")))?;
    if let Some(r) = v.get("return") {
        return Ok(Some(r.clone()));
    }
    if let Some(e) = v.get("error") {
        return Err(QgaError::Command {
            command: command.to_string(),
            class: e["class"].as_str().unwrap_or("").to_string(),
            desc: e["desc"].as_str().unwrap_or("").to_string(),
        });
    }
    Ok(None)
}

/// `/proc/uptime` (procfs-core's parser): its first number, when finite and plausible (a guest's
/// answer is data).
pub fn parse_uptime(b: &[u8]) -> Option<f64> {
    use procfs_core::FromRead;
    procfs_core::Uptime::from_read(b)
        .ok()
        .map(|u| u.uptime)
        .filter(|u| u.is_finite() && *u >= 0.0 && *u < 1e10)
}

/// A `guest-file-read` or `guest-exec-status` payload, decoded.
pub fn decode(b: &str) -> Result<Vec<u8>, QgaError> {
    base64::engine::general_purpose::STANDARD
        .decode(b)
        .map_err(|e| QgaError::Protocol(format!("bad base64 from the agent: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_is_a_plausible_number_or_nothing() {
        assert_eq!(parse_uptime(b"5012.30 9000.10\n"), Some(5012.3));
        for bad in [
            &b"-inf 0\n"[..],
            b"nan 0",
            b"inf 0",
            b"-1 0",
            b"1e300 0",
            b"",
            b"x y",
        ] {
            assert_eq!(
                parse_uptime(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn answers_are_parsed_without_trusting_them() {
        assert_eq!(
            parse_answer(b"{\"return\": 5}\n", "x").unwrap(),
            Some(serde_json::json!(5))
        );
        assert_eq!(parse_answer(b"\xff\n", "x").unwrap(), None);
        assert_eq!(parse_answer(b"{\"event\": \"x\"}", "x").unwrap(), None);
        assert!(matches!(
            parse_answer(b"{\"error\": {\"class\": \"C\", \"desc\": 7}}", "x"),
            Err(QgaError::Command { .. })
        ));
        assert!(matches!(
            parse_answer(b"{not json", "x"),
            Err(QgaError::Protocol(_))
        ));
    }
}
