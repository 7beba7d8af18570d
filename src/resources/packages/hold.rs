//! `hold:NAME`: dpkg's selection `hold` (apt-mark), released while a held driver fails to build.

#[allow(unused_imports)]
use super::*;

pub struct AptHold {
    pub name: String,
    /// A `[[packages.deb]]`'s DKMS module and the kernels it is built for: when its build failed
    /// for every one of them, the package is left installed but not held (a hold would keep a
    /// driver that works nowhere from being replaced by an upgrade that might).
    pub unless_failed: Option<(DkmsSpec, Vec<String>)>,
}

/// True when a DKMS module's source is installed, built for none of `kernels`, and its build
/// failed (a record under [`crate::paths::DKMS_FAILED_DIR`]) for at least one.
fn built_nowhere(sys: &System, k: &DkmsSpec, kernels: &[String]) -> Result<bool> {
    if kernels.is_empty() || !sys.exists(&format!("/usr/src/{}-{}/dkms.conf", k.module, k.version))
    {
        return Ok(false);
    }
    let mut failed = false;
    for kernel in kernels {
        let base = format!("/var/lib/dkms/{}/{}/{kernel}", k.module, k.version);
        for arch in sys.list_dir(&base)? {
            if sys
                .list_dir(&format!("{base}/{arch}/module"))?
                .iter()
                .any(|f| f.contains(".ko"))
            {
                return Ok(false);
            }
        }
        failed |= sys.exists(&format!(
            "{}/{}_{}_{kernel}.json",
            crate::paths::DKMS_FAILED_DIR,
            k.module,
            k.version
        ));
    }
    Ok(failed)
}

impl Resource for AptHold {
    fn id(&self) -> String {
        format!("package-hold:{}", self.name)
    }

    fn kind(&self) -> &'static str {
        "packages"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let db = super::dpkg_status(sys)?;
        let held = db.get(&self.name).is_some_and(|s| s.held());
        let expected = json!({"held": true});
        let actual =
            json!({"held": held, "installed": db.get(&self.name).is_some_and(|s| s.installed())});
        if let Some((k, kernels)) = &self.unless_failed
            && db.get(&self.name).is_some_and(|s| s.installed())
            && built_nowhere(sys, k, kernels)?
        {
            let version = db
                .get(&self.name)
                .and_then(|s| s.version.clone())
                .unwrap_or_default();
            let what = format!(
                "{} {version} is left installed, not held: its DKMS module {}/{} built for no installed kernel (the dkms: items say why)",
                self.name, k.module, k.version
            );
            let expected = json!({"held": false});
            if !held {
                return Ok(Observation::new(Status::Skipped, expected, actual, what));
            }
            let mut obs = Observation::new(
                Status::Drift,
                expected,
                actual,
                with_offline_note(sys, format!("{what}; apt-mark unhold")),
            );
            obs.data = json!({"unhold": self.name});
            return Ok(obs);
        }
        if held {
            return Ok(Observation::new(Status::Compliant, expected, actual, ""));
        }
        // Holding keeps an installed version; a package that is not installed (a .deb whose
        // install failed or was refused, a kernel meta package absent here) has none to keep, and
        // its install item already says why.
        if !db.get(&self.name).is_some_and(|s| s.installed()) {
            return Ok(Observation::new(
                Status::Skipped,
                expected,
                actual,
                format!("{} is not installed: nothing to hold", self.name),
            ));
        }
        let msg = with_offline_note(sys, "not held".to_string());
        let mut obs = Observation::new(Status::Drift, expected, actual, msg);
        obs.data = json!({"hold": self.name});
        Ok(obs)
    }

    fn plan(&self, sys: &System, obs: &Observation) -> Vec<Change> {
        if sys.cannot_change().is_some() {
            return Vec::new();
        }
        if let Some(name) = obs.data["unhold"].as_str() {
            return vec![Change::Run {
                argv: vec!["apt-mark".into(), "unhold".into(), "--".into(), name.into()],
            }];
        }
        // One package per item: a held package's hold never depends on another's item.
        vec![Change::Run {
            argv: vec![
                "apt-mark".into(),
                "hold".into(),
                "--".into(),
                self.name.clone(),
            ],
        }]
    }
}
