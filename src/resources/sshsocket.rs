//! `[ssh]` on a root whose sshd a socket starts (`sys.platform().sshd`): Ubuntu 22.10 and later
//! (`ssh.socket`, `Accept=no`, one daemon started on the first connection; Debian 13 ships the
//! same unit), or Flatcar (`sshd.socket`, `Accept=yes`, one sshd per connection).
//!
//! There the socket, not sshd, decides where sshd is reachable: `Port`, `ListenAddress` and
//! `AddressFamily` must become its `ListenStream=`. Ubuntu's `sshd-socket-generator` does that at
//! each daemon-reload, from sshd's configuration, into `ssh.socket.d/addresses.conf` (`ListenStream=`
//! reset, then one `ADDRESS:PORT` per address sshd would listen on; nothing when that is the
//! default 22 on every address), and its upgrade writes the same file under `/etc`. guestprep writes
//! `/etc/systemd/system/SOCKET.d/addresses.conf` the same way (plus `BindIPv6Only=ipv6-only`, so an
//! IPv6 wildcard takes IPv6 only, as sshd's own sockets do), from the policy's values, when the
//! policy sets any of the three; then one daemon-reload (`unit-dropins:SOCKET`) and one restart of
//! the socket (`service:SOCKET`), and a restart of a running `ssh.service` so it takes the new
//! sockets. `ssh:listen` (after them) compares where the socket listens (systemd's `Listen` over
//! D-Bus live; offline, the unit file and its drop-ins) with where sshd's configuration says, read
//! as sshd reads it: never compliant while the socket listens elsewhere.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::Result;
use serde_json::json;

use super::FileResource;
use super::services::{Action, Feed};
use super::units::DropinsLoaded;
use super::{ssh, sshd_config};
use crate::engine::{Change, Observation, Resource, System};
use crate::platform::{Sshd, SshdStart};
use crate::policy::Ssh;
use crate::report::Status;
use crate::root::Root;
use crate::systemd::socket::{Listeners, UNIT_DIRS, accepted, stream_addr};
use crate::text::escape;

const MAIN: &str = "/etc/ssh/sshd_config";
/// The keywords that say where sshd listens.
pub const LISTEN_KEYWORDS: &[&str] = &["Port", "ListenAddress", "AddressFamily"];

/// The socket's drop-in guestprep owns (Ubuntu's name for it).
pub fn dropin_path(socket: &str) -> String {
    format!("/etc/systemd/system/{socket}.d/addresses.conf")
}

/// Where sshd listens, as servconf.c fills it in: each `ListenAddress` (with its own port, or
/// each `Port`), or without one the wildcard of each family `AddressFamily` allows, on each
/// `Port` (22 without one). Numeric addresses only: a socket's `ListenStream=` takes no names.
pub fn sshd_listen(
    ports: &[&str],
    addresses: &[&str],
    family: &str,
) -> Result<Vec<SocketAddr>, String> {
    let ports: Vec<u16> = if ports.is_empty() {
        vec![22]
    } else {
        ports
            .iter()
            .map(|p| {
                p.trim()
                    .parse::<u16>()
                    .map_err(|_| format!("Port {} is not a port number", escape(p)))
            })
            .collect::<Result<_, _>>()?
    };
    let (v4, v6) = match family.to_ascii_lowercase().as_str() {
        "inet" => (true, false),
        "inet6" => (false, true),
        _ => (true, true),
    };
    let fits = |ip: &IpAddr| if ip.is_ipv4() { v4 } else { v6 };
    let mut out: Vec<SocketAddr> = Vec::new();
    let mut push = |a: SocketAddr| {
        if !out.contains(&a) {
            out.push(a);
        }
    };
    if addresses.is_empty() {
        for &p in &ports {
            if v4 {
                push(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), p));
            }
            if v6 {
                push(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), p));
            }
        }
    }
    for a in addresses {
        let mut words = a.split_whitespace();
        let addr = words.next().unwrap_or("");
        if words.next().is_some() {
            return Err(format!(
                "ListenAddress {}: a routing domain has no ListenStream= equivalent",
                escape(a)
            ));
        }
        let (host, port) = split_host_port(addr)
            .ok_or_else(|| format!("ListenAddress {} has a bad port", escape(a)))?;
        let ip: IpAddr = host.parse().map_err(|_| {
            format!(
                "ListenAddress {} is a host name: a socket's ListenStream= takes numeric addresses, so write the address",
                escape(a)
            )
        })?;
        if !fits(&ip) {
            continue; // the generator skips it too ("wrong address family")
        }
        match port {
            Some(p) => push(SocketAddr::new(ip, p)),
            None => ports.iter().for_each(|&p| push(SocketAddr::new(ip, p))),
        }
    }
    Ok(out)
}

/// `[v6]:port`, `[v6]`, `v4:port`, `host`, or a bare IPv6 address (more than one `:`).
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(p) => Some((host, Some(p.parse().ok()?))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match s.matches(':').count() {
        1 => {
            let (h, p) = s.split_once(':')?;
            Some((h, Some(p.parse().ok()?)))
        }
        _ => Some((s, None)),
    }
}

/// A `ListenStream=` value: `0.0.0.0:22`, `[::]:22`.
fn stream(a: &SocketAddr) -> String {
    a.to_string()
}

/// The drop-in for the policy's values, or why there is none.
pub fn render(s: &Ssh) -> Result<String, String> {
    let get = |k: &str| s.settings.get(k).map(String::as_str);
    let ports: Vec<&str> = get("Port").into_iter().collect();
    let addrs: Vec<&str> = get("ListenAddress").into_iter().collect();
    let listen = sshd_listen(&ports, &addrs, get("AddressFamily").unwrap_or("any"))?;
    let mut out = String::from(super::file::HEADER);
    out.push_str("# Where sshd listens ([ssh] settings Port, ListenAddress, AddressFamily), as\n");
    out.push_str("# Ubuntu's sshd-socket-generator writes it.\n[Socket]\nListenStream=\n");
    for a in &listen {
        out.push_str(&format!("ListenStream={}\n", stream(a)));
    }
    out.push_str("BindIPv6Only=ipv6-only\n");
    Ok(out)
}

/// What `[ssh]` adds where a socket starts sshd, and the feeds of the `service:` items.
pub struct Plan {
    pub items: Vec<Box<dyn Resource>>,
    pub feeds: Vec<Feed>,
    /// `ssh:listen`, to run after the `service:` items.
    pub listen: Option<Box<dyn Resource>>,
}

fn feed(unit: &str, action: Action, path: &str, allowed: bool) -> Feed {
    Feed {
        unit: unit.to_string(),
        action,
        path: path.to_string(),
        allowed,
        section: "[ssh]".to_string(),
    }
}

/// The items and feeds of `[ssh]` (or of its absence, when guestprep's files are left) for how
/// this root starts sshd. A daemon started by its service reloads; a socket's daemon restarts
/// after its socket when the addresses change; a per-connection sshd has no daemon to follow.
pub fn plan(s: Option<&Ssh>, sshd: &Sshd, root: &Root) -> Plan {
    let allowed = s.is_none_or(|s| s.restart);
    let mut p = Plan {
        items: Vec::new(),
        feeds: Vec::new(),
        listen: None,
    };
    let daemon = |p: &mut Plan, action| {
        if sshd.start != SshdStart::PerConnection {
            p.feeds
                .push(feed(&sshd.service, action, ssh::FILE, allowed));
        }
    };
    let socket = match (&sshd.socket, sshd.start) {
        (Some(sock), SshdStart::Socket | SshdStart::PerConnection) => sock.clone(),
        _ => {
            if s.is_some() || root.exists(ssh::FILE) {
                daemon(&mut p, Action::Reload);
            }
            return p;
        }
    };
    let path = dropin_path(&socket);
    let wants = s.filter(|s| LISTEN_KEYWORDS.iter().any(|k| s.settings.contains_key(*k)));
    let content = wants.map(render);
    let ours = root
        .read_string(&path)
        .ok()
        .flatten()
        .is_some_and(|t| t.starts_with(super::file::HEADER));
    let writes = match content {
        Some(Ok(text)) => {
            let mut f = FileResource::new("ssh", &path, text);
            f.mode = Some(0o644);
            p.items.push(Box::new(f));
            true
        }
        _ if ours => {
            p.items.push(Box::new(FileResource::absent("ssh", &path)));
            true
        }
        _ => false,
    };
    if writes {
        p.items.push(Box::new(DropinsLoaded {
            unit: socket.clone(),
            paths: if root.exists(&path) || wants.is_some() {
                vec![path.clone()]
            } else {
                Vec::new()
            },
        }));
        p.feeds.push(feed(&socket, Action::Restart, &path, allowed));
        // The running daemon holds the old sockets: restarted after the socket, it takes the new.
        daemon(&mut p, Action::Restart);
        if sshd.start == SshdStart::Socket {
            p.feeds
                .push(feed(&sshd.service, Action::Restart, &path, allowed));
        }
    } else if s.is_some() || root.exists(ssh::FILE) {
        daemon(&mut p, Action::Reload);
    }
    if s.is_some() {
        p.listen = Some(Box::new(Listen {
            socket,
            dropin: path,
        }));
    }
    p
}

/// `ssh:listen`: the socket listens exactly where sshd's configuration says sshd listens.
pub struct Listen {
    pub socket: String,
    pub dropin: String,
}

/// Sorted, for a stable report.
fn shown(v: &[SocketAddr]) -> Vec<String> {
    let mut s: Vec<String> = v.iter().map(stream).collect();
    s.sort();
    s
}

impl Listen {
    /// Where the socket listens and what it accepts, and problems seen on the way.
    fn socket_side(&self, sys: &System) -> Result<(Vec<String>, String, Vec<String>)> {
        if sys.is_live() {
            let rt = sys.units()?.runtime(&self.socket)?;
            let streams = rt
                .listen
                .iter()
                .filter(|(t, _)| t == "Stream")
                .map(|(_, a)| a.clone())
                .collect();
            let mut problems = Vec::new();
            if rt.active_state != "active" {
                problems.push(format!(
                    "{} is not listening ({}/{})",
                    self.socket, rt.active_state, rt.sub_state
                ));
            }
            if rt.need_daemon_reload {
                problems.push(format!(
                    "systemd has older versions of {}'s files loaded (NeedDaemonReload)",
                    self.socket
                ));
            }
            return Ok((streams, rt.bind_ipv6_only, problems));
        }
        let mut l = Listeners::default();
        let unit = UNIT_DIRS
            .iter()
            .filter(|d| !d.starts_with("/run/"))
            .find_map(|d| {
                sys.read_string(&format!("{d}/{}", self.socket))
                    .ok()
                    .flatten()
            });
        let Some(unit) = unit else {
            return Ok((
                Vec::new(),
                String::new(),
                vec![format!("{} has no unit file", self.socket)],
            ));
        };
        l.apply(&unit);
        // Drop-ins by file name; a name in a higher directory hides the same name lower down.
        let mut names: Vec<(String, String)> = Vec::new();
        for d in UNIT_DIRS.iter().filter(|d| !d.starts_with("/run/")) {
            let dir = format!("{d}/{}.d", self.socket);
            for n in sys.list_dir(&dir).unwrap_or_default() {
                if n.ends_with(".conf") && !names.iter().any(|(m, _)| *m == n) {
                    names.push((n.clone(), format!("{dir}/{n}")));
                }
            }
        }
        names.sort();
        for (_, path) in names {
            if let Some(text) = sys.read_string(&path)? {
                l.apply(&text);
            }
        }
        Ok((l.streams, l.bind_ipv6_only, Vec::new()))
    }
}

impl Resource for Listen {
    fn id(&self) -> String {
        "ssh:listen".to_string()
    }

    fn kind(&self) -> &'static str {
        "ssh"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let Some(read) = sshd_config::read(sys, MAIN)? else {
            return Ok(Observation::new(
                Status::Skipped,
                json!(null),
                json!(null),
                format!("{MAIN} not present (openssh-server not installed)"),
            ));
        };
        if let Some(problem) = &read.problem {
            return Ok(Observation::new(
                Status::Error,
                json!(null),
                json!(null),
                problem.to_string(),
            ));
        }
        let ports: Vec<&str> = read.all("Port").iter().map(|s| s.value.as_str()).collect();
        let addrs: Vec<&str> = read
            .all("ListenAddress")
            .iter()
            .map(|s| s.value.as_str())
            .collect();
        let family = read
            .get("AddressFamily")
            .map_or("any", |s| s.value.as_str());
        let from: Vec<String> = read
            .all("Port")
            .into_iter()
            .chain(read.all("ListenAddress"))
            .chain(read.get("AddressFamily"))
            .map(|s| format!("{} {} at {}", s.keyword, escape(&s.value), escape(&s.at)))
            .collect();
        let want = match sshd_listen(&ports, &addrs, family) {
            Ok(w) => w,
            Err(m) => {
                return Ok(Observation::new(
                    Status::Error,
                    json!({"from": from}),
                    json!(null),
                    m,
                ));
            }
        };
        let (streams, bind, mut problems) = self.socket_side(sys)?;
        let v6only_default = sys
            .read_string("/proc/sys/net/ipv6/bindv6only")
            .ok()
            .flatten()
            .is_some_and(|v| v.trim() == "1");
        let mut odd = Vec::new();
        let addrs: Vec<SocketAddr> = streams
            .iter()
            .filter_map(|s| {
                let a = stream_addr(s);
                if a.is_none() {
                    odd.push(s.clone());
                }
                a
            })
            .collect();
        let has = accepted(&addrs, &bind, sys.is_live() && v6only_default);
        let (want_s, has_s) = (shown(&want), shown(&has));
        let expected = json!({"listen": want_s, "from": from});
        let actual = json!({"socket": self.socket, "listenStream": streams, "bindIPv6Only": bind, "accepts": has_s});
        if want_s != has_s {
            let missing: Vec<&String> = want_s.iter().filter(|a| !has_s.contains(a)).collect();
            let extra: Vec<&String> = has_s.iter().filter(|a| !want_s.contains(a)).collect();
            let mut m = format!(
                "{} listens on {} but sshd's configuration says {}",
                self.socket,
                if has_s.is_empty() {
                    "nothing".to_string()
                } else {
                    has_s.join(", ")
                },
                want_s.join(", ")
            );
            if !missing.is_empty() {
                let v: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
                m.push_str(&format!(" (not on {})", v.join(", ")));
            }
            if !extra.is_empty() {
                let v: Vec<&str> = extra.iter().map(|s| s.as_str()).collect();
                m.push_str(&format!(" (also on {})", v.join(", ")));
            }
            problems.push(m);
        }
        for o in odd {
            problems.push(format!(
                "{} also listens on {} (not an IP address sshd would use)",
                self.socket,
                escape(&o)
            ));
        }
        if !problems.is_empty() && want_s != has_s {
            problems.push(format!(
                "{} sets the socket's addresses; a daemon-reload and a restart of {} apply them",
                self.dropin, self.socket
            ));
        }
        Ok(Observation::judged(expected, actual, &problems, ""))
    }

    fn plan(&self, _sys: &System, _obs: &Observation) -> Vec<Change> {
        Vec::new() // the drop-in, the daemon-reload and the socket's restart are their own items
    }

    fn fixed_by(&self) -> Vec<String> {
        vec![
            format!("file:{}", self.dropin),
            format!("unit-dropins:{}", self.socket),
            format!("service:{}", self.socket),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[SocketAddr]) -> Vec<String> {
        shown(v)
    }

    #[test]
    fn listen_addresses_as_sshd_fills_them_in() {
        assert_eq!(
            s(&sshd_listen(&[], &[], "any").unwrap()),
            ["0.0.0.0:22", "[::]:22"]
        );
        assert_eq!(
            s(&sshd_listen(&["2222"], &[], "inet").unwrap()),
            ["0.0.0.0:2222"]
        );
        assert_eq!(
            s(&sshd_listen(&["22", "2222"], &["10.0.0.5", "[::1]:2200"], "any").unwrap()),
            ["10.0.0.5:22", "10.0.0.5:2222", "[::1]:2200"]
        );
        assert_eq!(
            s(&sshd_listen(&["22"], &["10.0.0.5:23", "fe80::1"], "inet").unwrap()),
            ["10.0.0.5:23"]
        );
        assert!(
            sshd_listen(&[], &["localhost"], "any")
                .unwrap_err()
                .contains("host name")
        );
        assert!(sshd_listen(&[], &["10.0.0.5 rdomain x"], "any").is_err());
    }
}
