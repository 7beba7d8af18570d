//! `[kubernetes]`: the node readiness checks a template opts into, their keys, validation and
//! typed value (the items are `resources/kubernetes/`).
//!
//! ```toml
//! [kubernetes]
//! ipv6 = false                                        # also net.ipv6.conf.default.forwarding
//! cri_socket = "/run/containerd/containerd.sock"      # the CRI the kubelet talks to
//! containerd_config = "/etc/containerd/config.toml"   # where runc's cgroup driver is set
//! kubelet_config = "/var/lib/kubelet/config.yaml"     # the kubelet's cgroupDriver, when present
//! ```

use serde::Serialize;

use super::tree::Table;
use super::validate::{V, check_abs_path, join};

/// `[kubernetes]`.
#[derive(Clone, Debug, Serialize)]
pub struct Kubernetes {
    /// Dual-stack or IPv6 nodes: IPv6 forwarding is checked too.
    pub ipv6: bool,
    pub cri_socket: String,
    pub containerd_config: String,
    pub kubelet_config: String,
}

impl Default for Kubernetes {
    fn default() -> Self {
        Kubernetes {
            ipv6: false,
            cri_socket: "/run/containerd/containerd.sock".into(),
            containerd_config: "/etc/containerd/config.toml".into(),
            kubelet_config: "/var/lib/kubelet/config.yaml".into(),
        }
    }
}

impl V {
    pub(super) fn kubernetes(&mut self, t: &Table) -> Kubernetes {
        let p = "kubernetes";
        let paths = ["cri_socket", "containerd_config", "kubelet_config"];
        let mut keys = vec!["ipv6"];
        keys.extend(paths);
        self.known_keys(t, p, &keys);
        let mut k = Kubernetes {
            ipv6: self.bool(t, p, "ipv6").unwrap_or(false),
            ..Kubernetes::default()
        };
        for key in paths {
            let Some(v) = self.string(t, p, key) else {
                continue;
            };
            if let Err(m) = check_abs_path(&v) {
                let origin = t.get(key).expect("present").node.origin.clone();
                self.err(&origin, &join(p, key), m);
                continue;
            }
            match key {
                "cri_socket" => k.cri_socket = v,
                "containerd_config" => k.containerd_config = v,
                _ => k.kubelet_config = v,
            }
        }
        k
    }
}

#[cfg(test)]
mod tests {
    use crate::policy::load_texts;

    fn load(text: &str) -> Result<crate::policy::Policy, String> {
        load_texts(&[("k.toml".into(), text.to_string())])
            .map(|l| l.policy)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn keys_defaults_and_errors() {
        let p = load("[kubernetes]\n").unwrap();
        let k = p.kubernetes.unwrap();
        assert!(!k.ipv6);
        assert_eq!(k.cri_socket, "/run/containerd/containerd.sock");
        let p = load(
            "[kubernetes]\nipv6 = true\ncri_socket = \"/run/k3s/containerd/containerd.sock\"\n",
        )
        .unwrap();
        let k = p.kubernetes.unwrap();
        assert!(k.ipv6);
        assert_eq!(k.cri_socket, "/run/k3s/containerd/containerd.sock");
        let e = load("[kubernetes]\nipv7 = true\ncri_socket = \"run/x.sock\"\n").unwrap_err();
        assert!(
            e.contains("k.toml:2:1: `kubernetes.ipv7`: unknown key `ipv7` (did you mean `ipv6`?)"),
            "{e}"
        );
        assert!(
            e.contains(
                "k.toml:3:14: `kubernetes.cri_socket`: `run/x.sock` must be an absolute path"
            ),
            "{e}"
        );
    }
}
