//! `[agent]` and `[seal]`: how the daemon keeps the report fresh, and what `guestprep seal`
//! removes by default: keys, validation and typed values (the daemon is `agent/`, sealing `seal/`).

use serde::Serialize;

use super::tree::{Table, Value};
use super::validate::{V, check_abs_path, format_timespan, join, parse_timespan};

/// `[seal]`: what `guestprep seal` removes by default on this template.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Seal {
    /// Operation list, as `--operations` (`defaults`, `-logfiles`, `+user-ssh-keys`).
    pub operations: Vec<String>,
    /// Users whose ~/.ssh/authorized_keys the user-ssh-keys operation removes.
    pub user_ssh_keys: Vec<String>,
    /// The build's temporary keys (their comment, or `SHA256:` fingerprint as `ssh-keygen -l`
    /// prints it) that the build-ssh-keys operation takes out of every authorized_keys.
    pub build_ssh_keys: Vec<String>,
    /// Write `uninitialized` to /etc/machine-id (systemd's first-boot marker) instead of emptying it.
    pub uninitialized_machine_id: bool,
}

/// `[agent]`: how `guestprep daemon` keeps the report fresh.
#[derive(Clone, Debug, Serialize)]
pub struct Agent {
    /// Re-verify at least this often, for what has no change event (values in /proc).
    #[serde(serialize_with = "ser_secs")]
    pub interval: std::time::Duration,
    /// Quiet time after a change event before re-verifying (changes come in bursts).
    #[serde(serialize_with = "ser_secs")]
    pub debounce: std::time::Duration,
    /// Re-apply drift that file writes alone repair; default report-only.
    pub enforce: bool,
    /// Also write a node-exporter textfile-collector file here (`*.prom`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prometheus_textfile: Option<String>,
    /// A verification round that takes longer is published as it stands: the items it finished,
    /// the one it is stuck on and those it never reached as `error`; never the last report.
    #[serde(serialize_with = "ser_secs")]
    pub verify_timeout: std::time::Duration,
    /// Publish the report as Node Feature Discovery labels (`agent/nfd.rs`). Both keys are left
    /// out of the policy's JSON at their defaults, so a policy without them keeps its digest.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub nfd: bool,
    /// NFD's local-source feature file the labels are written to.
    #[serde(skip_serializing_if = "is_default_nfd_path")]
    pub nfd_path: String,
}

/// Where NFD's local source reads feature files (nfd-worker's default `features.d`).
pub const NFD_PATH: &str = "/etc/kubernetes/node-feature-discovery/features.d/guestprep";

impl Default for Agent {
    fn default() -> Self {
        Agent {
            interval: std::time::Duration::from_secs(15 * 60),
            debounce: std::time::Duration::from_millis(200),
            enforce: false,
            prometheus_textfile: None,
            verify_timeout: std::time::Duration::from_secs(30),
            nfd: false,
            nfd_path: NFD_PATH.to_string(),
        }
    }
}

fn is_default_nfd_path(p: &str) -> bool {
    p == NFD_PATH
}

fn ser_secs<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl V {
    pub(super) fn seal(&mut self, t: &Table) -> Seal {
        let p = "seal";
        self.known_keys(
            t,
            p,
            &[
                "operations",
                "user_ssh_keys",
                "build_ssh_keys",
                "machine_id",
            ],
        );
        let operations = self.list(t, p, "operations", super::seal_ops::check_spec);
        let user_ssh_keys = self.list(t, p, "user_ssh_keys", check_user_name);
        let build_ssh_keys = self.list(t, p, "build_ssh_keys", check_key_name);
        let mut uninitialized_machine_id = false;
        if let Some(m) = self.string(t, p, "machine_id") {
            match m.as_str() {
                "empty" => {}
                "uninitialized" => uninitialized_machine_id = true,
                other => {
                    let origin = t.get("machine_id").expect("present").node.origin.clone();
                    self.err(
                        &origin,
                        "seal.machine_id",
                        format!("`{other}`: expected \"empty\" or \"uninitialized\""),
                    );
                }
            }
        }
        Seal {
            operations,
            user_ssh_keys,
            build_ssh_keys,
            uninitialized_machine_id,
        }
    }

    pub(super) fn agent(&mut self, t: &Table) -> Agent {
        let p = "agent";
        self.known_keys(
            t,
            p,
            &[
                "interval",
                "debounce",
                "enforce",
                "prometheus_textfile",
                "verify_timeout",
                "nfd",
                "nfd_path",
            ],
        );
        let mut a = Agent::default();
        let min = std::time::Duration::from_secs(1);
        let max = std::time::Duration::from_secs(7 * 86_400);
        if let Some(d) = self.timespan(t, p, "interval", min, max) {
            a.interval = d;
        }
        let (min, max) = (
            std::time::Duration::ZERO,
            std::time::Duration::from_secs(10),
        );
        if let Some(d) = self.timespan(t, p, "debounce", min, max) {
            a.debounce = d;
        }
        let (min, max) = (
            std::time::Duration::from_millis(10),
            std::time::Duration::from_secs(3600),
        );
        if let Some(d) = self.timespan(t, p, "verify_timeout", min, max) {
            a.verify_timeout = d;
        }
        a.enforce = self.bool(t, p, "enforce").unwrap_or(false);
        a.nfd = self.bool(t, p, "nfd").unwrap_or(false);
        if let Some(path) = self.string(t, p, "nfd_path") {
            match check_abs_path(&path) {
                Ok(()) => a.nfd_path = path,
                Err(m) => {
                    let origin = t.get("nfd_path").expect("present").node.origin.clone();
                    self.err(&origin, "agent.nfd_path", m);
                }
            }
        }
        if let Some(path) = self.string(t, p, "prometheus_textfile") {
            let check = check_abs_path(&path).and_then(|()| {
                if path.ends_with(".prom") {
                    Ok(())
                } else {
                    Err(format!(
                        "`{path}`: node-exporter's textfile collector reads only files ending in `.prom`"
                    ))
                }
            });
            match check {
                Ok(()) => a.prometheus_textfile = Some(path),
                Err(m) => {
                    let origin = t
                        .get("prometheus_textfile")
                        .expect("present")
                        .node
                        .origin
                        .clone();
                    self.err(&origin, "agent.prometheus_textfile", m);
                }
            }
        }
        a
    }

    /// A duration: a systemd-style time span string (`"15min"`, `"1h 30min"`, `"500ms"`) or an
    /// integer number of seconds, within `min..=max`.
    pub(super) fn timespan(
        &mut self,
        t: &Table,
        path: &str,
        key: &str,
        min: std::time::Duration,
        max: std::time::Duration,
    ) -> Option<std::time::Duration> {
        let e = t.get(key)?;
        let kp = join(path, key);
        let parsed = match &e.node.value {
            Value::String(s) => parse_timespan(s),
            Value::Integer(i) if *i >= 0 => Ok(std::time::Duration::from_secs(*i as u64)),
            other => Err(format!(
                "expected a time span like \"15min\" or a number of seconds, found {}",
                other.type_name()
            )),
        };
        match parsed {
            Ok(d) if d >= min && d <= max => Some(d),
            Ok(_) => {
                let msg = format!(
                    "must be from {} to {}",
                    format_timespan(min),
                    format_timespan(max)
                );
                self.err(&e.node.origin, &kp, msg);
                None
            }
            Err(m) => {
                self.err(&e.node.origin, &kp, m);
                None
            }
        }
    }
}

/// A key's comment (`packer-build@ci`) or fingerprint (`SHA256:` and 43 base64 characters).
fn check_key_name(s: &str) -> Result<(), String> {
    if let Some(fp) = s.strip_prefix("SHA256:") {
        if fp.len() == 43
            && fp
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
        {
            return Ok(());
        }
        return Err(format!(
            "`{s}` is not a SHA256 fingerprint as `ssh-keygen -l` prints it (SHA256: and 43 base64 characters)"
        ));
    }
    if !s.is_empty() && s.len() <= 256 && !s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not a key comment (one word, as the end of an authorized_keys line) or a SHA256: fingerprint"
        ))
    }
}

/// A user name as /etc/passwd has them.
fn check_user_name(s: &str) -> Result<(), String> {
    if !s.is_empty()
        && s.len() <= 32
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-$".contains(c))
    {
        Ok(())
    } else {
        Err(format!("`{s}` is not a user name"))
    }
}
