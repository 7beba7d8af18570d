//! What the managed root *is*, asked once and then told to every part that differs by it: the
//! os-release family and version (Debian 13, Ubuntu 24.04, Flatcar), the package manager (dpkg or
//! none), whether `/usr` can be written, how sshd is started (a service, a socket with one
//! daemon, a socket per connection) and the OpenSSH version. Read through the [`Root`], offline as
//! live; nothing is guessed: what cannot be told is `unknown` in the report's host facts.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::root::{Node, Root};

/// os-release `ID`s of the systems guestprep manages; a guest agent naming another (Talos,
/// Windows) is `unmanaged` in `fleet` and `qga report`, not a missing install.
pub const MANAGED_IDS: &[&str] = &["debian", "ubuntu", "flatcar"];

/// The systems guestprep knows the answers of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Debian,
    Ubuntu,
    Flatcar,
    /// os-release names a system guestprep has no answers for (or there is none).
    Unknown,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Debian => "debian",
            Family::Ubuntu => "ubuntu",
            Family::Flatcar => "flatcar",
            Family::Unknown => "unknown",
        }
    }
}

/// Who installs packages on the root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PackageManager {
    /// dpkg (with apt): Debian and Ubuntu.
    Dpkg,
    /// No package manager (Flatcar: a read-only, A/B-updated `/usr`).
    None,
}

/// How sshd is started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SshdStart {
    /// A long-running daemon started by its service (Debian's `ssh.service`).
    Service,
    /// A socket that starts one daemon on the first connection; `Port`/`ListenAddress` are the
    /// socket's `ListenStream=` (Ubuntu 22.10 and later: `ssh.socket`).
    Socket,
    /// A socket with `Accept=yes`: one sshd per connection, so a new setting applies at the next
    /// connection and there is no daemon to reload (Flatcar's `sshd.socket`).
    PerConnection,
    /// No sshd unit in the root.
    None,
}

/// sshd's units on this root: how it starts, and the names of its socket and service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sshd {
    pub start: SshdStart,
    /// `ssh.socket` (Debian, Ubuntu) or `sshd.socket` (Flatcar), when the root has one.
    pub socket: Option<String>,
    /// `ssh.service`, `sshd.service`, or `sshd@.service` for a per-connection socket.
    pub service: String,
}

/// What the root is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub family: Family,
    /// os-release's `ID` and `VERSION_ID`, as written.
    pub os_id: Option<String>,
    pub version_id: Option<String>,
    pub pretty_name: Option<String>,
    pub package_manager: PackageManager,
    pub usr_writable: bool,
    pub sshd: Sshd,
    /// Why what the root is could not be told (os-release unreadable), for an error item.
    pub problem: Option<String>,
}

const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// os-release's fields (`/etc/os-release`, else `/usr/lib/os-release`, as os-release(5) says),
/// unquoted; an os-release that cannot be read (a FIFO, a device, a giant) is said, not taken for
/// a missing one.
fn os_release(root: &Root) -> (Vec<(String, String)>, Option<String>) {
    let text = match root.read_string("/etc/os-release") {
        Ok(Some(t)) => Ok(t),
        Ok(None) => root
            .read_string("/usr/lib/os-release")
            .map(Option::unwrap_or_default),
        Err(e) => Err(e),
    };
    match text {
        Ok(t) => (fields(&t), None),
        Err(e) => (Vec::new(), Some(format!("{e:#}"))),
    }
}

fn fields(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

impl Platform {
    /// Tells what the root is from its own files (os-release, dpkg's database, unit files) and,
    /// live, whether `/usr` is mounted read-only.
    pub fn detect(root: &Root) -> Platform {
        let (os, problem) = os_release(root);
        let field = |k: &str| os.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let os_id = field("ID");
        let family = match os_id.as_deref() {
            Some("debian") => Family::Debian,
            Some("ubuntu") => Family::Ubuntu,
            Some("flatcar") => Family::Flatcar,
            _ => Family::Unknown,
        };
        let package_manager = if root.exists("/var/lib/dpkg/status") {
            PackageManager::Dpkg
        } else {
            PackageManager::None
        };
        Platform {
            family,
            version_id: field("VERSION_ID"),
            pretty_name: field("PRETTY_NAME"),
            os_id,
            package_manager,
            usr_writable: usr_writable(root, family),
            sshd: sshd(root),
            problem,
        }
    }

    /// `debian 13`, `ubuntu 24.04`, `flatcar 4152.2.0`, `unknown (ID=arch)`.
    pub fn describe(&self) -> String {
        let v = self.version_id.as_deref().unwrap_or("?");
        match (self.family, self.os_id.as_deref()) {
            (Family::Unknown, Some(id)) => format!("unknown (os-release ID={id})"),
            (Family::Unknown, None) => "unknown (no os-release)".to_string(),
            (f, _) => format!("{} {v}", f.name()),
        }
    }

    pub fn has_dpkg(&self) -> bool {
        self.package_manager == PackageManager::Dpkg
    }
}

/// Live, whether `/usr` is a read-only mount; offline, Flatcar's `/usr` is its read-only
/// partition whatever the image directory allows, and any other image's is writable.
fn usr_writable(root: &Root, family: Family) -> bool {
    if family == Family::Flatcar {
        return false;
    }
    if root.is_live() {
        return nix::sys::statvfs::statvfs("/usr")
            .map(|s| !s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
            .unwrap_or(true);
    }
    true
}

/// The first unit file of `name` in the unit search path, as text.
fn unit_text(root: &Root, name: &str) -> Option<String> {
    UNIT_DIRS
        .iter()
        .find_map(|d| root.read_string(&format!("{d}/{name}")).ok().flatten())
}

/// Whether `name` is pulled in by `sockets.target` (an enablement link in any unit directory) and
/// not masked.
fn socket_enabled(root: &Root, name: &str) -> bool {
    let masked = matches!(
        root.lstat(&format!("/etc/systemd/system/{name}")),
        Ok(Node::Symlink(ref target)) if target.as_os_str() == "/dev/null"
    );
    !masked
        && UNIT_DIRS.iter().any(|d| {
            !matches!(
                root.lstat(&format!("{d}/sockets.target.wants/{name}")),
                Ok(Node::Missing) | Err(_)
            )
        })
}

/// How sshd starts: an enabled ssh/sshd socket (per connection when it says `Accept=yes`), else
/// its service.
fn sshd(root: &Root) -> Sshd {
    for (socket, service) in [
        ("ssh.socket", "ssh.service"),
        ("sshd.socket", "sshd.service"),
    ] {
        let Some(text) = unit_text(root, socket) else {
            continue;
        };
        if !socket_enabled(root, socket) {
            continue;
        }
        let accept = text.lines().any(|l| {
            l.trim()
                .strip_prefix("Accept=")
                .is_some_and(|v| matches!(v.trim(), "yes" | "true" | "1" | "on"))
        });
        let base = socket.trim_end_matches(".socket");
        return if accept {
            Sshd {
                start: SshdStart::PerConnection,
                socket: Some(socket.to_string()),
                service: format!("{base}@.service"),
            }
        } else {
            Sshd {
                start: SshdStart::Socket,
                socket: Some(socket.to_string()),
                service: service.to_string(),
            }
        };
    }
    for (service, socket) in [
        ("ssh.service", "ssh.socket"),
        ("sshd.service", "sshd.socket"),
    ] {
        if unit_text(root, service).is_some() {
            return Sshd {
                start: SshdStart::Service,
                socket: unit_text(root, socket).map(|_| socket.to_string()),
                service: service.to_string(),
            };
        }
    }
    Sshd {
        start: SshdStart::None,
        socket: None,
        service: "ssh.service".to_string(),
    }
}

/// The OpenSSH version of the root's sshd (`10.0p2`, `9.6p1`), from the version string compiled
/// into `/usr/sbin/sshd` (as `sshd -V` prints it, without running the image's program).
pub fn openssh_version(root: &Root) -> Option<String> {
    let bin = root
        .read_limited("/usr/sbin/sshd", crate::saferead::DATABASE_LIMIT)
        .ok()??;
    let needle = b"OpenSSH_";
    bin.windows(needle.len() + 1)
        .position(|w| w.starts_with(needle) && w[needle.len()].is_ascii_digit())
        .map(|i| {
            bin[i + needle.len()..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || **c == b'.')
                .map(|c| *c as char)
                .collect()
        })
}

/// The OpenSSH version of openssh-server as dpkg's status records it (`1:9.6p1-3ubuntu13.5` →
/// `9.6p1`), with the package version as written; `None` when it is not installed.
pub fn openssh_from_dpkg(root: &Root) -> Option<(String, String)> {
    let status = root
        .read_limited("/var/lib/dpkg/status", crate::saferead::DATABASE_LIMIT)
        .ok()??;
    let text = String::from_utf8_lossy(&status);
    text.split("\n\n").find_map(|stanza| {
        let field = |k: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix(':'))
                .map(str::trim)
        };
        if field("Package") != Some("openssh-server")
            || !field("Status").is_some_and(|s| s.ends_with(" installed"))
        {
            return None;
        }
        let full = field("Version")?;
        let upstream = full.split_once(':').map_or(full, |(_, v)| v);
        let upstream = upstream.rsplit_once('-').map_or(upstream, |(v, _)| v);
        openssh_release(upstream)?;
        Some((upstream.to_string(), full.to_string()))
    })
}

/// The root's OpenSSH version and where it was read: live, the binary first (what runs), then
/// dpkg's status; offline, dpkg's status first (what the image's package database says), then
/// the binary. `None` when neither tells.
pub fn openssh_installed(root: &Root) -> Option<(String, String)> {
    let binary = || openssh_version(root).map(|v| (v, "/usr/sbin/sshd".to_string()));
    let dpkg = || {
        openssh_from_dpkg(root).map(|(v, full)| (v, format!("dpkg status: openssh-server {full}")))
    };
    if root.is_live() {
        binary().or_else(dpkg)
    } else {
        dpkg().or_else(binary)
    }
}

/// `(major, minor)` of an OpenSSH version (`9.6p1` → `(9, 6)`).
pub fn openssh_release(v: &str) -> Option<(u32, u32)> {
    let (maj, rest) = v.split_once('.')?;
    let minor: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((maj.parse().ok()?, minor.parse().ok()?))
}

/// Facts about the managed system (read from the root when offline).
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Host {
    pub hostname: Option<String>,
    /// Running kernel when live; newest installed kernel of the image when offline.
    pub kernel: Option<String>,
    /// `PRETTY_NAME` of os-release.
    pub os: Option<String>,
    /// `ID` and `VERSION_ID` of os-release.
    pub os_id: Option<String>,
    pub os_version_id: Option<String>,
    /// Seconds since boot; null offline.
    pub uptime_seconds: Option<f64>,
    /// The platform guestprep took this root for (`debian`, `ubuntu`, `flatcar`, or `unknown`:
    /// a system it has no answers for, said rather than guessed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Family>,
    /// `dpkg`, or `none` (Flatcar).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_manager: Option<PackageManager>,
    /// Whether `/usr` can be written (false on Flatcar, or a read-only `/usr` mount).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usr_writable: Option<bool>,
    /// How sshd is started: `service`, `socket` (one daemon), `per-connection`, `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sshd_start: Option<SshdStart>,
}

/// Reads host facts: from the live system, or from the image files offline.
pub fn host_facts(root: &Root, platform: &Platform) -> Host {
    let (hostname, kernel, uptime) = if root.is_live() {
        let uts = nix::sys::utsname::uname().ok();
        let uptime = root
            .read_string("/proc/uptime")
            .ok()
            .flatten()
            .and_then(|s| crate::clock::parse_uptime(s.as_bytes()));
        (
            uts.as_ref()
                .map(|u| u.nodename().to_string_lossy().into_owned()),
            uts.as_ref()
                .map(|u| u.release().to_string_lossy().into_owned()),
            uptime,
        )
    } else {
        let hostname = root
            .read_string("/etc/hostname")
            .ok()
            .flatten()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        (hostname, installed_kernels(root).pop(), None)
    };
    Host {
        hostname,
        kernel,
        os: platform.pretty_name.clone(),
        os_id: platform.os_id.clone(),
        os_version_id: platform.version_id.clone(),
        uptime_seconds: uptime,
        platform: Some(platform.family),
        package_manager: Some(platform.package_manager),
        usr_writable: Some(platform.usr_writable),
        sshd_start: Some(platform.sshd.start),
    }
}

/// Kernel versions installed in the root (directories of /usr/lib/modules), oldest first.
pub fn installed_kernels(root: &Root) -> Vec<String> {
    kernels_in(|d| root.list_dir(d).unwrap_or_default())
}

/// The kernel versions of a root whose directories `list` lists (`/usr/lib/modules`, else
/// `/lib/modules`), oldest first: [`installed_kernels`], and `System`'s recorded twin.
pub fn kernels_in(list: impl Fn(&str) -> Vec<String>) -> Vec<String> {
    let mut k = list("/usr/lib/modules");
    if k.is_empty() {
        k = list("/lib/modules");
    }
    k.sort_by(|a, b| version_cmp(a, b));
    k
}

/// Where a kernel's headers are when it has them (`/usr/lib/modules/KVER/build`): the kernels
/// DKMS can build for.
pub fn headers_dir(kver: &str) -> String {
    format!("/usr/lib/modules/{kver}/build")
}

/// Compares version strings numerically where they are numbers (6.12.9 < 6.12.10).
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |s: &str| -> Vec<(u64, String)> {
        s.split(|c: char| !c.is_ascii_alphanumeric())
            .map(|p| (p.parse().unwrap_or(0), p.to_string()))
            .collect()
    };
    parts(a).cmp(&parts(b))
}
