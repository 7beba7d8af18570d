//! `dkms:secure-boot`: under Secure Boot a DKMS module loads only if its signing key is enrolled.
//!
//! DKMS signs with the certificate `mok_certificate` names in `/etc/dkms/framework.conf` and then
//! `/etc/dkms/framework.conf.d/*.conf` (the last assignment wins, as DKMS reads them; unset, DKMS's
//! own `/var/lib/dkms/mok.pub`). Debian leaves it unset; Ubuntu's dkms points it at shim-signed's
//! `/var/lib/shim-signed/mok/MOK.der`. The item checks that certificate is in the enrolled MOK list
//! (`MokListRT`), read from EFI variables: no subprocess. Enrolling needs a person at the console
//! (MokManager), so apply cannot do it: drift says the `mokutil --import` step.

use anyhow::Result;
use serde_json::json;

use crate::engine::{Change, Observation, Resource, System};
use crate::report::Status;

pub struct SecureBootKey;

const EFIVARS: &str = "/sys/firmware/efi/efivars";
const SECURE_BOOT_VAR: &str = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c";
const MOK_LIST_VAR: &str = "MokListRT-605dab50-e046-4300-abb6-3dd810dd8b23";
/// DKMS's certificate when its configuration names none.
pub const DKMS_MOK: &str = "/var/lib/dkms/mok.pub";
const FRAMEWORK: &str = "/etc/dkms/framework.conf";
const FRAMEWORK_D: &str = "/etc/dkms/framework.conf.d";

/// The value of `key=` in a DKMS framework file (shell syntax: optional quotes, comments); the
/// last assignment wins.
pub fn framework_value(text: &str, key: &str) -> Option<String> {
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix(key).and_then(|r| r.strip_prefix('=')) else {
            continue;
        };
        let v = rest.split(" #").next().unwrap_or("").trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v);
        found = Some(v.to_string());
    }
    found
}

/// The certificate DKMS signs with, as its configuration says, and where that was said.
pub fn dkms_certificate(sys: &System) -> Result<(String, Option<String>)> {
    let mut files = vec![FRAMEWORK.to_string()];
    for n in sys.list_dir(FRAMEWORK_D)? {
        if n.ends_with(".conf") {
            files.push(format!("{FRAMEWORK_D}/{n}"));
        }
    }
    let mut cert = (DKMS_MOK.to_string(), None);
    for f in files {
        if let Some(text) = sys.read_string(&f)?
            && let Some(v) = framework_value(&text, "mok_certificate")
            && v.starts_with('/')
        {
            cert = (v, Some(f));
        }
    }
    Ok(cert)
}

/// The verdict from the three inputs: the `SecureBoot` variable (4 attribute bytes, then 1 when
/// on), DKMS's certificate `cert` (DER, at `path`) and the enrolled MOK list (EFI signature lists
/// holding DER certificates).
pub fn judge_secure_boot(
    secure_boot: Option<&[u8]>,
    path: &str,
    cert: Option<&[u8]>,
    mok_list: Option<&[u8]>,
) -> (Status, String) {
    let Some(sb) = secure_boot else {
        return (
            Status::Skipped,
            "no SecureBoot EFI variable: not booted with UEFI Secure Boot".to_string(),
        );
    };
    if sb.last() != Some(&1) {
        return (
            Status::Compliant,
            "Secure Boot is off: unsigned or self-signed modules load".to_string(),
        );
    }
    let Some(key) = cert.filter(|k| !k.is_empty()) else {
        return (
            Status::Drift,
            format!(
                "Secure Boot is on and DKMS has no signing key ({path}): its modules will be refused. \
                 Build once to make it, then `mokutil --import {path}` and confirm at the next boot"
            ),
        );
    };
    let enrolled = mok_list.is_some_and(|l| l.windows(key.len()).any(|w| w == key));
    if enrolled {
        (
            Status::Compliant,
            format!("Secure Boot is on and DKMS's key ({path}) is enrolled"),
        )
    } else {
        (
            Status::Drift,
            format!(
                "Secure Boot is on and DKMS's key ({path}) is not enrolled: the kernel will refuse its modules. \
                 Run `mokutil --import {path}`, reboot, and confirm the key in MokManager at the console"
            ),
        )
    }
}

impl Resource for SecureBootKey {
    fn id(&self) -> String {
        "dkms:secure-boot".to_string()
    }

    fn kind(&self) -> &'static str {
        "packages"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let expected = json!({"dkmsKeyEnrolledWhenSecureBoot": true});
        if let Some(why) = sys.offline_reason() {
            return Ok(Observation::new(
                Status::Skipped,
                expected,
                json!(null),
                format!("Secure Boot is a property of the running machine: {why}"),
            ));
        }
        let sb = sys
            .read(&format!("{EFIVARS}/{SECURE_BOOT_VAR}"))
            .ok()
            .flatten();
        let (path, from) = dkms_certificate(sys)?;
        let key = sys.read(&path)?;
        // Newer kernels show the MOK list as a plain file; efivarfs always has it.
        let list = match sys
            .read("/sys/firmware/efi/mok-variables/MokListRT")
            .ok()
            .flatten()
        {
            Some(l) => Some(l),
            None => sys
                .read(&format!("{EFIVARS}/{MOK_LIST_VAR}"))
                .ok()
                .flatten(),
        };
        let (status, msg) =
            judge_secure_boot(sb.as_deref(), &path, key.as_deref(), list.as_deref());
        let actual = json!({
            "secureBoot": sb.as_ref().map(|b| b.last() == Some(&1)),
            "dkmsKey": key.is_some(),
            "dkmsKeyPath": path,
            "dkmsKeyFrom": from,
            "mokList": list.is_some(),
        });
        Ok(Observation::new(status, expected, actual, msg))
    }

    fn plan(&self, _sys: &System, _obs: &Observation) -> Vec<Change> {
        Vec::new() // enrolling a key needs a person at the console (MokManager)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_boot_verdicts() {
        let on = [7u8, 0, 0, 0, 1];
        let off = [7u8, 0, 0, 0, 0];
        let cert = b"\x30\x82\x01\x0aDKMS-CERT";
        let mut list = vec![0xa1, 0x59, 0xc0, 0xa5, 0, 0, 0, 0];
        list.extend_from_slice(cert);
        let j = |sb, c, l| judge_secure_boot(sb, DKMS_MOK, c, l);
        assert_eq!(j(None, None, None).0, Status::Skipped);
        assert_eq!(j(Some(&off), None, None).0, Status::Compliant);
        assert_eq!(j(Some(&on), None, None).0, Status::Drift);
        let (st, msg) = j(Some(&on), Some(cert), Some(b"other keys"));
        assert_eq!(st, Status::Drift);
        assert!(
            msg.contains("mokutil --import /var/lib/dkms/mok.pub"),
            "{msg}"
        );
        assert_eq!(j(Some(&on), Some(cert), Some(&list)).0, Status::Compliant);
    }

    #[test]
    fn framework_files_as_dkms_reads_them() {
        // Debian's framework.conf: commented out, the default stands.
        let debian = "## Secure Boot\n# mok_signing_key=\"/var/lib/dkms/mok.key\"\n\
                      # mok_certificate=\"/var/lib/dkms/mok.pub\"\n";
        assert_eq!(framework_value(debian, "mok_certificate"), None);
        // Ubuntu's: shim-signed's key, the last assignment wins.
        let ubuntu = "mok_signing_key=/var/lib/shim-signed/mok/MOK.priv\n\
                      mok_certificate=/var/lib/dkms/mok.pub\n\
                      mok_certificate='/var/lib/shim-signed/mok/MOK.der' # shim\n";
        assert_eq!(
            framework_value(ubuntu, "mok_certificate").as_deref(),
            Some("/var/lib/shim-signed/mok/MOK.der")
        );
    }

    #[test]
    fn the_certificate_path_follows_framework_conf_d() {
        let t = tempfile::tempdir().unwrap();
        let etc = t.path().join("etc/dkms/framework.conf.d");
        std::fs::create_dir_all(&etc).unwrap();
        let root = crate::root::Root::new(t.path()).unwrap();
        let sys = System::new(root.clone());
        assert_eq!(
            dkms_certificate(&sys).unwrap(),
            (DKMS_MOK.to_string(), None)
        );
        std::fs::write(
            t.path().join("etc/dkms/framework.conf"),
            "mok_certificate=\"/var/lib/shim-signed/mok/MOK.der\"\n",
        )
        .unwrap();
        std::fs::write(
            etc.join("50-site.conf"),
            "mok_certificate=/etc/site/dkms.der\n",
        )
        .unwrap();
        std::fs::write(etc.join("README"), "mok_certificate=/ignored\n").unwrap();
        let sys = System::new(root);
        assert_eq!(
            dkms_certificate(&sys).unwrap(),
            (
                "/etc/site/dkms.der".to_string(),
                Some("/etc/dkms/framework.conf.d/50-site.conf".to_string())
            )
        );
    }
}
