//! systemd's readiness protocol (`sd_notify`), spoken directly: one datagram to `$NOTIFY_SOCKET`.
//!
//! Owns READY/RELOADING/STOPPING/STATUS/WATCHDOG messages. Outside systemd (no `NOTIFY_SOCKET`)
//! every call is a no-op, so the daemon runs the same by hand and under `Type=notify`. A send never
//! blocks: a receiver that stops reading (its queue full) loses messages, it does not freeze us.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use anyhow::{Context, Result};

/// Sends `state` (newline-separated `KEY=VALUE` lines) to the service manager. Returns whether a
/// manager was listening (`NOTIFY_SOCKET` set).
pub fn notify(state: &str) -> Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let path = path.to_string_lossy().into_owned();
    let sock = UnixDatagram::unbound().context("creating the notify socket")?;
    // Never block the daemon on a manager that does not read: a full queue drops the message.
    sock.set_nonblocking(true)
        .context("making the notify socket non-blocking")?;
    let addr = match path.strip_prefix('@') {
        Some(abs) => SocketAddr::from_abstract_name(abs.as_bytes()),
        None => SocketAddr::from_pathname(&path),
    }
    .with_context(|| format!("NOTIFY_SOCKET={path}"))?;
    sock.send_to_addr(state.as_bytes(), &addr)
        .with_context(|| format!("notifying systemd at {path}"))?;
    Ok(true)
}

/// Logs instead of failing: a lost status line must not stop the daemon.
pub fn notify_or_log(state: &str) {
    if let Err(e) = notify(state) {
        tracing::warn!("{e:#}");
    }
}

/// `RELOADING=1` with the monotonic timestamp `Type=notify-reload` needs.
pub fn reloading() -> String {
    let usec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
        .unwrap_or(0);
    format!("RELOADING=1\nMONOTONIC_USEC={usec}")
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, when systemd asks for it for us.
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID")
        && pid.to_string_lossy() != std::process::id().to_string()
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
