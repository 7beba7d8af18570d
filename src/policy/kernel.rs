//! `[kernel]`: the one kernel a template boots, its key, validation and typed value (the items are
//! `resources/kernel.rs`).
//!
//! ```toml
//! [kernel]
//! version = "6.12.117+deb13-amd64"   # the ABI name, as `uname -r` prints it
//! remove_others = false              # purge other kernels' image and headers packages
//! ```

use serde::Serialize;

use super::tree::{Origin, Table};
use super::validate::V;

#[derive(Clone, Debug, Serialize)]
pub struct Kernel {
    pub version: String,
    pub remove_others: bool,
}

impl Kernel {
    /// The version without its flavour: `6.12.117+deb13` of `6.12.117+deb13-amd64`,
    /// `6.8.0-45` of Ubuntu's `6.8.0-45-generic`.
    pub fn base(&self) -> &str {
        self.split().0
    }

    /// The flavour: `amd64`, `cloud-amd64`, `generic`.
    pub fn flavour(&self) -> &str {
        self.split().1
    }

    fn split(&self) -> (&str, &str) {
        let v = self.version.as_str();
        // Ubuntu: X.Y.Z-ABI-FLAVOUR (the ABI is a number); Debian: X.Y.Z+debN-FLAVOUR.
        if let Some((a, rest)) = v.split_once('-')
            && let Some((abi, flavour)) = rest.split_once('-')
            && !abi.is_empty()
            && abi.bytes().all(|b| b.is_ascii_digit())
        {
            return (&v[..a.len() + 1 + abi.len()], flavour);
        }
        v.split_once('-').unwrap_or((v, ""))
    }

    /// The packages of this kernel: its image and headers.
    pub fn packages(&self) -> [String; 2] {
        [
            format!("linux-image-{}", self.version),
            format!("linux-headers-{}", self.version),
        ]
    }

    /// The meta packages that follow the newest kernel of the flavour (held, so an upgrade does
    /// not bring another kernel).
    pub fn metas(&self) -> [String; 2] {
        [
            format!("linux-image-{}", self.flavour()),
            format!("linux-headers-{}", self.flavour()),
        ]
    }

    /// Whether an installed package belongs to another kernel: `linux-image-X`,
    /// `linux-headers-X`, `linux-modules[-extra]-X`, `linux-kbuild-X` with X a version (not a
    /// flavour meta) of another kernel than this one.
    pub fn is_other_kernel_package(&self, name: &str) -> bool {
        let Some(x) = [
            "linux-image-",
            "linux-headers-",
            "linux-modules-extra-",
            "linux-modules-",
            "linux-kbuild-",
        ]
        .iter()
        .find_map(|p| name.strip_prefix(p)) else {
            return false;
        };
        if !x.starts_with(|c: char| c.is_ascii_digit()) {
            return false;
        }
        let base = self.base();
        !(x == self.version || x == base || x.starts_with(&format!("{base}-")))
    }
}

/// A kernel ABI name: a version, a `-`, a flavour; nothing a shell or apt would read otherwise.
fn check_version(s: &str) -> Result<(), String> {
    if !s.starts_with(|c: char| c.is_ascii_digit()) || !s.contains('-') {
        return Err(format!(
            "`{s}` is not a kernel ABI name: write it as `uname -r` prints it, e.g. \"6.12.117+deb13-amd64\""
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ".+~_-".contains(*c)))
    {
        return Err(format!(
            "kernel version `{s}` contains `{}`",
            c.escape_default()
        ));
    }
    Ok(())
}

impl V {
    pub(super) fn kernel(&mut self, t: &Table, origin: &Origin) -> Kernel {
        self.known_keys(t, "kernel", &["version", "remove_others"]);
        let version = match (self.string(t, "kernel", "version"), t.get("version")) {
            (Some(v), Some(e)) => {
                if let Err(m) = check_version(&v) {
                    self.err(&e.node.origin, "kernel.version", m);
                }
                v
            }
            _ => {
                if t.get("version").is_none() {
                    self.err(
                        origin,
                        "kernel.version",
                        "missing `version`: the kernel to boot, as `uname -r` prints it",
                    );
                }
                String::new()
            }
        };
        let remove_others = self.bool(t, "kernel", "remove_others").unwrap_or(false);
        Kernel {
            version,
            remove_others,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(v: &str) -> Kernel {
        Kernel {
            version: v.into(),
            remove_others: true,
        }
    }

    #[test]
    fn flavours_and_other_kernels() {
        let d = k("6.12.117+deb13-amd64");
        assert_eq!((d.base(), d.flavour()), ("6.12.117+deb13", "amd64"));
        assert_eq!(d.metas(), ["linux-image-amd64", "linux-headers-amd64"]);
        assert!(d.is_other_kernel_package("linux-image-6.12.99+deb13-amd64"));
        assert!(d.is_other_kernel_package("linux-headers-7.3.1+bpo-amd64"));
        assert!(d.is_other_kernel_package("linux-kbuild-6.12.99+deb13"));
        assert!(!d.is_other_kernel_package("linux-image-6.12.117+deb13-amd64"));
        assert!(!d.is_other_kernel_package("linux-image-6.12.117+deb13-amd64-unsigned"));
        assert!(!d.is_other_kernel_package("linux-headers-6.12.117+deb13-common"));
        assert!(!d.is_other_kernel_package("linux-kbuild-6.12.117+deb13"));
        assert!(!d.is_other_kernel_package("linux-image-amd64"));
        assert!(!d.is_other_kernel_package("linux-image-cloud-amd64"));
        assert!(!d.is_other_kernel_package("linux-base"));
        let c = k("6.12.117+deb13-cloud-amd64");
        assert_eq!(c.flavour(), "cloud-amd64");
        let u = k("6.8.0-45-generic");
        assert_eq!((u.base(), u.flavour()), ("6.8.0-45", "generic"));
        assert!(u.is_other_kernel_package("linux-image-6.8.0-31-generic"));
        assert!(u.is_other_kernel_package("linux-modules-extra-6.8.0-31-generic"));
        assert!(!u.is_other_kernel_package("linux-headers-6.8.0-45"));
        assert!(!u.is_other_kernel_package("linux-modules-6.8.0-45-generic"));
    }

    #[test]
    fn versions() {
        assert!(check_version("6.12.117+deb13-amd64").is_ok());
        assert!(check_version("amd64").is_err());
        assert!(check_version("6.12").is_err());
        assert!(check_version("6.12-amd64; rm -rf /").is_err());
    }
}
