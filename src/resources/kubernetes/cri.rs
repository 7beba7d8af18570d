//! `kubernetes:cri`: the container runtime the kubelet talks to answers on its CRI socket, and
//! runc's cgroup driver is `systemd`, agreeing with the kubelet's.
//!
//! Offline, the driver is read from containerd's `config.toml` (`SystemdCgroup` of runc's options
//! under the CRI plugin: `io.containerd.grpc.v1.cri` in a version 2 config, containerd 1.x;
//! `io.containerd.cri.v1.runtime` in version 3, containerd 2.x). Live, the CRI itself is asked
//! (`Status`, verbose, through `crate::cri`): `RuntimeReady` must be true, and its resolved
//! configuration says which driver it runs with; a file that says otherwise is one not yet read
//! (containerd restarts read it). The kubelet's `cgroupDriver` is read from its config file when
//! there is one (after `kubeadm join`; a template has none): unset there means `cgroupfs`, the
//! KubeletConfiguration default. Two drivers on one node is what kubeadm's docs warn of: the
//! kubelet and the runtime each manage the pods' cgroups, and pods are killed under pressure.

use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};

use crate::engine::{Change, Observation, Resource, System};
use crate::policy::Kubernetes;
use crate::report::Status;

/// How long the CRI has to answer (containerd answers in milliseconds).
const TIMEOUT: Duration = Duration::from_secs(5);

pub struct Cri {
    pub k: Kubernetes,
}

/// runc's `SystemdCgroup` in containerd's config: Some(value), or None when the config does not
/// set it (runc's default, cgroupfs), with the key path it was read from.
pub fn systemd_cgroup(text: &str) -> Result<(Option<bool>, String), String> {
    let t: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| e.message().to_string())?;
    let plugins = t.get("plugins").and_then(|p| p.as_table());
    for plugin in ["io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri"] {
        let Some(cri) = plugins.and_then(|p| p.get(plugin)) else {
            continue;
        };
        let at = format!("plugins.\"{plugin}\".containerd.runtimes.runc.options.SystemdCgroup");
        let v = cri
            .get("containerd")
            .and_then(|c| c.get("runtimes"))
            .and_then(|r| r.get("runc"))
            .and_then(|r| r.get("options"))
            .and_then(|o| o.get("SystemdCgroup"));
        return match v {
            None => Ok((None, at)),
            Some(toml::Value::Boolean(b)) => Ok((Some(*b), at)),
            Some(other) => Err(format!("{at} is a {}, not a boolean", other.type_str())),
        };
    }
    Ok((None, "plugins (no CRI plugin section)".to_string()))
}

/// The kubelet's `cgroupDriver` (a top-level key of its YAML config), or `cgroupfs`, its default.
pub fn kubelet_driver(yaml: &str) -> String {
    yaml.lines()
        .filter(|l| !l.starts_with([' ', '\t', '#']))
        .find_map(|l| l.strip_prefix("cgroupDriver:"))
        .map(|v| {
            v.split('#')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches(['"', '\''])
                .to_string()
        })
        .unwrap_or_else(|| "cgroupfs".to_string())
}

fn driver(systemd: Option<bool>) -> &'static str {
    if systemd == Some(true) {
        "systemd"
    } else {
        "cgroupfs"
    }
}

impl Resource for Cri {
    fn id(&self) -> String {
        "kubernetes:cri".to_string()
    }

    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn managed_paths(&self) -> Vec<String> {
        Vec::new()
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let k = &self.k;
        let expected =
            json!({"socket": k.cri_socket, "runtimeReady": true, "cgroupDriver": "systemd"});
        let mut problems: Vec<String> = Vec::new();
        let mut fixes: Vec<String> = Vec::new();
        let mut actual = serde_json::Map::new();
        // The file.
        let cfg = &k.containerd_config;
        let mut file_driver = None;
        match sys.read_string(cfg)? {
            None => {
                problems.push(format!(
                    "{cfg} is missing: containerd runs runc with its default cgroup driver, cgroupfs"
                ));
                fixes.push(format!(
                    "write {cfg} with `SystemdCgroup = true` under runc's options ([[files]])"
                ));
            }
            Some(text) => match systemd_cgroup(&text) {
                Err(e) => {
                    problems.push(format!("{cfg} is not TOML containerd can read: {e}"));
                    fixes.push(format!("fix {cfg}"));
                }
                Ok((v, at)) => {
                    actual.insert(
                        "configured".into(),
                        json!({"file": cfg, "key": at, "SystemdCgroup": v}),
                    );
                    file_driver = Some(driver(v));
                    if v != Some(true) {
                        let said = v.map_or("unset (cgroupfs)".to_string(), |b| b.to_string());
                        problems.push(format!("{cfg}: {at} is {said}: runc would use the cgroupfs driver while systemd manages the cgroup tree"));
                        fixes.push(format!("set `SystemdCgroup = true` at {at} in {cfg} ([[files]]), then restart containerd"));
                    }
                }
            },
        }
        // The CRI, live.
        let mut running = None;
        if let Some(why) = sys.offline_reason() {
            actual.insert("cri".into(), json!(format!("not asked: {why}")));
        } else {
            let sock = sys.host_path(&k.cri_socket)?;
            match crate::cri::status(&sock, TIMEOUT) {
                Err(e) => {
                    problems.push(format!("{e:#}: the kubelet cannot run pods"));
                    fixes.push(format!("start the container runtime (systemctl start containerd) so that it listens on {}", k.cri_socket));
                }
                Ok(st) => {
                    let conds: Vec<Value> = st
                        .conditions
                        .iter()
                        .map(|c| json!({"type": c.kind, "status": c.status, "reason": c.reason, "message": c.message}))
                        .collect();
                    actual.insert("conditions".into(), json!(conds));
                    match st.condition("RuntimeReady") {
                        Some(c) if c.status => {}
                        Some(c) => {
                            problems.push(format!(
                                "the CRI says RuntimeReady is false ({}: {})",
                                c.reason, c.message
                            ));
                            fixes.push("see the runtime's log (journalctl -u containerd)".into());
                        }
                        None => {
                            problems.push("the CRI's Status has no RuntimeReady condition".into())
                        }
                    }
                    let conf: Option<Value> = st
                        .info
                        .get("config")
                        .and_then(|c| serde_json::from_str(c).ok());
                    // runc as the CRI resolved it (absent from another runtime's answer).
                    let runc = conf
                        .as_ref()
                        .and_then(|c| c.pointer("/containerd/runtimes/runc"));
                    if let Some(r) = runc {
                        let v = r.pointer("/options/SystemdCgroup").and_then(Value::as_bool);
                        running = Some(driver(v));
                        actual.insert("runningCgroupDriver".into(), json!(driver(v)));
                    }
                    if running == Some("cgroupfs") && file_driver == Some("systemd") {
                        problems.push("containerd runs runc with cgroupfs: it has not read its config since `SystemdCgroup = true` was written".into());
                        fixes.push("restart containerd".into());
                    }
                }
            }
        }
        // The kubelet, when it has a config.
        let runtime = running.or(file_driver);
        if let Some(y) = sys.read_string(&k.kubelet_config)? {
            let kd = kubelet_driver(&y);
            actual.insert(
                "kubeletCgroupDriver".into(),
                json!({"file": k.kubelet_config, "cgroupDriver": kd}),
            );
            if kd != "systemd" {
                problems.push(format!(
                    "{}: the kubelet's cgroupDriver is {kd}",
                    k.kubelet_config
                ));
                fixes.push(format!(
                    "set `cgroupDriver: systemd` in {} (kubeadm's KubeletConfiguration)",
                    k.kubelet_config
                ));
            } else if runtime.is_some_and(|r| r != kd) {
                problems.push(format!(
                    "the kubelet uses {kd} and the runtime {}: two cgroup managers",
                    runtime.unwrap_or("")
                ));
            }
        }
        let mut obs = Observation::judged(expected, Value::Object(actual), &problems, "");
        if obs.status == Status::Drift {
            obs.remediation = Some(fixes.join("; "));
        }
        Ok(obs)
    }

    fn plan(&self, _sys: &System, _obs: &Observation) -> Vec<Change> {
        Vec::new() // containerd's config is a [[files]] entry; its restart follows that file
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drivers_in_configs() {
        let v2 = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n  SystemdCgroup = true\n";
        assert_eq!(systemd_cgroup(v2).unwrap().0, Some(true));
        let v3 = "version = 3\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]\nSystemdCgroup = false\n";
        assert_eq!(systemd_cgroup(v3).unwrap().0, Some(false));
        assert_eq!(systemd_cgroup("version = 2\n").unwrap().0, None);
        assert!(systemd_cgroup("[x").is_err());
        assert_eq!(
            kubelet_driver("kind: KubeletConfiguration\ncgroupDriver: systemd\n"),
            "systemd"
        );
        assert_eq!(
            kubelet_driver("cgroupDriver: \"cgroupfs\" # old\n"),
            "cgroupfs"
        );
        assert_eq!(
            kubelet_driver("nested:\n  cgroupDriver: systemd\n"),
            "cgroupfs"
        );
    }
}
