//! `kernel:config:KVER`: the kernel can carry the policy's drivers. A DKMS module compiles against
//! the kernel's build configuration; a kernel built without an option the driver needs (Debian's
//! cloud flavour has no `CONFIG_DRM`, so no i915 of any release) cannot build or load it, and no
//! amount of rebuilding changes that. One item per installed kernel and for `[kernel] version`,
//! when a `[[packages.deb]]` DKMS module lists `require_config`; it reads `/boot/config-KVER`
//! (the same offline as live) and changes nothing: the fix is another kernel, which `[kernel]`
//! installs, boots and keeps.

use anyhow::Result;
use serde_json::{Map, Value, json};

use crate::engine::{Change, Observation, Resource, System};
use crate::packages::kconfig::{self, KernelConfig, Need};
use crate::policy::{Kernel, Policy};
use crate::report::Status;
use crate::root::Root;

/// What every DKMS module of the policy needs of a kernel, in the policy's order.
pub fn needs(policy: &Policy) -> Vec<Need> {
    let mut out: Vec<Need> = Vec::new();
    for d in policy.packages.iter().flat_map(|p| &p.deb) {
        if let Some(k) = &d.dkms {
            for n in Need::of(&k.module, &k.require_config) {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
    }
    out
}

/// The items: none unless a DKMS module needs something of the kernel.
pub fn resources(policy: &Policy, root: &Root) -> Vec<Box<dyn Resource>> {
    let needs = needs(policy);
    if needs.is_empty() {
        return Vec::new();
    }
    let mut kernels = crate::report::installed_kernels(root);
    if let Some(k) = &policy.kernel
        && !kernels.contains(&k.version)
    {
        kernels.push(k.version.clone());
    }
    kernels
        .into_iter()
        .map(|kernel| {
            Box::new(KernelFit {
                kernel,
                needs: needs.clone(),
                pinned: policy.kernel.clone(),
            }) as Box<dyn Resource>
        })
        .collect()
}

/// A kernel's configuration as DKMS builds against it: `/boot/config-KVER`, or its headers'
/// `.config` when only the headers are there. None when neither is.
pub fn read(sys: &System, kver: &str) -> Result<Option<(String, KernelConfig)>> {
    for path in [kconfig::boot_path(kver), kconfig::headers_path(kver)] {
        if let Some(text) = sys.read_string(&path)? {
            return Ok(Some((path, kconfig::parse(&text))));
        }
    }
    Ok(None)
}

/// `kernel:config:KVER`.
pub struct KernelFit {
    pub kernel: String,
    pub needs: Vec<Need>,
    pub pinned: Option<Kernel>,
}

impl KernelFit {
    fn is_pinned(&self) -> bool {
        self.pinned
            .as_ref()
            .is_some_and(|p| p.version == self.kernel)
    }

    /// A kernel that lacks options: who fixes it, and the status until then.
    fn unfit(&self, sys: &System, lacks: &str) -> Result<Observation> {
        let k = &self.kernel;
        let mut msg = format!(
            "kernel {k} lacks {lacks} per {}: its DKMS modules cannot build or load there",
            kconfig::boot_path(k)
        );
        let mut status = Status::Drift;
        let mut remediation = None;
        match &self.pinned {
            Some(p) if p.version != *k && p.remove_others => {
                let running = super::kernel::running_kernel(sys)?;
                if running.as_deref() == Some(k.as_str()) {
                    status = Status::PendingReboot;
                    msg.push_str(&format!(
                        "; [kernel] pins {} instead, and kernel:others purges this running kernel once {} runs",
                        p.version, p.version
                    ));
                } else {
                    msg.push_str(&format!(
                        "; [kernel] pins {} instead, and kernel:others purges this one",
                        p.version
                    ));
                }
            }
            Some(p) if p.version != *k => {
                msg.push_str(&format!(
                    "; [kernel] pins {} instead: set `remove_others = true` there to purge this one",
                    p.version
                ));
                remediation = Some(format!(
                    "set `remove_others = true` in [kernel]: apply purges kernel {k}"
                ));
            }
            Some(_) => {
                msg.push_str("; it is the kernel [kernel] version pins. ");
                msg.push_str(&kconfig::fix_hint(k));
                remediation = Some(kconfig::fix_hint(k));
            }
            None => {
                msg.push_str(". ");
                msg.push_str(&kconfig::fix_hint(k));
                remediation = Some(kconfig::fix_hint(k));
            }
        }
        let mut obs = Observation::new(status, self.expected(), Value::Null, msg);
        obs.remediation = remediation;
        Ok(obs)
    }

    fn expected(&self) -> Value {
        let mut m = Map::new();
        for n in &self.needs {
            m.insert(n.option.clone(), json!("y or m"));
        }
        json!({"config": kconfig::boot_path(&self.kernel), "options": m})
    }
}

impl Resource for KernelFit {
    fn id(&self) -> String {
        format!("kernel:config:{}", self.kernel)
    }

    fn kind(&self) -> &'static str {
        "kernel"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let k = &self.kernel;
        let path = kconfig::boot_path(k);
        let Some(text) = sys.read_string(&path)? else {
            let image = format!("/boot/vmlinuz-{k}");
            let headers = format!("/usr/lib/modules/{k}/build");
            let (status, msg) = if sys.exists(&image) {
                (
                    Status::Error,
                    format!(
                        "{path} is missing beside {image}: cannot tell whether kernel {k} has {}; linux-image-{k} ships it (reinstall it)",
                        self.options().join(", ")
                    ),
                )
            } else if self.is_pinned() {
                (
                    Status::Drift,
                    format!(
                        "kernel {k} is not installed (package:linux-image-{k} installs it); its {path} is checked once it is"
                    ),
                )
            } else if sys.exists(&headers) {
                (
                    Status::Skipped,
                    format!(
                        "kernel {k} is not installed, only its headers ({headers}): DKMS builds for a kernel nothing boots; pin it with [kernel] version to install its image"
                    ),
                )
            } else {
                (
                    Status::Skipped,
                    format!("kernel {k} is not installed (no {image})"),
                )
            };
            return Ok(Observation::new(
                status,
                self.expected(),
                json!({"config": null}),
                msg,
            ));
        };
        let cfg = kconfig::parse(&text);
        if cfg.is_empty() {
            return Ok(Observation::new(
                Status::Error,
                self.expected(),
                json!({"config": path}),
                format!("{path} sets no CONFIG_ option: it is not a kernel configuration"),
            ));
        }
        let mut options = Map::new();
        for n in &self.needs {
            options.insert(n.option.clone(), json!(cfg.get(&n.option).describe()));
        }
        let lacks = cfg.lacks(&self.needs);
        let missing: Vec<&str> = lacks.iter().map(|(n, _)| n.option.as_str()).collect();
        let actual = json!({"config": path, "options": options, "missing": missing});
        if lacks.is_empty() {
            return Ok(Observation::new(
                Status::Compliant,
                self.expected(),
                actual,
                "",
            ));
        }
        let mut obs = self.unfit(sys, &kconfig::describe_lacks(&lacks))?;
        obs.actual = actual;
        Ok(obs)
    }

    fn plan(&self, _sys: &System, _obs: &Observation) -> Vec<Change> {
        Vec::new() // another kernel is the fix: [kernel]'s items install, boot and keep it
    }

    fn fixed_by(&self) -> Vec<String> {
        if self.is_pinned() {
            vec![format!("package:linux-image-{}", self.kernel)]
        } else {
            vec!["kernel:others".to_string()]
        }
    }
}

impl KernelFit {
    fn options(&self) -> Vec<String> {
        let mut o: Vec<String> = Vec::new();
        for n in &self.needs {
            if !o.contains(&n.option) {
                o.push(n.option.clone());
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packages::kconfig::Need;

    fn root_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (p, c) in files {
            let full = d.path().join(p.trim_start_matches('/'));
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, c).unwrap();
        }
        d
    }

    fn fit(kernel: &str, pinned: Option<(&str, bool)>) -> KernelFit {
        KernelFit {
            kernel: kernel.into(),
            needs: Need::of(
                "i915-sriov-dkms",
                &["CONFIG_DRM".into(), "CONFIG_PCI_IOV".into()],
            ),
            pinned: pinned.map(|(v, r)| Kernel {
                version: v.into(),
                remove_others: r,
            }),
        }
    }

    fn check(d: &tempfile::TempDir, r: &KernelFit) -> Observation {
        let sys = System::new(Root::offline(d.path()).unwrap());
        r.check(&sys).unwrap()
    }

    const CLOUD: &str = "6.12.117+deb13-cloud-amd64";
    const GENERIC: &str = "6.12.117+deb13-amd64";

    #[test]
    fn a_kernel_with_the_options_fits() {
        let d = root_with(&[(
            "/boot/config-6.12.117+deb13-amd64",
            "CONFIG_DRM=m\nCONFIG_PCI_IOV=y\n",
        )]);
        let o = check(&d, &fit(GENERIC, None));
        assert_eq!(o.status, Status::Compliant, "{}", o.message);
        assert_eq!(o.actual["options"]["CONFIG_DRM"], "=m");
    }

    #[test]
    fn the_cloud_kernel_is_drift_naming_the_options_and_the_fix() {
        let d = root_with(&[(
            "/boot/config-6.12.117+deb13-cloud-amd64",
            "# CONFIG_PCI_IOV is not set\nCONFIG_PCI=y\n",
        )]);
        let o = check(&d, &fit(CLOUD, None));
        assert_eq!(o.status, Status::Drift);
        assert!(
            o.message
                .contains("CONFIG_DRM (absent; needed by i915-sriov-dkms)"),
            "{}",
            o.message
        );
        assert!(o.message.contains("CONFIG_PCI_IOV (is not set"));
        assert!(o.message.contains("version = \"6.12.117+deb13-amd64\""));
        assert!(o.remediation.unwrap().contains("linux-image-amd64"));
        assert_eq!(o.actual["missing"], json!(["CONFIG_DRM", "CONFIG_PCI_IOV"]));
        // Pinned elsewhere: kernel:others is the fix (offline: no running kernel).
        let o = check(&d, &fit(CLOUD, Some((GENERIC, true))));
        assert_eq!(o.status, Status::Drift);
        assert!(o.message.contains("kernel:others purges this one"));
        assert!(o.remediation.is_none());
        let o = check(&d, &fit(CLOUD, Some((GENERIC, false))));
        assert!(o.remediation.unwrap().contains("remove_others = true"));
    }

    #[test]
    fn no_config_is_an_error_or_not_installed() {
        let d = root_with(&[("/boot/vmlinuz-6.12.117+deb13-amd64", "x")]);
        let o = check(&d, &fit(GENERIC, None));
        assert_eq!(o.status, Status::Error);
        assert!(
            o.message
                .contains("/boot/config-6.12.117+deb13-amd64 is missing")
        );
        let d = root_with(&[("/usr/lib/modules/6.12.117+deb13-amd64/build/Makefile", "x")]);
        let o = check(&d, &fit(GENERIC, None));
        assert_eq!(o.status, Status::Skipped);
        assert!(o.message.contains("only its headers"), "{}", o.message);
        let o = check(&d, &fit(GENERIC, Some((GENERIC, true))));
        assert_eq!(o.status, Status::Drift);
        assert!(
            o.message
                .contains("package:linux-image-6.12.117+deb13-amd64 installs it")
        );
        let d = root_with(&[("/boot/config-6.12.117+deb13-amd64", "garbage\n")]);
        assert_eq!(check(&d, &fit(GENERIC, None)).status, Status::Error);
    }
}
