//! `dkms:MODULE/VERSION:KVER`: a DKMS module proven built and installed for one kernel; a failed
//! build recorded with its first compiler errors and a fingerprint of its inputs.

#[allow(unused_imports)]
use super::*;
use crate::boot::kmod::ModuleName;

/// Proof that DKMS built a module for one kernel: the module is installed in DKMS's tree and
/// its `.ko` files are under `/usr/lib/modules/KVER/updates/`.
///
/// A build that failed is recorded (the first compiler errors from DKMS's make.log, and a
/// fingerprint of what the build depended on: dkms.conf, the kernel, its headers); while the
/// fingerprint is the same, the item is `error` with those errors and what to do, in `verify` and
/// `apply` alike, and the build is not redone (`apply --retry-failed` does).
pub struct DkmsBuilt {
    pub dkms: DkmsSpec,
    pub kernel: String,
    /// The package that ships the module's source (its file checksums are part of the build's
    /// inputs: a patched .deb of the same version is a different build).
    pub package: String,
}

/// A failed DKMS build, as recorded under [`crate::paths::DKMS_FAILED_DIR`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct FailedBuild {
    fingerprint: String,
    at: String,
    errors: Vec<String>,
    log: String,
}

impl DkmsBuilt {
    fn record_path(&self) -> String {
        format!(
            "{}/{}_{}_{}.json",
            crate::paths::DKMS_FAILED_DIR,
            self.dkms.module,
            self.dkms.version,
            self.kernel
        )
    }

    fn make_log(&self) -> String {
        format!(
            "/var/lib/dkms/{}/{}/build/make.log",
            self.dkms.module, self.dkms.version
        )
    }

    /// What a build depends on: the module's dkms.conf, the source's files (dpkg's checksums of
    /// the package that ships it), the kernel, its headers (their Makefile and config change with
    /// a new headers package).
    fn fingerprint(&self, sys: &System, conf: &str) -> Result<String> {
        let mut h = sha2::Sha256::new();
        use sha2::Digest;
        h.update(conf.as_bytes());
        h.update(self.kernel.as_bytes());
        for f in [
            format!("/var/lib/dpkg/info/{}.md5sums", self.package),
            format!("/var/lib/dpkg/info/{}:amd64.md5sums", self.package),
        ] {
            if let Some(b) = sys.read(&f)? {
                h.update(&b);
            }
        }
        for f in [
            "build/Makefile",
            "build/.config",
            "build/include/generated/utsrelease.h",
        ] {
            let p = format!("/usr/lib/modules/{}/{f}", self.kernel);
            if let Some(t) = sys.modified(&p)? {
                h.update(format!("{p} {t:?}").as_bytes());
            }
        }
        Ok(hex::encode(h.finalize()))
    }

    fn failed_before(&self, sys: &System, conf: &str) -> Result<Option<FailedBuild>> {
        let Some(text) = sys.read(&self.record_path())? else {
            return Ok(None);
        };
        let Ok(rec) = serde_json::from_slice::<FailedBuild>(&text) else {
            return Ok(None);
        };
        Ok((rec.fingerprint == self.fingerprint(sys, conf)?).then_some(rec))
    }

    fn failure_message(&self, errors: &[String], log: &str, before: Option<&str>) -> String {
        let (m, v, k) = (&self.dkms.module, &self.dkms.version, &self.kernel);
        let mut s = match before {
            Some(at) => format!("the DKMS build of {m} {v} for kernel {k} failed at {at}"),
            None => format!("the DKMS build of {m} {v} for kernel {k} failed"),
        };
        if errors.is_empty() {
            // Not a compile failure (an install conflict, say): the command's own words follow.
            return s;
        }
        s.push_str(&format!(": {} (all of it in {log})", errors.join(" | ")));
        s.push_str(
            ". This release does not build on this kernel: choose a release that does (`guestprep dkms \
             try FILE.deb|URL` builds one in a throwaway tree and says, per kernel), a kernel the \
             release builds on, or serve a patched build of the .deb with its own sha256",
        );
        if before.is_some() {
            s.push_str(
                "; not built again while the package, the kernel and its headers are unchanged: \
                 `guestprep apply --retry-failed` tries anyway",
            );
        }
        s
    }
}

pub(crate) fn find_ko(
    sys: &System,
    dir: &str,
    name: &str,
    depth: usize,
    out: &mut Vec<String>,
) -> Result<()> {
    for e in sys.list_dir(dir)? {
        let p = format!("{dir}/{e}");
        let stem = e.split(".ko").next().unwrap_or("");
        if e.contains(".ko") && ModuleName::new(stem) == ModuleName::new(name) {
            out.push(p);
        } else if depth < 4 && !e.contains('.') {
            find_ko(sys, &p, name, depth + 1, out)?;
        }
    }
    Ok(())
}

impl Resource for DkmsBuilt {
    fn id(&self) -> String {
        format!(
            "dkms:{}/{}/{}",
            self.dkms.module, self.dkms.version, self.kernel
        )
    }

    fn kind(&self) -> &'static str {
        "packages"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let (m, v, k) = (&self.dkms.module, &self.dkms.version, &self.kernel);
        let expected = json!({"module": m, "version": v, "kernel": k, "installed": true});
        let src = format!("/usr/src/{m}-{v}/dkms.conf");
        let Some(conf_text) = sys.read_string(&src)? else {
            let msg = with_offline_note(
                sys,
                format!(
                    "{src} not present: the DKMS source is not installed (deb:{} installs it)",
                    self.package
                ),
            );
            return Ok(Observation::new(
                Status::Drift,
                expected,
                json!({"source": false}),
                msg,
            ));
        };
        let conf = dkmsconf::parse(&conf_text);
        if !dkmsconf::kernel_allowed(&conf, k).map_err(anyhow::Error::msg)? {
            return Ok(Observation::new(
                Status::Skipped,
                expected,
                json!({"source": true}),
                format!("dkms.conf BUILD_EXCLUSIVE_KERNEL excludes kernel {k}"),
            ));
        }
        // A kernel built without what the module needs: not built for it (kernel:config:KVER says why).
        if !self.dkms.require_config.is_empty()
            && let Some((path, cfg)) = crate::resources::kernel_config::read(sys, k)?
        {
            let needs = Need::of(m, &self.dkms.require_config);
            let lacks = cfg.lacks(&needs);
            if !lacks.is_empty() {
                return Ok(Observation::new(
                    Status::Skipped,
                    expected,
                    json!({"source": true, "config": path}),
                    format!(
                        "kernel {k} lacks {} (per {path}): not built for it (kernel:config:{k})",
                        kconfig::describe_lacks(&lacks)
                    ),
                ));
            }
        }
        // DKMS's tree: /var/lib/dkms/M/V/K/ARCH/module/*.ko*
        let base = format!("/var/lib/dkms/{m}/{v}/{k}");
        let arch = sys
            .list_dir(&base)?
            .into_iter()
            .find(|a| !a.starts_with('.') && a != "log");
        let built: Vec<String> = match &arch {
            Some(a) => sys
                .list_dir(&format!("{base}/{a}/module"))?
                .into_iter()
                .filter(|f| f.contains(".ko"))
                .collect(),
            None => Vec::new(),
        };
        let names = if conf.modules.is_empty() {
            vec![m.clone()]
        } else {
            conf.modules.clone()
        };
        let mut installed = Vec::new();
        let mut missing = Vec::new();
        for n in &names {
            let mut found = Vec::new();
            find_ko(
                sys,
                &format!("/usr/lib/modules/{k}/updates"),
                n,
                0,
                &mut found,
            )?;
            if found.is_empty() {
                missing.push(n.clone());
            }
            installed.extend(found);
        }
        let mut actual = json!({"source": true, "builtInTree": built, "installedKo": installed});
        // Both: DKMS built this module/version for this kernel (its tree), and the .ko is where
        // modprobe finds it. A .ko of the same name from another package does not count.
        if missing.is_empty() && !built.is_empty() {
            return Ok(Observation::new(Status::Compliant, expected, actual, ""));
        }
        if built.is_empty()
            && !sys.retry_failed
            && let Some(rec) = self.failed_before(sys, &conf_text)?
        {
            actual["failedBuild"] = json!({"at": rec.at, "errors": rec.errors, "log": rec.log});
            return Ok(Observation::new(
                Status::Error,
                expected,
                actual,
                self.failure_message(&rec.errors, &rec.log, Some(&rec.at)),
            ));
        }
        let msg = if built.is_empty() {
            format!("not built for {k}")
        } else {
            format!(
                "built but {} not installed under /usr/lib/modules/{k}/updates: an in-tree module may win; upstream's fix is to \
                 list it in /usr/share/dkms/modules_to_force_install/",
                missing.join(", ")
            )
        };
        Ok(Observation::new(
            Status::Drift,
            expected,
            actual,
            with_offline_note(sys, msg),
        ))
    }

    fn plan(&self, sys: &System, obs: &Observation) -> Vec<Change> {
        if obs.status != Status::Drift
            || sys.cannot_change().is_some()
            || obs.actual["source"] == json!(false)
        {
            return Vec::new();
        }
        vec![Change::Run {
            argv: vec![
                "dkms".into(),
                "install".into(),
                format!("{}/{}", self.dkms.module, self.dkms.version),
                "-k".into(),
                self.kernel.clone(),
            ],
        }]
    }

    /// Runs the build; a failure is recorded with its first errors (and a success clears an old
    /// record), so the next run neither redoes it blindly nor says less.
    fn apply(&self, sys: &System, plan: &[Change]) -> Result<Vec<String>> {
        let record = self.record_path();
        let mut details = Vec::new();
        for c in plan {
            match c.execute(sys) {
                Ok(d) => details.extend(d),
                Err(e) => {
                    let log = self.make_log();
                    let errors = sys
                        .read_string(&log)?
                        .map(|t| crate::packages::makelog::first_errors(&t, 5))
                        .unwrap_or_default();
                    let conf = sys
                        .read_string(&format!(
                            "/usr/src/{}-{}/dkms.conf",
                            self.dkms.module, self.dkms.version
                        ))?
                        .unwrap_or_default();
                    let rec = FailedBuild {
                        fingerprint: self.fingerprint(sys, &conf)?,
                        at: crate::clock::rfc3339(std::time::SystemTime::now()),
                        errors: errors.clone(),
                        log: log.clone(),
                    };
                    // Only a build that failed to compile is recorded: nothing but a change of
                    // its inputs makes it build.
                    if errors.is_empty() {
                        return Err(e.context(self.failure_message(&errors, &log, None)));
                    }
                    // Known only once the build failed, so not in the plan; a `Change` all the
                    // same (atomic, through the engine).
                    let write = Change::Write {
                        path: record.clone(),
                        content: serde_json::to_vec_pretty(&rec)?,
                        mode: Some(0o644),
                        old: None,
                    };
                    if let Err(w) = write.execute(sys) {
                        tracing::warn!("could not record the failed build: {w:#}");
                    }
                    return Err(e.context(self.failure_message(&errors, &log, None)));
                }
            }
        }
        if let Some(old) = sys.read(&record)? {
            details.extend(
                Change::Remove {
                    path: record.clone(),
                    old,
                }
                .execute(sys)?,
            );
        }
        Ok(details)
    }
}
