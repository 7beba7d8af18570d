//! A client of the QEMU guest agent protocol, for the host side: the same binary on the Proxmox
//! host reads a VM's report from `/var/run/qemu-server/VMID.qga` (QEMU's chardev socket) or from
//! `qemu-ga -m unix-listen` directly.
//!
//! Owns the wire protocol: JSON commands, one per line; `guest-sync-delimited` with a random id
//! (its answer is preceded by a 0xFF byte, so stale output of an earlier client is skipped);
//! errors as `{"error": {"class", "desc"}}`; file-open/read/close with base64 chunks;
//! guest-exec and guest-exec-status polling. Bounded whatever the agent sends: every answer is
//! due within the timeout and before the connection's deadline (each read waits only for what
//! is left of it, so a byte every second cannot stretch it), every answer line has a size cap
//! ([`MAX_ANSWER`], [`MAX_EXEC_ANSWER`]), base64 payloads are decoded from the line itself, and
//! messages quote a short escaped excerpt. Typed errors, since the caller maps each to its own
//! exit code and message.

mod answer;

pub use answer::{ExecState, decode, exec_status, file_chunk, parse_answer, parse_answer_as};

use std::io::{BufRead, BufReader, ErrorKind, Write};
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

/// The longest answer line read for a command (guest-info, file-open, guest-exec, one 64 KiB
/// chunk of guest-file-read: about 88 KiB): more is a protocol error, never buffered.
pub const MAX_ANSWER: usize = 1 << 20;

/// The longest `guest-exec-status` answer: qemu-ga caps each captured stream at 16 MiB before
/// base64, and both may come in one answer.
pub const MAX_EXEC_ANSWER: usize = 2 * (16usize << 20).div_ceil(3) * 4 + MAX_ANSWER;

/// How much of a file one `guest-file-read` asks for.
const CHUNK: u64 = 64 << 10;

/// A connection to one guest agent.
pub struct Agent {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    timeout: Duration,
    /// Nothing is awaited past this instant, however many commands remain and whatever the
    /// agent sends meanwhile (`qga`: `--timeout` bounds the whole exchange; `fleet`: one hung
    /// agent costs its timeout once).
    deadline: Option<Instant>,
}

impl Agent {
    /// Connects and synchronises (guest-sync-delimited), so the next answer is ours. Each answer
    /// is due within `timeout`, and every one before `deadline` (the whole exchange's).
    pub fn connect_until(
        path: &Path,
        timeout: Duration,
        deadline: Option<Instant>,
    ) -> Result<Self, QgaError> {
        let stream = connect_within(path, Instant::now() + timeout, deadline)?;
        let writer = stream.try_clone()?;
        let mut a = Agent {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(64 << 10, stream),
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

    /// Makes sure something is buffered, waiting no later than `due` in all: each read waits
    /// only for what is left, so an agent sending a byte at a time cannot stretch the deadline.
    fn fill(&mut self, command: &str, due: Instant) -> Result<(), QgaError> {
        loop {
            let left = due.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.no_answer(command));
            }
            self.reader.get_ref().set_read_timeout(Some(left))?;
            match self.reader.fill_buf() {
                Ok([]) => {
                    return Err(QgaError::Protocol(format!(
                        "the agent closed the connection during {command}"
                    )));
                }
                Ok(_) => return Ok(()),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(self.no_answer(command));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Reads until `delim` (included) before `due`, and at most `cap` bytes: an agent that never
    /// ends its line costs `cap` bytes, not the host's memory.
    fn read_until(
        &mut self,
        delim: u8,
        command: &str,
        due: Instant,
        cap: usize,
    ) -> Result<Vec<u8>, QgaError> {
        let mut line = Vec::new();
        loop {
            self.fill(command, due)?;
            let buf = self.reader.buffer();
            let (take, done) = match buf.iter().position(|&b| b == delim) {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            if line.len() + take > cap {
                return Err(QgaError::Protocol(format!(
                    "{command}: the agent sent more than {cap} bytes without ending its answer"
                )));
            }
            line.extend_from_slice(&buf[..take]);
            self.reader.consume(take);
            if done {
                return Ok(line);
            }
        }
    }

    /// Discards what the agent sends up to `delim` (included), before `due`, keeping none of it.
    fn skip_until(&mut self, delim: u8, command: &str, due: Instant) -> Result<(), QgaError> {
        loop {
            self.fill(command, due)?;
            let buf = self.reader.buffer();
            let (take, done) = match buf.iter().position(|&b| b == delim) {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            self.reader.consume(take);
            if done {
                return Ok(());
            }
        }
    }

    /// Writes all of `bytes` before `due`: an agent that stops reading cannot block the host.
    fn write_all(&mut self, bytes: &[u8], command: &str, due: Instant) -> Result<(), QgaError> {
        let mut rest = bytes;
        while !rest.is_empty() {
            let left = due.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.no_answer(command));
            }
            self.writer.set_write_timeout(Some(left))?;
            match self.writer.write(rest) {
                Ok(0) => {
                    return Err(QgaError::Protocol(format!(
                        "the agent closed the connection during {command}"
                    )));
                }
                Ok(n) => rest = &rest[n..],
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(self.no_answer(command));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn send(&mut self, msg: &Value, command: &str, due: Instant) -> Result<(), QgaError> {
        let mut line = serde_json::to_vec(msg).expect("JSON");
        line.push(b'\n');
        self.write_all(&line, command, due)
    }

    /// `guest-sync-delimited`: a 0xFF byte resets the agent's parser; its answer starts with
    /// 0xFF; whatever an earlier client left unread is skipped (not kept) until our id comes back.
    fn sync(&mut self) -> Result<(), QgaError> {
        let id = (std::process::id() as u64) << 20
            ^ (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos() as u64)
                .unwrap_or(0));
        let id = id & 0x7fff_ffff;
        let command = "guest-sync-delimited";
        let due = self.due();
        self.write_all(&[0xff], command, due)?;
        self.send(
            &json!({"execute": command, "arguments": {"id": id}}),
            command,
            due,
        )?;
        loop {
            self.skip_until(0xff, command, due)?;
            let line = self.read_until(b'\n', command, due, MAX_ANSWER)?;
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\u{FFFD}');
            if let Ok(v) = serde_json::from_str::<Value>(text)
                && v["return"].as_u64() == Some(id)
            {
                return Ok(());
            }
        }
    }

    /// Sends one command and reads answer lines (at most `cap` bytes each) until `take` makes
    /// something of one (`None`: an event or a blank, not our answer), all before the answer is
    /// due.
    fn request<R>(
        &mut self,
        command: &str,
        args: Option<Value>,
        cap: usize,
        mut take: impl FnMut(&[u8]) -> Result<Option<R>, QgaError>,
    ) -> Result<R, QgaError> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = args {
            msg["arguments"] = a;
        }
        let due = self.due();
        self.send(&msg, command, due)?;
        loop {
            let line = self.read_until(b'\n', command, due, cap)?;
            if let Some(r) = take(&line)? {
                return Ok(r);
            }
        }
    }

    /// Runs one command and returns its `return` value.
    pub fn execute(&mut self, command: &str, args: Option<Value>) -> Result<Value, QgaError> {
        self.request(command, args, MAX_ANSWER, |line| {
            parse_answer(line, command)
        })
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
            .ok_or_else(|| {
                QgaError::Protocol(format!(
                    "guest-get-time returned {}",
                    crate::text::excerpt_of(&ns, 80)
                ))
            })
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
            let ended = self.request(
                "guest-file-read",
                Some(json!({"handle": handle, "count": CHUNK})),
                MAX_ANSWER,
                |line| file_chunk(line, &mut data, limit),
            )?;
            if ended {
                return Ok(data);
            }
        }
    }

    /// Runs a program in the guest (`guest-exec` with captured output, `input` as its standard
    /// input) and waits for it with `guest-exec-status`, polling, up to `timeout` (and never past
    /// the connection's deadline).
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
        let pid = r["pid"].as_i64().ok_or_else(|| {
            QgaError::Protocol(format!(
                "guest-exec returned {}",
                crate::text::excerpt_of(&r, 80)
            ))
        })?;
        let end = Instant::now() + timeout;
        let deadline = self.deadline.map_or(end, |d| d.min(end));
        let mut delay = Duration::from_millis(20);
        loop {
            let s = self.request(
                "guest-exec-status",
                Some(json!({"pid": pid})),
                MAX_EXEC_ANSWER,
                exec_status,
            )?;
            if let ExecState::Exited(res) = s {
                return Ok(res);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(QgaError::NoAnswer {
                    path: self.path.clone(),
                    command: format!("guest-exec of {program} (pid {pid} still running)"),
                    secs: timeout.as_secs(),
                });
            }
            std::thread::sleep(delay.min(left));
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
