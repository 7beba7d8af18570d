//! A socket unit's stream listeners, as systemd reads them: `ListenStream=` lines of the unit
//! file and its drop-ins in order (an empty value resets the list), `BindIPv6Only=`, and what
//! each listener accepts (a `[::]:PORT` socket that is not IPv6-only takes IPv4 too). Pure: the
//! caller reads the files (through the engine's `System`) or systemd's `Listen` property.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Unit directories, highest precedence first, for a unit file and its `NAME.d/` drop-ins.
/// The runtime ones (`/run/...`) only mean something on a live root.
pub const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/run/systemd/system",
    "/run/systemd/generator",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// The `[Socket]` settings that decide where it listens.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listeners {
    /// `ListenStream=` values in effect, as written (`22`, `0.0.0.0:2222`, `[::]:22`).
    pub streams: Vec<String>,
    /// `BindIPv6Only=` (`default`, `both`, `ipv6-only`), empty when unset.
    pub bind_ipv6_only: String,
}

impl Listeners {
    /// Applies one file's `[Socket]` lines (the unit file first, then each drop-in in order).
    pub fn apply(&mut self, text: &str) {
        let mut section = String::new();
        for line in text.lines() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
                continue;
            }
            if l.starts_with('[') && l.ends_with(']') {
                section = l[1..l.len() - 1].to_string();
                continue;
            }
            if section != "Socket" {
                continue;
            }
            let Some((k, v)) = l.split_once('=') else {
                continue;
            };
            match k.trim() {
                "ListenStream" if v.trim().is_empty() => self.streams.clear(),
                "ListenStream" => self.streams.push(v.trim().to_string()),
                "BindIPv6Only" => self.bind_ipv6_only = v.trim().to_string(),
                _ => {}
            }
        }
    }
}

/// A `ListenStream=` value (or a `Listen` property's address) as a socket address: a bare port
/// is `[::]:PORT`. `None` for what is not an IP socket (a path, `vsock:`, an interface suffix).
pub fn stream_addr(s: &str) -> Option<SocketAddr> {
    let s = s.trim();
    if let Ok(port) = s.parse::<u16>() {
        return Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port));
    }
    s.parse::<SocketAddr>().ok()
}

/// What the listeners accept: each socket address, and for an unspecified IPv6 one that is not
/// IPv6-only (`v6only`: the system's `net.ipv6.bindv6only` for `default`), IPv4's as well.
pub fn accepted(
    addrs: &[SocketAddr],
    bind_ipv6_only: &str,
    v6only_default: bool,
) -> Vec<SocketAddr> {
    let v6only = match bind_ipv6_only {
        "ipv6-only" => true,
        "both" => false,
        _ => v6only_default,
    };
    let mut out: Vec<SocketAddr> = Vec::new();
    for a in addrs {
        let mut push = |a: SocketAddr| {
            if !out.contains(&a) {
                out.push(a);
            }
        };
        push(*a);
        if !v6only && a.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
            push(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), a.port()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_ins_reset_and_dual_stack() {
        let mut l = Listeners::default();
        l.apply("[Unit]\nListenStream=9\n[Socket]\nListenStream=22\nAccept=no\n");
        assert_eq!(l.streams, ["22"]);
        l.apply("[Socket]\nListenStream=\nListenStream=0.0.0.0:2222\nListenStream=[::]:2222\n");
        assert_eq!(l.streams, ["0.0.0.0:2222", "[::]:2222"]);
        let a: Vec<_> = l.streams.iter().filter_map(|s| stream_addr(s)).collect();
        assert_eq!(accepted(&a, "", false).len(), 2);
        let deb = [stream_addr("22").unwrap()];
        let both = accepted(&deb, "default", false);
        assert_eq!(both.len(), 2, "{both:?}");
        assert_eq!(accepted(&deb, "ipv6-only", false).len(), 1);
        assert!(stream_addr("/run/x.sock").is_none());
    }
}
