//! Which OpenSSH release knows which sshd keyword and algorithm name, and the release a policy is
//! validated against (its [`Context`]).
//!
//! The tables of `policy/ssh.rs` are OpenSSH 10.0's (Debian 13). Ubuntu 24.04 ships 9.6p1, the
//! oldest release guestprep knows: every name that arrived after it is listed in [`SINCE`] with
//! the release that brought it, read from openssh-portable's own tables at each release tag
//! (servconf.c `keywords[]`, kex-names.c `kexalgs[]`, cipher.c `ciphers[]`, mac.c `macs[]`):
//! 9.7 added none; 9.8 `PerSourcePenalties`, `PerSourcePenaltyExemptList`, `PAMServiceName`; 9.9
//! `RefuseConnection`, `mlkem768x25519-sha256`, and `sntrup761x25519-sha512` (the standard name
//! of `sntrup761x25519-sha512@openssh.com`); 10.0 none that the tables hold (ciphers and MACs are
//! the same from 9.6 to 10.0). Nothing in the tables was removed between 9.6 and 10.0.
//!
//! Pure: the version comes in from the caller (`usecase.rs` reads it from the root, through
//! `platform.rs`); without one the newest table applies, and [`Context::describe`] says so.

/// An OpenSSH release, `(major, minor)`.
pub type Release = (u32, u32);

/// The newest release whose tables guestprep holds (Debian 13's).
pub const NEWEST: Release = (10, 0);
/// The oldest release the tables go back to (Ubuntu 24.04's).
pub const OLDEST: Release = (9, 6);

/// Names (keywords in their canonical spelling, algorithm names as written) that arrived after
/// [`OLDEST`], with the release that brought them.
pub const SINCE: &[(&str, Release)] = &[
    ("PAMServiceName", (9, 8)),
    ("PerSourcePenalties", (9, 8)),
    ("PerSourcePenaltyExemptList", (9, 8)),
    ("RefuseConnection", (9, 9)),
    ("mlkem768x25519-sha256", (9, 9)),
    ("sntrup761x25519-sha512", (9, 9)),
];

/// The target's sshd, as far as validation needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sshd {
    /// As the root's sshd says it (`9.6p1`).
    pub version: String,
    pub release: Release,
    /// Where it was read (`/usr/sbin/sshd`, `dpkg status (openssh-server 1:9.6p1-3ubuntu13)`).
    pub from: String,
}

/// What a policy is validated against: the target's OpenSSH, when it is known.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    /// The target's os-release `ID` (`debian`, `ubuntu`, `flatcar`): a fragment whose `[platform]
    /// os` does not name it is left out. `None`: no target (every fragment applies).
    pub os: Option<String>,
    pub openssh: Option<Sshd>,
    /// Why there is no target (`no sshd in /`), for [`Context::describe`].
    pub no_openssh: Option<String>,
}

fn show(r: Release) -> String {
    format!("{}.{}", r.0, r.1)
}

impl Context {
    /// The release the tables are read at: the target's, or the newest; one older than the
    /// tables go is read at [`OLDEST`], one newer at [`NEWEST`].
    pub fn release(&self) -> Release {
        self.openssh
            .as_ref()
            .map_or(NEWEST, |t| t.release.clamp(OLDEST, NEWEST))
    }

    /// One line for `policy check`: what sshd names were checked against.
    pub fn describe(&self) -> String {
        match &self.openssh {
            Some(t) if t.release < OLDEST => format!(
                "sshd names checked against OpenSSH {} (the oldest guestprep knows): the root's is {} ({})",
                show(OLDEST),
                t.version,
                t.from
            ),
            Some(t) if t.release > NEWEST => format!(
                "sshd names checked against OpenSSH {} (the newest guestprep knows): the root's is {} ({})",
                show(NEWEST),
                t.version,
                t.from
            ),
            Some(t) => format!(
                "sshd names checked against the root's OpenSSH {} ({})",
                t.version, t.from
            ),
            None => format!(
                "sshd names checked against OpenSSH {}, the newest guestprep knows: {}",
                show(NEWEST),
                self.no_openssh
                    .as_deref()
                    .unwrap_or("the root's sshd version is unknown")
            ),
        }
    }

    /// `Err` naming the release that knows `name` when the target's does not.
    pub fn knows(&self, name: &str) -> Result<(), String> {
        let Some(&(_, since)) = SINCE.iter().find(|(n, _)| *n == name) else {
            return Ok(());
        };
        let at = self.release();
        if at >= since {
            return Ok(());
        }
        let whose = match &self.openssh {
            Some(t) => format!("this root's OpenSSH {} ({})", t.version, t.from),
            None => format!("OpenSSH {}", show(at)),
        };
        Err(format!(
            "`{name}` is not known to {whose}: it arrived in OpenSSH {}",
            show(since)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::openssh_release as release_of;

    fn at(v: &str) -> Context {
        Context {
            openssh: Some(Sshd {
                version: v.into(),
                release: release_of(v).unwrap(),
                from: "/usr/sbin/sshd".into(),
            }),
            no_openssh: None,
            os: None,
        }
    }

    #[test]
    fn noble_refuses_what_arrived_later_and_names_the_release() {
        let noble = at("9.6p1");
        let e = noble.knows("mlkem768x25519-sha256").unwrap_err();
        assert!(e.contains("OpenSSH 9.6p1"), "{e}");
        assert!(e.contains("arrived in OpenSSH 9.9"), "{e}");
        assert!(
            noble
                .knows("PerSourcePenalties")
                .unwrap_err()
                .contains("9.8")
        );
        assert!(noble.knows("sntrup761x25519-sha512@openssh.com").is_ok());
        assert!(noble.knows("curve25519-sha256").is_ok());
        assert!(at("9.8p1").knows("PerSourcePenalties").is_ok());
        assert!(at("9.8p1").knows("RefuseConnection").is_err());
        assert!(at("10.0p2").knows("mlkem768x25519-sha256").is_ok());
        // Unknown: the newest table, and said so.
        let none = Context::default();
        assert!(none.knows("mlkem768x25519-sha256").is_ok());
        assert!(none.describe().contains("newest"), "{}", none.describe());
        // Older than the tables go: read at the oldest; newer: at the newest.
        assert_eq!(at("8.9p1").release(), OLDEST);
        assert!(at("8.9p1").describe().contains("oldest"));
        assert_eq!(at("10.2p1").release(), NEWEST);
        assert_eq!(release_of("10.0p2"), Some((10, 0)));
    }
}
