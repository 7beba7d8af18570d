//! `[ssh]`: sshd's configuration through guestprep's drop-in, its keys, validation and typed
//! value (the items are `resources/ssh.rs`).
//!
//! ```toml
//! [ssh]
//! ciphers = ["chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com"]
//! settings = { PermitRootLogin = "prohibit-password", PasswordAuthentication = false, ClientAliveInterval = 300 }
//! ```
//!
//! `settings` takes any keyword OpenSSH 10's sshd (Debian 13) accepts at the top level, checked
//! against its keyword table (case-insensitive, written in the canonical spelling), with the
//! value checked where its type is cheap to know (yes/no, numbers, PermitRootLogin's words).
//! Keywords and algorithm names are then checked against the target's OpenSSH release
//! (`openssh.rs`: Ubuntu 24.04's 9.6 knows neither `mlkem768x25519-sha256` nor
//! `PerSourcePenalties`).

use std::collections::BTreeMap;

use serde::Serialize;

use super::tree::{Table, Value};
use super::validate::{V, element_origin, join};
use crate::text::closest;

/// `[ssh]`: sshd hardening.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Ssh {
    pub ciphers: Vec<String>,
    pub macs: Vec<String>,
    pub kex_algorithms: Vec<String>,
    /// Other sshd keywords (canonical spelling) and their values.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, String>,
    /// Reload a running ssh.service after the drop-in changed (default true).
    #[serde(skip_serializing_if = "super::is_true")]
    pub restart: bool,
}

/// OpenSSH's cipher names (`ssh -Q cipher`).
pub const SSH_CIPHERS: &[&str] = &[
    "3des-cbc",
    "aes128-cbc",
    "aes192-cbc",
    "aes256-cbc",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
];

/// OpenSSH's MAC names (`ssh -Q mac`).
pub const SSH_MACS: &[&str] = &[
    "hmac-sha1",
    "hmac-sha1-96",
    "hmac-sha2-256",
    "hmac-sha2-512",
    "hmac-md5",
    "hmac-md5-96",
    "umac-64@openssh.com",
    "umac-128@openssh.com",
    "hmac-sha1-etm@openssh.com",
    "hmac-sha1-96-etm@openssh.com",
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "hmac-md5-etm@openssh.com",
    "hmac-md5-96-etm@openssh.com",
    "umac-64-etm@openssh.com",
    "umac-128-etm@openssh.com",
];

/// OpenSSH's key exchange names (`ssh -Q kex`).
pub const SSH_KEX: &[&str] = &[
    "diffie-hellman-group1-sha1",
    "diffie-hellman-group14-sha1",
    "diffie-hellman-group14-sha256",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
    "diffie-hellman-group-exchange-sha1",
    "diffie-hellman-group-exchange-sha256",
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "sntrup761x25519-sha512",
    "sntrup761x25519-sha512@openssh.com",
    "mlkem768x25519-sha256",
];

/// sshd's keywords (OpenSSH 10.0 as Debian 13 ships it: servconf.c's table, read from the
/// binary), in their documented spelling. Deprecated and unsupported ones are left out, and so
/// are `Include` and `Match` (structure, not settings).
pub const SSHD_KEYWORDS: &[&str] = &[
    "AcceptEnv",
    "AddressFamily",
    "AllowAgentForwarding",
    "AllowGroups",
    "AllowStreamLocalForwarding",
    "AllowTcpForwarding",
    "AllowUsers",
    "AuthenticationMethods",
    "AuthorizedKeysCommand",
    "AuthorizedKeysCommandUser",
    "AuthorizedKeysFile",
    "AuthorizedPrincipalsCommand",
    "AuthorizedPrincipalsCommandUser",
    "AuthorizedPrincipalsFile",
    "Banner",
    "CASignatureAlgorithms",
    "ChannelTimeout",
    "ChrootDirectory",
    "Ciphers",
    "ClientAliveCountMax",
    "ClientAliveInterval",
    "Compression",
    "DebianBanner",
    "DenyGroups",
    "DenyUsers",
    "DisableForwarding",
    "ExposeAuthInfo",
    "FingerprintHash",
    "ForceCommand",
    "GatewayPorts",
    "GSSAPIAuthentication",
    "GSSAPICleanupCredentials",
    "GSSAPIKexAlgorithms",
    "GSSAPIKeyExchange",
    "GSSAPIStoreCredentialsOnRekey",
    "GSSAPIStrictAcceptorCheck",
    "HostbasedAcceptedAlgorithms",
    "HostbasedAuthentication",
    "HostbasedUsesNameFromPacketOnly",
    "HostCertificate",
    "HostKey",
    "HostKeyAgent",
    "HostKeyAlgorithms",
    "IgnoreRhosts",
    "IgnoreUserKnownHosts",
    "IPQoS",
    "KbdInteractiveAuthentication",
    "KerberosAuthentication",
    "KerberosGetAFSToken",
    "KerberosOrLocalPasswd",
    "KerberosTicketCleanup",
    "KexAlgorithms",
    "ListenAddress",
    "LoginGraceTime",
    "LogLevel",
    "LogVerbose",
    "MACs",
    "MaxAuthTries",
    "MaxSessions",
    "MaxStartups",
    "ModuliFile",
    "PasswordAuthentication",
    "PermitEmptyPasswords",
    "PermitListen",
    "PermitOpen",
    "PermitRootLogin",
    "PermitTTY",
    "PermitTunnel",
    "PermitUserEnvironment",
    "PermitUserRC",
    "PerSourceMaxStartups",
    "PerSourceNetBlockSize",
    "PAMServiceName",
    "PerSourcePenalties",
    "PerSourcePenaltyExemptList",
    "PidFile",
    "Port",
    "PrintLastLog",
    "PrintMotd",
    "PubkeyAcceptedAlgorithms",
    "PubkeyAuthentication",
    "PubkeyAuthOptions",
    "RDomain",
    "RefuseConnection",
    "RekeyLimit",
    "RequiredRSASize",
    "RevokedKeys",
    "SecurityKeyProvider",
    "SetEnv",
    "StreamLocalBindMask",
    "StreamLocalBindUnlink",
    "StrictModes",
    "Subsystem",
    "SyslogFacility",
    "TCPKeepAlive",
    "TrustedUserCAKeys",
    "UnusedConnectionTimeout",
    "UseDNS",
    "UsePAM",
    "VersionAddendum",
    "X11DisplayOffset",
    "X11Forwarding",
    "X11UseLocalhost",
    "XAuthLocation",
];

/// Keywords whose value is `yes` or `no`.
const YES_NO: &[&str] = &[
    "AllowAgentForwarding",
    "Compression",
    "DebianBanner",
    "DisableForwarding",
    "ExposeAuthInfo",
    "GSSAPIAuthentication",
    "GSSAPICleanupCredentials",
    "GSSAPIKeyExchange",
    "GSSAPIStoreCredentialsOnRekey",
    "GSSAPIStrictAcceptorCheck",
    "HostbasedAuthentication",
    "HostbasedUsesNameFromPacketOnly",
    "KbdInteractiveAuthentication",
    "KerberosAuthentication",
    "KerberosGetAFSToken",
    "KerberosOrLocalPasswd",
    "KerberosTicketCleanup",
    "PasswordAuthentication",
    "PermitEmptyPasswords",
    "PermitTTY",
    "PermitUserRC",
    "PrintLastLog",
    "PrintMotd",
    "PubkeyAuthentication",
    "RefuseConnection",
    "StreamLocalBindUnlink",
    "StrictModes",
    "TCPKeepAlive",
    "UseDNS",
    "UsePAM",
    "X11Forwarding",
    "X11UseLocalhost",
];

/// Keywords whose value is a non-negative whole number.
const NUMBER: &[&str] = &[
    "ClientAliveCountMax",
    "ClientAliveInterval",
    "MaxAuthTries",
    "MaxSessions",
    "Port",
    "RequiredRSASize",
    "X11DisplayOffset",
];

/// The canonical spelling of a keyword, whatever its case.
pub fn keyword(s: &str) -> Option<&'static str> {
    SSHD_KEYWORDS
        .iter()
        .find(|k| k.eq_ignore_ascii_case(s))
        .copied()
}

/// Whether sshd reads two values of a keyword as the same (yes/no keywords are case-insensitive).
pub fn same_value(keyword: &str, a: &str, b: &str) -> bool {
    // sshd prints `prohibit-password` as its older alias `without-password` (`sshd -T`).
    let norm = |v: &str| {
        let v = v.to_ascii_lowercase();
        if v == "without-password" {
            "prohibit-password".to_string()
        } else {
            v
        }
    };
    if keyword == "PermitRootLogin" {
        norm(a) == norm(b)
    } else if YES_NO.contains(&keyword) {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

/// Checks one `settings` entry: the keyword's canonical spelling and the value as sshd reads it.
fn check_setting(key: &str, value: &str) -> Result<&'static str, String> {
    let Some(k) = keyword(key) else {
        let lower: Vec<String> = SSHD_KEYWORDS
            .iter()
            .map(|k| k.to_ascii_lowercase())
            .collect();
        let refs: Vec<&str> = lower.iter().map(String::as_str).collect();
        let mut m = format!("`{key}` is not a keyword sshd (OpenSSH 10) accepts");
        if matches!(key.to_ascii_lowercase().as_str(), "include" | "match") {
            m = format!(
                "`{key}` is structure, not a setting: guestprep writes one drop-in without it"
            );
        } else if let Some(c) = closest(&key.to_ascii_lowercase(), &refs) {
            let canon = SSHD_KEYWORDS[refs.iter().position(|r| *r == c).unwrap_or(0)];
            m.push_str(&format!(" (did you mean `{canon}`?)"));
        }
        return Err(m);
    };
    if matches!(k, "Ciphers" | "MACs" | "KexAlgorithms") {
        return Err(format!(
            "set {k} with `[ssh] {}` (a checked list of algorithm names)",
            match k {
                "Ciphers" => "ciphers",
                "MACs" => "macs",
                _ => "kex_algorithms",
            }
        ));
    }
    if value.is_empty() || value.chars().any(|c| c.is_control()) {
        return Err(format!("{k}: the value must be one line, not empty"));
    }
    if YES_NO.contains(&k) && !matches!(value.to_ascii_lowercase().as_str(), "yes" | "no") {
        return Err(format!(
            "{k} takes yes or no (or true/false), not `{value}`"
        ));
    }
    if NUMBER.contains(&k) && !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{k} takes a whole number, not `{value}`"));
    }
    if k == "PermitRootLogin"
        && !matches!(
            value,
            "yes" | "no" | "prohibit-password" | "without-password" | "forced-commands-only"
        )
    {
        return Err(format!(
            "PermitRootLogin takes yes, prohibit-password, forced-commands-only or no, not `{value}`"
        ));
    }
    Ok(k)
}

pub(super) fn known(s: &str, list: &[&str], what: &str) -> Result<(), String> {
    if list.contains(&s) {
        return Ok(());
    }
    let mut m = format!("unknown SSH {what} `{s}`");
    if let Some(c) = closest(s, list) {
        m.push_str(&format!(" (did you mean `{c}`?)"));
    }
    Err(m)
}

impl V {
    pub(super) fn ssh(&mut self, t: &Table) -> Ssh {
        let p = "ssh";
        self.known_keys(
            t,
            p,
            &["ciphers", "macs", "kex_algorithms", "settings", "restart"],
        );
        let mut settings = BTreeMap::new();
        if let Some(e) = t.get("settings") {
            match &e.node.value {
                Value::Table(st) => {
                    for (key, entry) in &st.entries {
                        let kp = format!("ssh.settings.{key}");
                        let value = match &entry.node.value {
                            Value::String(s) => s.clone(),
                            Value::Integer(i) if *i >= 0 => i.to_string(),
                            Value::Bool(b) => if *b { "yes" } else { "no" }.to_string(),
                            other => {
                                let msg = format!(
                                    "expected a string, a whole number or a boolean, found {}",
                                    other.type_name()
                                );
                                self.err(&entry.node.origin, &kp, msg);
                                continue;
                            }
                        };
                        match check_setting(key, &value).and_then(|k| self.ctx.knows(k).map(|()| k))
                        {
                            Ok(k) => {
                                if settings.insert(k.to_string(), value).is_some() {
                                    let msg = format!("{k} is set twice (keywords ignore case)");
                                    self.err(&entry.key_origin, &kp, msg);
                                }
                            }
                            Err(m) => self.err(&entry.key_origin, &kp, m),
                        }
                    }
                }
                other => {
                    let msg = format!(
                        "expected a table of sshd keywords, found {}",
                        other.type_name()
                    );
                    self.err(&e.node.origin, "ssh.settings", msg);
                }
            }
        }
        let ssh = Ssh {
            restart: self.bool(t, p, "restart").unwrap_or(true),
            ciphers: self.list(t, p, "ciphers", |s| known(s, SSH_CIPHERS, "cipher")),
            macs: self.list(t, p, "macs", |s| known(s, SSH_MACS, "MAC")),
            kex_algorithms: self.list(t, p, "kex_algorithms", |s| {
                known(s, SSH_KEX, "key exchange algorithm")
            }),
            settings,
        };
        for (key, names) in [
            ("ciphers", &ssh.ciphers),
            ("macs", &ssh.macs),
            ("kex_algorithms", &ssh.kex_algorithms),
        ] {
            self.known_to_target(t, key, names);
        }
        ssh
    }

    /// An error, where it was written, for each name of a list the target's OpenSSH does not know.
    fn known_to_target(&mut self, t: &Table, key: &str, names: &[String]) {
        let Some(e) = t.get(key) else { return };
        for (i, n) in names.iter().enumerate() {
            if let Err(m) = self.ctx.knows(n) {
                let origin = element_origin(e, n);
                let at = match &e.node.value {
                    Value::Array(a) => a
                        .iter()
                        .position(|x| matches!(&x.value, Value::String(s) if s == n))
                        .unwrap_or(i),
                    _ => i,
                };
                self.err(&origin, &format!("{}[{at}]", join("ssh", key)), m);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_like_sshd_reads_them() {
        assert_eq!(
            check_setting("permitrootlogin", "prohibit-password"),
            Ok("PermitRootLogin")
        );
        assert_eq!(
            check_setting("ClientAliveInterval", "300"),
            Ok("ClientAliveInterval")
        );
        assert!(check_setting("ClientAliveInterval", "5m").is_err());
        assert!(check_setting("PasswordAuthentication", "maybe").is_err());
        assert!(check_setting("PermitRootLogin", "sometimes").is_err());
        assert!(
            check_setting("Ciphers", "aes128-ctr")
                .unwrap_err()
                .contains("[ssh] ciphers")
        );
        assert!(
            check_setting("Include", "/x")
                .unwrap_err()
                .contains("structure")
        );
        let e = check_setting("PermitRootLgin", "no").unwrap_err();
        assert!(e.contains("did you mean `PermitRootLogin`?"), "{e}");
        assert!(check_setting("Banner", "a\nb").is_err());
        assert!(same_value("PasswordAuthentication", "No", "no"));
        assert!(!same_value("Banner", "/etc/a", "/etc/A"));
        assert!(same_value(
            "PermitRootLogin",
            "without-password",
            "prohibit-password"
        ));
    }

    #[test]
    fn every_later_name_is_in_the_tables() {
        for (n, _) in super::super::openssh::SINCE {
            assert!(
                SSHD_KEYWORDS.contains(n)
                    || SSH_KEX.contains(n)
                    || SSH_CIPHERS.contains(n)
                    || SSH_MACS.contains(n),
                "{n}"
            );
        }
    }
}
