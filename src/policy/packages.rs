//! `[packages]`: apt packages installed, held, removed and purged, and release `.deb`s with their
//! DKMS modules: keys, validation and typed values (the items are `resources/packages.rs`).

use serde::Serialize;

use super::tree::{Table, Value};
use super::validate::{V, element_origin};

/// `[packages]`: apt packages installed and held, and release `.deb`s verified by sha256.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Packages {
    pub install: Vec<String>,
    pub hold: Vec<String>,
    /// Not installed (`apt-get remove`: configuration files may stay).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
    /// Not installed and no configuration files left (`apt-get purge`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub purge: Vec<String>,
    pub deb: Vec<DebSpec>,
}

/// `[[packages.deb]]`.
#[derive(Clone, Debug, Serialize)]
pub struct DebSpec {
    pub name: String,
    pub version: String,
    pub url: String,
    pub sha256: String,
    pub hold: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dkms: Option<DkmsSpec>,
    pub retries: u32,
    /// First retry delay in seconds; doubled after each retry.
    pub retry_delay: f64,
}

/// `dkms = { module, version, require_config }`: what must be built, for every installed kernel
/// with headers, and the kernel build options it needs (`CONFIG_DRM`: checked by the
/// `kernel:config:KVER` items, the `.deb`'s preflight and `dkms try` before anything is built).
#[derive(Clone, Debug, Serialize)]
pub struct DkmsSpec {
    pub module: String,
    pub version: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub require_config: Vec<String>,
}

impl V {
    pub(super) fn packages(&mut self, t: &Table) -> Packages {
        let p = "packages";
        self.known_keys(t, p, &["install", "hold", "remove", "purge", "deb"]);
        let mut out = Packages {
            install: self.list(t, p, "install", check_package),
            hold: self.list(t, p, "hold", check_package),
            remove: self.list(t, p, "remove", check_package),
            purge: self.list(t, p, "purge", check_package),
            deb: Vec::new(),
        };
        // A package both installed and removed would flip on every run.
        for key in ["remove", "purge"] {
            let gone: Vec<String> = if key == "remove" {
                out.remove.clone()
            } else {
                out.purge.clone()
            };
            for (i, name) in gone.iter().enumerate() {
                let clash = if out.install.contains(name) {
                    Some("install")
                } else if out.hold.contains(name) {
                    Some("hold")
                } else if key == "purge" && out.remove.contains(name) {
                    Some("remove")
                } else {
                    None
                };
                if let Some(other) = clash {
                    let e = t.get(key).expect("present");
                    let o = element_origin(e, name);
                    self.err(
                        &o,
                        &format!("packages.{key}[{i}]"),
                        format!("`{name}` is also in packages.{other}: choose one"),
                    );
                }
            }
        }
        let Some(e) = t.get("deb") else { return out };
        let Value::Array(items) = &e.node.value else {
            let msg = format!(
                "expected an array of tables `[[packages.deb]]`, found {}",
                e.node.value.type_name()
            );
            self.err(&e.node.origin, "packages.deb", msg);
            return out;
        };
        for (i, n) in items.iter().enumerate() {
            let p = format!("packages.deb[{i}]");
            let Value::Table(d) = &n.value else {
                self.err(
                    &n.origin,
                    &p,
                    format!("expected a table, found {}", n.value.type_name()),
                );
                continue;
            };
            self.known_keys(
                d,
                &p,
                &[
                    "name",
                    "version",
                    "url",
                    "sha256",
                    "hold",
                    "dkms",
                    "retries",
                    "retry_delay",
                ],
            );
            let req = |v: &mut Self,
                       key: &str,
                       check: fn(&str) -> Result<(), String>|
             -> Option<String> {
                let kp = format!("{p}.{key}");
                match v.string(d, &p, key) {
                    Some(s) => match check(&s) {
                        Ok(()) => Some(s),
                        Err(m) => {
                            v.err(&d.get(key).expect("present").node.origin, &kp, m);
                            None
                        }
                    },
                    None => None,
                }
            };
            let name = req(self, "name", check_package);
            let version = req(self, "version", check_version);
            let url = req(self, "url", check_url);
            let sha256 = req(self, "sha256", check_sha256);
            for key in ["name", "version", "url"] {
                if d.get(key).is_none() {
                    self.err(
                        &n.origin,
                        &format!("{p}.{key}"),
                        format!("missing required key `{key}`"),
                    );
                }
            }
            if d.get("sha256").is_none() {
                let hint = match &url {
                    Some(u) => format!("missing required key `sha256`: no checksum, no install. Run `guestprep prefetch {u}` to get it"),
                    None => "missing required key `sha256`: no checksum, no install. Run `guestprep prefetch URL` to get it".to_string(),
                };
                self.err(&n.origin, &format!("{p}.sha256"), hint);
            }
            let hold = self.bool(d, &p, "hold").unwrap_or(true);
            let retries = match d.get("retries") {
                Some(e) => match &e.node.value {
                    Value::Integer(r) if (0..=10).contains(r) => *r as u32,
                    _ => {
                        self.err(
                            &e.node.origin,
                            &format!("{p}.retries"),
                            "retries must be an integer from 0 to 10",
                        );
                        4
                    }
                },
                None => 4,
            };
            let retry_delay = match d.get("retry_delay") {
                Some(e) => {
                    match &e.node.value {
                        Value::Float(f) if *f > 0.0 && *f <= 300.0 => *f,
                        Value::Integer(i) if *i > 0 && *i <= 300 => *i as f64,
                        _ => {
                            self.err(&e.node.origin, &format!("{p}.retry_delay"), "retry_delay must be a number of seconds, more than 0 and at most 300");
                            5.0
                        }
                    }
                }
                None => 5.0,
            };
            let dkms = match d.get("dkms") {
                None => None,
                Some(de) => match &de.node.value {
                    Value::Table(dt) => {
                        let dp = format!("{p}.dkms");
                        self.known_keys(dt, &dp, &["module", "version", "require_config"]);
                        let module = self.string(dt, &dp, "module");
                        let dversion = self.string(dt, &dp, "version");
                        let require_config =
                            self.list(dt, &dp, "require_config", check_config_option);
                        if module.is_none() && dt.get("module").is_none() {
                            self.err(
                                &de.node.origin,
                                &format!("{dp}.module"),
                                "missing required key `module`",
                            );
                        }
                        if let Some(m) = &module
                            && let Err(msg) = check_package(m)
                        {
                            self.err(
                                &dt.get("module").expect("present").node.origin,
                                &format!("{dp}.module"),
                                msg,
                            );
                        }
                        if let Some(v) = &dversion
                            && let Err(msg) = check_dkms_version(v)
                        {
                            self.err(
                                &dt.get("version").expect("present").node.origin,
                                &format!("{dp}.version"),
                                msg,
                            );
                        }
                        match (module, dversion.or_else(|| version.clone())) {
                            (Some(module), Some(version)) => Some(DkmsSpec {
                                module,
                                version,
                                require_config,
                            }),
                            _ => None,
                        }
                    }
                    other => {
                        let msg = format!(
                            "expected a table like {{ module = \"NAME\", version = \"V\" }}, found {}",
                            other.type_name()
                        );
                        self.err(&de.node.origin, &format!("{p}.dkms"), msg);
                        None
                    }
                },
            };
            if let (Some(name), Some(version), Some(url), Some(sha256)) =
                (name, version, url, sha256)
            {
                out.deb.push(DebSpec {
                    name,
                    version,
                    url,
                    sha256: sha256.to_ascii_lowercase(),
                    hold,
                    dkms,
                    retries,
                    retry_delay,
                });
            }
        }
        out
    }
}

/// A DKMS module version: it names directories (`/usr/src/MODULE-VERSION`, DKMS's tree), so one
/// path component of the characters versions use, never `..` or an option.
fn check_dkms_version(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && !s.starts_with(['.', '-'])
        && !s.contains("..")
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+~-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not a DKMS module version (letters, digits and . _ + ~ -, one path component)"
        ))
    }
}

/// A kernel build option as `/boot/config-KVER` names it: `CONFIG_` then capitals, digits, `_`.
pub fn check_config_option(s: &str) -> Result<(), String> {
    match s.strip_prefix("CONFIG_") {
        Some(rest)
            if !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_') =>
        {
            Ok(())
        }
        _ => Err(format!(
            "`{s}` is not a kernel build option: write it as /boot/config-KVER does, e.g. \"CONFIG_DRM\" (CONFIG_ then A-Z, 0-9, _)"
        )),
    }
}

/// A Debian package name (Policy §5.6.1): lowercase letters, digits, `+`, `-`, `.`; at least two
/// characters, starting with a letter or digit.
pub fn check_package(s: &str) -> Result<(), String> {
    let ok = s.len() >= 2
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!("`{s}` is not a valid Debian package name"))
    }
}

fn check_version(s: &str) -> Result<(), String> {
    if !s.is_empty()
        && s.chars().next().is_some_and(|c| c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+-~:".contains(c))
    {
        Ok(())
    } else {
        Err(format!("`{s}` is not a valid Debian version"))
    }
}

fn check_url(s: &str) -> Result<(), String> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') && !s.contains(char::is_whitespace) => {
            Ok(())
        }
        _ => Err(format!("`{s}` is not an http(s) URL")),
    }
}

fn check_sha256(s: &str) -> Result<(), String> {
    if s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not a sha256 (64 hexadecimal digits); `guestprep prefetch URL` prints it"
        ))
    }
}
