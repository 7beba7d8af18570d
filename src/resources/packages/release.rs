//! `deb:NAME`: a release `.deb` downloaded, verified by sha256, inspected before it is installed
//! (preflight: a `BUILD_EXCLUSIVE_KERNEL` no installed kernel matches, or no kernel with the
//! build options its `require_config` lists), installed and its receipt kept.

#[allow(unused_imports)]
use super::*;

pub struct DebPackage {
    pub spec: DebSpec,
}

impl DebPackage {
    fn cache_path(&self) -> String {
        format!("{CACHE_DIR}/{}_{}.deb", self.spec.name, self.spec.version)
    }

    /// Where guestprep records which .deb it installed (its sha256): a site's patched build of
    /// the same version is a different package, and only this tells them apart.
    fn receipt_path(&self) -> String {
        format!("{}/{}.json", crate::paths::DEB_RECEIPTS_DIR, self.spec.name)
    }

    /// The receipt apply writes once the .deb is installed.
    fn receipt(&self) -> Vec<u8> {
        let receipt = json!({
            "version": self.spec.version,
            "sha256": self.spec.sha256,
            "url": self.spec.url,
            "at": crate::clock::rfc3339(std::time::SystemTime::now()),
        });
        serde_json::to_vec_pretty(&receipt).expect("a receipt serializes")
    }

    /// The sha256 of the .deb guestprep installed at this version, if it did.
    fn installed_sha(&self, sys: &System, version: &str) -> Result<Option<String>> {
        let Some(text) = sys.read_string(&self.receipt_path())? else {
            return Ok(None);
        };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        Ok((v["version"] == version)
            .then(|| v["sha256"].as_str().map(str::to_string))
            .flatten())
    }
}

/// A kernel's build configuration, when it can be read: its path and contents
/// ([`crate::resources::kernel_config::read`]).
pub type ConfigOf<'a> = &'a dyn Fn(&str) -> Result<Option<(String, KernelConfig)>>;

/// Refuses a `.deb` whose DKMS module no installed kernel may build: none its
/// `BUILD_EXCLUSIVE_KERNEL` matches, or none of those built with the options `require_config`
/// lists (a kernel whose configuration cannot be read is left to DKMS's build to judge).
pub fn preflight(
    info: &deb::DebInfo,
    spec: &DebSpec,
    kernels: &[String],
    config_of: ConfigOf,
) -> Result<()> {
    if info.package.as_deref() != Some(spec.name.as_str())
        || info.version.as_deref() != Some(spec.version.as_str())
    {
        bail!(
            "the downloaded file is {} {}, not {} {} as the policy says",
            info.package.as_deref().unwrap_or("?"),
            info.version.as_deref().unwrap_or("?"),
            spec.name,
            spec.version
        );
    }
    let Some((conf_path, conf)) = &info.dkms else {
        return Ok(());
    };
    if kernels.is_empty() {
        bail!(
            "{} {} is a DKMS package but no installed kernel has headers (install linux-headers-*)",
            spec.name,
            spec.version
        );
    }
    let mut allowed = Vec::new();
    for k in kernels {
        if dkmsconf::kernel_allowed(conf, k).map_err(anyhow::Error::msg)? {
            allowed.push(k.clone());
        }
    }
    if allowed.is_empty() {
        bail!(
            "refusing to install {} {}: its {conf_path} says BUILD_EXCLUSIVE_KERNEL=\"{}\", which none of the installed kernels \
             with headers ({}) matches, so DKMS would silently skip the build. Pin a release that supports these kernels, \
             or install a matching kernel first",
            spec.name,
            spec.version,
            conf.build_exclusive_kernel.as_deref().unwrap_or(""),
            kernels.join(", ")
        );
    }
    let needs = spec
        .dkms
        .as_ref()
        .map(|d| Need::of(&d.module, &d.require_config))
        .unwrap_or_default();
    if needs.is_empty() {
        return Ok(());
    }
    let mut unfit = Vec::new();
    for k in &allowed {
        match config_of(k)? {
            Some((path, cfg)) => {
                let lacks = cfg.lacks(&needs);
                if lacks.is_empty() {
                    return Ok(());
                }
                unfit.push((
                    k,
                    format!("{k} lacks {} (per {path})", kconfig::describe_lacks(&lacks)),
                ));
            }
            None => return Ok(()),
        }
    }
    bail!(
        "refusing to install {} {}: no installed kernel with headers can carry its DKMS module, so it would not \
         be built: {}. {}",
        spec.name,
        spec.version,
        unfit
            .iter()
            .map(|(_, m)| m.as_str())
            .collect::<Vec<_>>()
            .join("; "),
        kconfig::fix_hint(unfit.first().map_or("", |(k, _)| k.as_str()))
    );
}

impl Resource for DebPackage {
    fn id(&self) -> String {
        format!("deb:{}", self.spec.name)
    }

    fn kind(&self) -> &'static str {
        "packages"
    }

    fn managed_paths(&self) -> Vec<String> {
        vec![self.cache_path()]
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let db = super::dpkg_status(sys)?;
        let st = db.get(&self.spec.name);
        let installed = st.filter(|s| s.installed()).and_then(|s| s.version.clone());
        let held = st.is_some_and(|s| s.held());
        let expected =
            json!({"version": self.spec.version, "sha256": self.spec.sha256, "url": self.spec.url});
        let from = match &installed {
            Some(v) => self.installed_sha(sys, v)?,
            None => None,
        };
        let actual = json!({"version": installed, "held": held, "sha256": from});
        let (status, mut msg) = match &installed {
            Some(v) if *v == self.spec.version => match &from {
                Some(sha) if *sha != self.spec.sha256 => (
                    Status::Drift,
                    format!(
                        "{v} installed from another .deb (sha256 {}…), the policy pins {}…: reinstalled from it",
                        &sha[..sha.len().min(12)],
                        &self.spec.sha256[..self.spec.sha256.len().min(12)]
                    ),
                ),
                _ => (Status::Compliant, String::new()),
            },
            Some(v) => (
                Status::Drift,
                format!("version {v} installed, want {}", self.spec.version),
            ),
            None => (Status::Drift, "not installed".to_string()),
        };
        if status == Status::Drift {
            msg = with_offline_note(sys, msg);
        }
        Ok(Observation::new(status, expected, actual, msg))
    }

    fn plan(&self, sys: &System, obs: &Observation) -> Vec<Change> {
        if obs.status != Status::Drift || sys.cannot_change().is_some() {
            return Vec::new();
        }
        let path = self.cache_path();
        vec![
            Change::Download {
                url: self.spec.url.clone(),
                sha256: self.spec.sha256.clone(),
                path: path.clone(),
                retries: self.spec.retries,
                base_delay: Duration::from_secs_f64(self.spec.retry_delay),
            },
            // --reinstall: the same version from another .deb (a site's patched build) too.
            Change::Run {
                argv: apt_get(&["install", "--allow-downgrades", "--reinstall", &path]),
            },
            // Which build was installed: a site's patched .deb of the same version differs only
            // by its sha256.
            Change::Write {
                path: self.receipt_path(),
                content: self.receipt(),
                mode: Some(0o644),
                old: sys.read(&self.receipt_path()).ok().flatten(),
            },
        ]
    }

    fn apply(&self, sys: &System, plan: &[Change]) -> Result<Vec<String>> {
        let mut details = Vec::new();
        for c in plan {
            details.extend(c.execute(sys)?);
            if matches!(c, Change::Download { .. }) {
                // Judge the package before installing it.
                let info = deb::read(&sys.host_path(&self.cache_path())?)?;
                let config_of = |k: &str| crate::resources::kernel_config::read(sys, k);
                preflight(&info, &self.spec, &sys.kernels_with_headers(), &config_of)
                    .context("preflight of the downloaded package")?;
                details.push(format!(
                    "{} {} passed preflight",
                    self.spec.name, self.spec.version
                ));
            }
        }
        Ok(details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(require: &[&str]) -> DebSpec {
        DebSpec {
            name: "i915-sriov-dkms".into(),
            version: "2025.07.22".into(),
            url: "https://example.org/x.deb".into(),
            sha256: "0".repeat(64),
            hold: true,
            dkms: Some(DkmsSpec {
                module: "i915-sriov-dkms".into(),
                version: "2025.07.22".into(),
                require_config: require.iter().map(|s| s.to_string()).collect(),
            }),
            retries: 0,
            retry_delay: 1.0,
        }
    }

    fn info() -> deb::DebInfo {
        deb::DebInfo {
            package: Some("i915-sriov-dkms".into()),
            version: Some("2025.07.22".into()),
            architecture: Some("amd64".into()),
            dkms: Some((
                "usr/src/i915-sriov-dkms-2025.07.22/dkms.conf".into(),
                dkmsconf::parse("PACKAGE_NAME=i915-sriov-dkms\n"),
            )),
        }
    }

    const CLOUD: &str = "6.12.117+deb13-cloud-amd64";
    const GENERIC: &str = "6.12.117+deb13-amd64";

    fn configs(k: &str) -> Result<Option<(String, KernelConfig)>> {
        let text = match k {
            CLOUD => "# CONFIG_DRM is not set\nCONFIG_PCI_IOV=y\n",
            GENERIC => "CONFIG_DRM=m\nCONFIG_PCI_IOV=y\n",
            _ => return Ok(None),
        };
        Ok(Some((format!("/boot/config-{k}"), kconfig::parse(text))))
    }

    #[test]
    fn a_kernel_without_the_options_is_refused_before_installing() {
        let s = spec(&["CONFIG_DRM", "CONFIG_PCI_IOV"]);
        let e = preflight(&info(), &s, &[CLOUD.into()], &configs).unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.starts_with("refusing to install i915-sriov-dkms 2025.07.22"),
            "{e}"
        );
        assert!(
            e.contains("6.12.117+deb13-cloud-amd64 lacks CONFIG_DRM (is not set; needed by i915-sriov-dkms) (per /boot/config-6.12.117+deb13-cloud-amd64)"),
            "{e}"
        );
        assert!(e.contains("version = \"6.12.117+deb13-amd64\""), "{e}");
        // One kernel that can carry it is enough; one whose config is unknown is left to DKMS.
        preflight(&info(), &s, &[CLOUD.into(), GENERIC.into()], &configs).unwrap();
        preflight(&info(), &s, &["6.1.0-9-amd64".into()], &configs).unwrap();
        // No require_config: no check.
        preflight(&info(), &spec(&[]), &[CLOUD.into()], &configs).unwrap();
    }
}
