//! dpkg's status database (`/var/lib/dpkg/status`), read directly: installed version and hold
//! flag of every package, with no subprocess.

use std::collections::HashMap;

pub const STATUS: &str = "/var/lib/dpkg/status";

/// One package's entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PkgStatus {
    pub version: Option<String>,
    /// dpkg's selection: `install`, `hold`, `deinstall`, `purge`, `unknown`.
    pub want: String,
    /// dpkg's state: `installed`, `config-files`, `half-installed`, `not-installed`, …
    pub state: String,
}

impl PkgStatus {
    pub fn installed(&self) -> bool {
        self.state == "installed"
    }

    pub fn held(&self) -> bool {
        self.want == "hold"
    }
}

/// Parses the status file: package name → status (the native architecture's entry wins over
/// foreign ones of the same name only by coming first; guestprep asks about native packages).
pub fn parse(text: &str) -> HashMap<String, PkgStatus> {
    let mut out = HashMap::new();
    for stanza in text.split("\n\n") {
        let mut name = None;
        let mut version = None;
        let mut status = None;
        for line in stanza.lines() {
            if let Some(v) = line.strip_prefix("Package: ") {
                name = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("Version: ") {
                version = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("Status: ") {
                status = Some(v.trim().to_string());
            }
        }
        let (Some(name), Some(status)) = (name, status) else {
            continue;
        };
        let words: Vec<&str> = status.split_whitespace().collect();
        let (want, state) = match words.as_slice() {
            [want, _flag, state] => (want.to_string(), state.to_string()),
            _ => continue,
        };
        out.entry(name).or_insert(PkgStatus {
            version,
            want,
            state,
        });
    }
    out
}

/// The package that ships `path` as a conffile, and the md5 dpkg recorded for it (the
/// package's own content; an obsolete entry is not one).
pub fn conffile(text: &str, path: &str) -> Option<(String, String)> {
    for stanza in text.split("\n\n") {
        let mut name = None;
        let mut in_conffiles = false;
        for line in stanza.lines() {
            if let Some(v) = line.strip_prefix("Package: ") {
                name = Some(v.trim().to_string());
            }
            if !line.starts_with(' ') {
                in_conffiles = line.starts_with("Conffiles:");
                continue;
            }
            if !in_conffiles {
                continue;
            }
            let w: Vec<&str> = line.split_whitespace().collect();
            if w.len() >= 2 && w[0] == path && !w[2..].contains(&"obsolete") {
                return name.map(|n| (n, w[1].to_string()));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_conffile_and_its_md5() {
        let text = "Package: a\nConffiles:\n /etc/x 00 obsolete\n\nPackage: chrony\nStatus: install ok installed\nConffiles:\n /etc/chrony/chrony.conf 5a1b\n /etc/default/chrony 77\nDescription: x\n";
        assert_eq!(
            conffile(text, "/etc/chrony/chrony.conf"),
            Some(("chrony".into(), "5a1b".into()))
        );
        assert_eq!(conffile(text, "/etc/x"), None);
        assert_eq!(conffile(text, "/etc/none"), None);
    }

    #[test]
    fn parses_status() {
        let db = parse(
            "Package: dkms\nStatus: install ok installed\nVersion: 3.2.2-1\n\nPackage: containerd\nStatus: hold ok installed\nArchitecture: amd64\nVersion: 1.7.24~ds1-6\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n",
        );
        assert!(db["dkms"].installed() && !db["dkms"].held());
        assert!(db["containerd"].installed() && db["containerd"].held());
        assert_eq!(db["containerd"].version.as_deref(), Some("1.7.24~ds1-6"));
        assert!(!db["gone"].installed());
    }
}
