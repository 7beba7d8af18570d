//! `[kubernetes]`: whether the template can become a Kubernetes node: what kubeadm's preflight and
//! system validation check, and what the kubelet needs to run a pod, each an item naming what
//! failed and the fix. Offline where the facts are files (the kernel's configuration, containerd's
//! and the kubelet's configs, programs on PATH, kubelet identity), live where they are not (cgroup
//! v2's controllers, the CRI's answer, /proc values).
//!
//! Sources (cited where each list is): kubeadm's preflight, `cmd/kubeadm/app/preflight/checks.go`
//! and `checks_linux.go` of Kubernetes 1.32–1.34; its system validation,
//! `k8s.io/system-validators` v1.12.1 (`validators/types_unix.go`, `DefaultSysSpec`).
//!
//! `ip_forward`, bridge netfilter and swap are the `[sysctl]` and `[swap]` checks, run again under
//! this section's ids (`kubernetes:sysctl:NAME`, `kubernetes:swap`) so the readiness verdict is
//! whole on its own; they change nothing themselves: the `sysctl:` and `swap:` items do.

mod cgroup;
mod cri;
mod identity;
mod kernel_config;

use anyhow::Result;
use serde_json::{Value, json};

use crate::engine::{Change, Observation, Resource, System};
use crate::policy::{Kubernetes, Policy, Swap};
use crate::report::Status;
use crate::root::{Node, Root};

pub use identity::IDENTITY;

/// The items, in order: kernel, cgroups, runtime, programs, /proc values and swap, identity.
pub fn resources(k: &Kubernetes, policy: &Policy, root: &Root) -> Vec<Box<dyn Resource>> {
    let mut out: Vec<Box<dyn Resource>> = Vec::new();
    out.extend(kernel_config::resources(policy, root));
    out.push(Box::new(cgroup::Cgroup));
    out.push(Box::new(cri::Cri { k: k.clone() }));
    for (name, required, package) in PROGRAMS {
        out.push(Box::new(Program {
            name,
            required: *required,
            package,
        }));
    }
    // kubeadm's FileContentCheck{bridgenf, ipv4Forward} (and ipv6DefaultForwarding with an IPv6
    // address family): each must read `1`.
    let mut sysctls = vec!["net.bridge.bridge-nf-call-iptables", "net.ipv4.ip_forward"];
    if k.ipv6 {
        sysctls.push("net.ipv6.conf.default.forwarding");
        sysctls.push("net.ipv6.conf.all.forwarding");
    }
    for name in sysctls {
        let configured = policy.sysctl.get(name).map(String::as_str) == Some("1");
        let inner = super::sysctl::SysctlKey {
            name: name.to_string(),
            value: "1".to_string(),
        };
        let fix = (!configured).then(|| {
            format!("set `\"{name}\" = 1` in [sysctl]: apply writes it to sysctl.d and /proc/sys")
        });
        out.push(Box::new(Also {
            id: format!("kubernetes:sysctl:{name}"),
            inner: vec![Box::new(inner)],
            fix,
        }));
    }
    let swap_off = policy.swap.as_ref().is_some_and(|s| !s.enabled);
    out.push(Box::new(Also {
        id: "kubernetes:swap".to_string(),
        inner: super::swap::resources(&Swap { enabled: false }),
        fix: (!swap_off).then(|| {
            "set `[swap] enabled = false`: the kubelet refuses to start with swap on (failSwapOn, its default), and kubeadm's preflight checks it".to_string()
        }),
    }));
    out.push(Box::new(identity::Identity));
    out
}

/// The programs kubeadm's preflight looks for on PATH (`addExecChecks` in `checks_linux.go`):
/// name, whether kubeadm fails without it (else it warns), the Debian package that has it.
/// kubeadm 1.32 and later require `conntrack` only for clusters before 1.32; it stays required
/// here, since kube-proxy's iptables mode of those versions, K3s and Kubespray's nodes use it.
pub const PROGRAMS: &[(&str, bool, &str)] = &[
    ("conntrack", true, "conntrack"),
    ("ip", true, "iproute2"),
    ("iptables", true, "iptables"),
    ("mount", true, "mount"),
    ("nsenter", true, "util-linux"),
    ("ebtables", false, "ebtables"),
    ("ethtool", false, "ethtool"),
    ("socat", false, "socat"),
    ("tc", false, "iproute2"),
    ("touch", false, "coreutils"),
];

/// kubelet's and kubeadm's PATH on Debian and Ubuntu (systemd's default for system services).
const PATH: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// `kubernetes:program:NAME`: an executable of that name on PATH, in the root.
pub struct Program {
    pub name: &'static str,
    pub required: bool,
    pub package: &'static str,
}

impl Resource for Program {
    fn id(&self) -> String {
        format!("kubernetes:program:{}", self.name)
    }

    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let n = self.name;
        let expected = json!({"onPath": true, "required": self.required});
        for dir in PATH {
            let p = format!("{dir}/{n}");
            if let Node::File { mode, .. } = sys.stat(&p)?
                && mode & 0o111 != 0
            {
                return Ok(Observation::new(
                    Status::Compliant,
                    expected,
                    json!({"path": p}),
                    "",
                ));
            }
        }
        let pkg = self.package;
        let fix = format!("install {pkg} (`[packages] install = [\"{pkg}\"]`)");
        let actual = json!({"path": null, "searched": PATH});
        if self.required {
            let msg = format!(
                "`{n}` is not on PATH ({}): kubeadm's preflight fails without it; {fix}",
                PATH.join(":")
            );
            let mut obs = Observation::new(Status::Drift, expected, actual, msg);
            obs.remediation = Some(fix);
            Ok(obs)
        } else {
            let msg = format!(
                "warning: `{n}` is not on PATH: kubeadm's preflight warns (optional); {fix}"
            );
            Ok(Observation::new(Status::Compliant, expected, actual, msg))
        }
    }

    fn plan(&self, _sys: &System, _obs: &Observation) -> Vec<Change> {
        Vec::new() // a package is the fix: [packages] installs it
    }

    fn fixed_by(&self) -> Vec<String> {
        vec![format!("package:{}", self.package)]
    }
}

/// Another section's checks reported again under a `kubernetes:` id: the worst of their
/// verdicts, their messages joined. It changes nothing (the checks' own items do); `fix` is the
/// policy change when the policy does not ask for it at all.
pub struct Also {
    pub id: String,
    pub inner: Vec<Box<dyn Resource>>,
    pub fix: Option<String>,
}

/// The verdict of a check of what kubeadm requires and what it only warns of: compliant (with the
/// warning as its message) when nothing required lacks, else drift saying what lacks (`lacks`
/// gives the message), the warning appended, and the remediation.
fn required_and_optional(
    expected: Value,
    actual: Value,
    missing: &[String],
    warning: String,
    lacks: impl FnOnce(&str) -> String,
    remediation: String,
) -> Observation {
    if missing.is_empty() {
        return Observation::new(Status::Compliant, expected, actual, warning);
    }
    let mut msg = lacks(&missing.join(", "));
    if !warning.is_empty() {
        msg.push_str("; ");
        msg.push_str(&warning);
    }
    let mut obs = Observation::new(Status::Drift, expected, actual, msg);
    obs.remediation = Some(remediation);
    obs
}

fn rank(s: Status) -> u8 {
    match s {
        Status::Drift => 5,
        Status::Error => 4,
        Status::PendingReboot => 3,
        Status::Compliant | Status::Waived => 2,
        Status::Skipped => 1,
    }
}

impl Resource for Also {
    fn id(&self) -> String {
        self.id.clone()
    }

    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let mut status = Status::Skipped;
        let (mut expected, mut actual) = (serde_json::Map::new(), serde_json::Map::new());
        let mut msgs = Vec::new();
        for r in &self.inner {
            let o = r.check(sys)?;
            if rank(o.status) > rank(status) {
                status = o.status;
            }
            expected.insert(r.id(), o.expected);
            actual.insert(r.id(), o.actual);
            if !o.message.is_empty() {
                msgs.push(format!("{}: {}", r.id(), o.message));
            }
        }
        let mut obs = Observation::new(
            status,
            Value::Object(expected),
            Value::Object(actual),
            msgs.join("; "),
        );
        if status == Status::Drift {
            obs.remediation = Some(match &self.fix {
                Some(f) => f.clone(),
                None => format!("through {}: apply fixes them", self.fixed_by().join(", ")),
            });
        }
        Ok(obs)
    }

    fn plan(&self, _sys: &System, _obs: &Observation) -> Vec<Change> {
        Vec::new()
    }

    fn fixed_by(&self) -> Vec<String> {
        self.inner.iter().map(|r| r.id()).collect()
    }

    fn managed_paths(&self) -> Vec<String> {
        Vec::new()
    }
}
