//! `deb:NAME`: a release `.deb` downloaded, verified by sha256, inspected before it is installed
//! (preflight: a `BUILD_EXCLUSIVE_KERNEL` no installed kernel matches), installed and its receipt
//! kept.

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

/// Refuses a `.deb` whose DKMS module no installed kernel may build.
pub fn preflight(info: &deb::DebInfo, spec: &DebSpec, kernels: &[String]) -> Result<()> {
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
    Ok(())
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
                preflight(&info, &self.spec, &sys.kernels_with_headers())
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
