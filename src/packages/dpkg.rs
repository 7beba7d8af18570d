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
    /// The packages named by `Depends:` and `Pre-Depends:` (every alternative, versions and
    /// architecture qualifiers dropped): the edges of dpkg's own graph.
    pub depends: Vec<String>,
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
        let mut depends = Vec::new();
        for line in stanza.lines() {
            if let Some(v) = line.strip_prefix("Package: ") {
                name = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("Version: ") {
                version = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("Status: ") {
                status = Some(v.trim().to_string());
            } else if let Some(v) = line
                .strip_prefix("Depends: ")
                .or_else(|| line.strip_prefix("Pre-Depends: "))
            {
                depends.extend(dependency_names(v));
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
            depends,
        });
    }
    out
}

/// The package names of a `Depends:` field: `a (>= 1) | b:any, c` → a, b, c.
fn dependency_names(field: &str) -> impl Iterator<Item = String> + '_ {
    field.split([',', '|']).filter_map(|alt| {
        let name = alt.split_whitespace().next()?;
        let name = name.split(':').next().unwrap_or(name);
        (!name.is_empty()).then(|| name.to_string())
    })
}

/// The installed packages that depend on any of `roots`, directly or through other installed
/// packages (the roots themselves not included), by name: for a kernel, its meta packages
/// (`linux-image-amd64` on Debian; `linux-image-virtual`, `linux-virtual` on Ubuntu).
pub fn dependents(
    db: &HashMap<String, PkgStatus>,
    roots: &[String],
) -> std::collections::BTreeSet<String> {
    let mut reverse: HashMap<&str, Vec<&str>> = HashMap::new();
    for (name, st) in db {
        if !st.installed() {
            continue;
        }
        for d in &st.depends {
            reverse.entry(d.as_str()).or_default().push(name.as_str());
        }
    }
    let mut out = std::collections::BTreeSet::new();
    let mut todo: Vec<&str> = roots.iter().map(String::as_str).collect();
    while let Some(n) = todo.pop() {
        for &up in reverse.get(n).into_iter().flatten() {
            if !roots.iter().any(|r| r == up) && out.insert(up.to_string()) {
                todo.push(up);
            }
        }
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

    #[test]
    fn a_kernels_metas_are_what_depends_on_it_up_to_the_top() {
        // Ubuntu 24.04's graph: linux-virtual -> linux-image-virtual -> linux-image-6.8.0-49-generic.
        let db = parse(
            "Package: linux-image-6.8.0-49-generic\nStatus: install ok installed\nDepends: linux-modules-6.8.0-49-generic\n\n\
             Package: linux-image-virtual\nStatus: install ok installed\nDepends: linux-image-6.8.0-49-generic (= 6.8.0-49.49), linux-firmware | wireless-regdb\n\n\
             Package: linux-headers-virtual\nStatus: install ok installed\nDepends: linux-headers-6.8.0-49-generic:amd64\n\n\
             Package: linux-headers-6.8.0-49-generic\nStatus: install ok installed\n\n\
             Package: linux-virtual\nStatus: install ok installed\nDepends: linux-image-virtual (= 6.8.0-49.49), linux-headers-virtual (= 6.8.0-49.49)\n\n\
             Package: linux-generic\nStatus: deinstall ok config-files\nDepends: linux-image-generic\n",
        );
        let roots = [
            "linux-image-6.8.0-49-generic".to_string(),
            "linux-headers-6.8.0-49-generic".to_string(),
        ];
        let metas: Vec<String> = dependents(&db, &roots).into_iter().collect();
        assert_eq!(
            metas,
            [
                "linux-headers-virtual",
                "linux-image-virtual",
                "linux-virtual"
            ]
        );
    }
}
