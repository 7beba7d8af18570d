//! `kubernetes:cgroup`: the unified cgroup hierarchy (v2) is mounted at /sys/fs/cgroup with the
//! controllers the kubelet and the runtime use. Live only (a mounted file system is not in an
//! image). The lists are `DefaultSysSpec.CgroupsV2` and `CgroupsV2Optional` of
//! k8s.io/system-validators v1.12.1: `cpu`, `cpuset`, `memory`, `pids` must be in
//! `cgroup.controllers` (v2's `devices` and `freezer` are not controllers there: eBPF programs and
//! `cgroup.freeze`, which the kernel has with `CONFIG_CGROUP_BPF`, checked by
//! `kubernetes:kernel-config`); `hugetlb` and `io` are warnings, as kubeadm reports them.

use anyhow::Result;
use serde_json::json;

use crate::engine::{Change, Observation, Resource, System};
use crate::report::Status;

/// Present only on a cgroup v2 (unified) mount.
pub const CONTROLLERS: &str = "/sys/fs/cgroup/cgroup.controllers";

const REQUIRED: &[&str] = &["cpu", "cpuset", "memory", "pids"];
const OPTIONAL: &[&str] = &["hugetlb", "io"];

pub struct Cgroup;

impl Resource for Cgroup {
    fn id(&self) -> String {
        "kubernetes:cgroup".to_string()
    }

    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let expected = json!({"version": 2, "controllers": REQUIRED});
        if let Some(why) = sys.offline_reason() {
            return Ok(Observation::new(
                Status::Skipped,
                expected,
                json!(null),
                format!("cgroups are checked on the running system only: {why}"),
            ));
        }
        let Some(text) = sys.read_string(CONTROLLERS)? else {
            let msg = format!(
                "no {CONTROLLERS}: /sys/fs/cgroup is not a cgroup v2 (unified) mount; the kubelet deprecates cgroup v1 since Kubernetes 1.31 (and its `failCgroupV1` refuses it): boot with systemd's unified hierarchy (remove `systemd.unified_cgroup_hierarchy=0` and `SYSTEMD_CGROUP_ENABLE_LEGACY_FORCE=1` from the kernel command line)"
            );
            let mut obs = Observation::new(Status::Drift, expected, json!({"version": 1}), msg);
            obs.remediation =
                Some("boot with the unified cgroup hierarchy (systemd's default since 247)".into());
            return Ok(obs);
        };
        let have: Vec<&str> = text.split_whitespace().collect();
        let lacks: Vec<&str> = REQUIRED
            .iter()
            .copied()
            .filter(|c| !have.contains(c))
            .collect();
        let warn: Vec<&str> = OPTIONAL
            .iter()
            .copied()
            .filter(|c| !have.contains(c))
            .collect();
        let actual = json!({"version": 2, "controllers": have});
        let warning = if warn.is_empty() {
            String::new()
        } else {
            format!(
                "warning: no {} controller (optional for kubeadm)",
                warn.join(", ")
            )
        };
        let lacks: Vec<String> = lacks.iter().map(|c| c.to_string()).collect();
        let remediation = format!(
            "boot a kernel with these controllers (kubernetes:kernel-config names its options), without `cgroup_disable={}` on its command line",
            lacks.join(",")
        );
        Ok(super::required_and_optional(
            expected,
            actual,
            &lacks,
            warning,
            |l| {
                format!(
                    "{CONTROLLERS} lacks {l}: the kubelet cannot enforce pod limits without them (kubeadm: \"missing required cgroups\")"
                )
            },
            remediation,
        ))
    }

    fn plan(&self, _sys: &System, _obs: &Observation) -> Vec<Change> {
        Vec::new()
    }
}
