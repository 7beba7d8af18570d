//! `kubernetes:kernel-config:KVER`: the kernel the node boots has what kubeadm's system
//! validation requires of its build configuration (`/boot/config-KVER`, read the same offline as
//! live, shared with `kernel:config` through `resources::kernel_config::read`). Which kernel: the
//! one `[kernel] version` pins; else, live, the running one; else every installed kernel.
//!
//! The lists are `DefaultSysSpec.KernelSpec` of k8s.io/system-validators v1.12.1
//! (`validators/types_unix.go`, as kubeadm 1.34 vendors it): `Required`, and `RequiredCgroupsV2`
//! on a cgroup v2 machine (`RequiredCgroupsV1` on a v1 one); `Optional` options are warnings, as
//! kubeadm reports them. An option counts when it or an alias is `=y` or `=m`.

use anyhow::Result;
use serde_json::{Map, json};

use crate::engine::{Change, Observation, Resource, System};
use crate::packages::kconfig;
use crate::policy::Policy;
use crate::report::Status;
use crate::root::Root;

/// (name without `CONFIG_`, aliases, what it is for)
type Opt = (&'static str, &'static [&'static str], &'static str);

const REQUIRED: &[Opt] = &[
    ("NAMESPACES", &[], "namespaces"),
    ("NET_NS", &[], "network namespaces"),
    ("PID_NS", &[], "PID namespaces"),
    ("IPC_NS", &[], "IPC namespaces"),
    ("UTS_NS", &[], "UTS namespaces"),
    ("CPUSETS", &[], "the cpuset controller"),
    ("MEMCG", &[], "the memory controller"),
    ("INET", &[], "TCP/IP networking"),
    ("EXT4_FS", &[], "ext4"),
    ("PROC_FS", &[], "/proc"),
    (
        "NETFILTER_XT_TARGET_REDIRECT",
        &["IP_NF_TARGET_REDIRECT"],
        "kube-proxy's REDIRECT target",
    ),
    (
        "NETFILTER_XT_MATCH_COMMENT",
        &[],
        "kube-proxy's comment match",
    ),
    ("FAIR_GROUP_SCHED", &[], "CPU shares"),
];

const REQUIRED_V2: &[Opt] = &[
    ("CGROUPS", &[], "cgroups"),
    (
        "CGROUP_BPF",
        &[],
        "eBPF programs on cgroups, the v2 device controller",
    ),
    ("CGROUP_PIDS", &[], "the pids controller"),
    ("CGROUP_SCHED", &[], "the cpu controller"),
];

const REQUIRED_V1: &[Opt] = &[
    ("CGROUPS", &[], "cgroups"),
    ("CGROUP_CPUACCT", &[], "the cpuacct controller"),
    ("CGROUP_DEVICE", &[], "the devices controller"),
    ("CGROUP_FREEZER", &[], "the freezer controller"),
    ("CGROUP_PIDS", &[], "the pids controller"),
    ("CGROUP_SCHED", &[], "the cpu controller"),
];

const OPTIONAL: &[Opt] = &[
    (
        "OVERLAY_FS",
        &["OVERLAYFS_FS"],
        "overlayfs, containerd's default snapshotter",
    ),
    ("AUFS_FS", &[], "aufs"),
    ("BLK_DEV_DM", &[], "devicemapper"),
    ("CFS_BANDWIDTH", &[], "CPU limits (quota)"),
    ("SECCOMP", &[], "seccomp"),
    (
        "SECCOMP_FILTER",
        &[],
        "seccomp filters (RuntimeDefault profiles)",
    ),
    ("CGROUP_HUGETLB", &[], "the hugetlb controller"),
];

/// The kernels to check.
pub fn resources(policy: &Policy, root: &Root) -> Vec<Box<dyn Resource>> {
    let kernels = match &policy.kernel {
        Some(k) => vec![k.version.clone()],
        None if root.is_live() => Vec::new(), // the running kernel, found at check time
        None => crate::report::installed_kernels(root),
    };
    if kernels.is_empty() {
        return vec![Box::new(KubeKernel { kernel: None })];
    }
    kernels
        .into_iter()
        .map(|k| Box::new(KubeKernel { kernel: Some(k) }) as Box<dyn Resource>)
        .collect()
}

/// One kernel's configuration against kubeadm's lists; `None`: the running kernel.
pub struct KubeKernel {
    pub kernel: Option<String>,
}

fn has(cfg: &kconfig::KernelConfig, o: &Opt) -> (String, String, bool) {
    for n in std::iter::once(&o.0).chain(o.1.iter()) {
        let s = cfg.get(&format!("CONFIG_{n}"));
        if s.satisfies() {
            return (format!("CONFIG_{n}"), s.describe(), true);
        }
    }
    let name = format!("CONFIG_{}", o.0);
    let s = cfg.get(&name).describe();
    (name, s, false)
}

impl Resource for KubeKernel {
    fn id(&self) -> String {
        format!(
            "kubernetes:kernel-config:{}",
            self.kernel.as_deref().unwrap_or("running")
        )
    }

    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let kver = match &self.kernel {
            Some(k) => k.clone(),
            None => match super::super::kernel::running_kernel(sys)? {
                Some(k) => k,
                None => {
                    return Ok(Observation::new(
                        Status::Skipped,
                        json!(null),
                        json!(null),
                        "no kernel installed to check",
                    ));
                }
            },
        };
        let v2 = !sys.is_live() || sys.exists(super::cgroup::CONTROLLERS);
        let expected = json!({
            "config": kconfig::boot_path(&kver),
            "cgroup": if v2 { "v2" } else { "v1" },
            "source": "k8s.io/system-validators v1.12.1 DefaultSysSpec",
        });
        let Some((path, cfg)) = super::super::kernel_config::read(sys, &kver)? else {
            return Ok(Observation::new(
                Status::Error,
                expected,
                json!({"config": null}),
                format!(
                    "{} is missing: cannot tell whether kernel {kver} has what kubeadm's system validation requires; Debian's linux-image-{kver} ships it (reinstall it)",
                    kconfig::boot_path(&kver)
                ),
            ));
        };
        if cfg.is_empty() {
            return Ok(Observation::new(
                Status::Error,
                expected,
                json!({"config": path}),
                format!("{path} sets no CONFIG_ option: it is not a kernel configuration"),
            ));
        }
        let cgroups = if v2 { REQUIRED_V2 } else { REQUIRED_V1 };
        let (mut options, mut missing, mut warn) = (Map::new(), Vec::new(), Vec::new());
        for (o, required) in REQUIRED
            .iter()
            .chain(cgroups)
            .map(|o| (o, true))
            .chain(OPTIONAL.iter().map(|o| (o, false)))
        {
            let (name, setting, ok) = has(&cfg, o);
            options.insert(name.clone(), json!(setting));
            if !ok {
                let d = format!("{name} ({setting}; {})", o.2);
                if required {
                    missing.push(d)
                } else {
                    warn.push(d)
                }
            }
        }
        let actual = json!({"config": path, "options": options});
        let warning = if warn.is_empty() {
            String::new()
        } else {
            format!("warning: kubeadm warns of {} (optional)", warn.join(", "))
        };
        Ok(super::required_and_optional(
            expected,
            actual,
            &missing,
            warning,
            |l| {
                format!(
                    "kernel {kver} lacks {l} per {path}: kubeadm's system validation fails (\"unexpected kernel config\") and the kubelet cannot run pods there"
                )
            },
            format!(
                "boot a kernel built with them (Debian's generic and cloud flavours both are): pin it with `[kernel] version = \"KVER\"` and `remove_others = true`; {kver} cannot be changed"
            ),
        ))
    }

    fn plan(&self, _sys: &System, _obs: &Observation) -> Vec<Change> {
        Vec::new() // another kernel is the fix: [kernel] installs, boots and keeps it
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(config: &str) -> Observation {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("boot")).unwrap();
        std::fs::write(d.path().join("boot/config-6.12.1-amd64"), config).unwrap();
        let sys = System::new(Root::offline(d.path()).unwrap());
        let r = KubeKernel {
            kernel: Some("6.12.1-amd64".into()),
        };
        r.check(&sys).unwrap()
    }

    #[test]
    fn every_required_option_or_its_alias() {
        let mut all: String = REQUIRED
            .iter()
            .chain(REQUIRED_V2)
            .map(|o| format!("CONFIG_{}=y\n", o.0))
            .collect();
        let o = check(&all);
        assert_eq!(o.status, Status::Compliant, "{}", o.message);
        assert!(
            o.message
                .contains("warning: kubeadm warns of CONFIG_OVERLAY_FS"),
            "{}",
            o.message
        );
        all = all.replace(
            "CONFIG_NETFILTER_XT_TARGET_REDIRECT=y",
            "CONFIG_IP_NF_TARGET_REDIRECT=m",
        );
        assert_eq!(check(&all).status, Status::Compliant);
        let o = check(&all.replace("CONFIG_MEMCG=y", "# CONFIG_MEMCG is not set"));
        assert_eq!(o.status, Status::Drift);
        assert!(
            o.message
                .contains("CONFIG_MEMCG (is not set; the memory controller)"),
            "{}",
            o.message
        );
        assert!(o.remediation.is_some());
    }
}
