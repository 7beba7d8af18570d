//! `guestprep dkms try`: will this DKMS package build here? Its module is built for each installed
//! kernel with headers (or the ones asked) by the real `dkms`, in a throwaway DKMS tree: nothing
//! is installed, DKMS's own tree and `/usr/lib/modules` are not touched. What a template author
//! runs when choosing a release and a kernel, before baking. A kernel built without an option the
//! module needs (`require_config`) is refused before anything is built.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::deb;
use super::dkmsconf::{self, DkmsConf};
use super::kconfig::{self, Need};

/// The answer for one kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Builds,
    /// Refused by the package's BUILD_EXCLUSIVE_KERNEL (the expression).
    Refused(String),
    /// The build failed: the compiler's first errors.
    Fails(Vec<String>),
    /// Not built: the kernel lacks build options the module needs (`require_config`): the
    /// options, and what the kernel's configuration says of each with the fix.
    Unfit {
        missing: Vec<String>,
        detail: String,
    },
}

#[derive(Debug, Clone)]
pub struct Tried {
    pub kernel: String,
    pub outcome: Outcome,
    pub took: Duration,
}

/// The package's DKMS module: its name, version and dkms.conf.
pub struct Module {
    pub name: String,
    pub version: String,
    pub conf: DkmsConf,
}

/// Reads the `.deb` and finds its DKMS source.
pub fn module_of(deb_path: &Path) -> Result<Module> {
    let info = deb::read(deb_path)?;
    let Some((conf_path, conf)) = info.dkms else {
        bail!(
            "{} carries no DKMS source (no usr/src/*/dkms.conf)",
            deb_path.display()
        );
    };
    // usr/src/NAME-VERSION/dkms.conf: dkms.conf's own fields win.
    let dir = conf_path
        .trim_start_matches("./")
        .trim_start_matches("usr/src/")
        .trim_end_matches("/dkms.conf")
        .to_string();
    let name = conf.package_name.clone().unwrap_or_else(|| {
        dir.rsplit_once('-')
            .map_or(dir.clone(), |(n, _)| n.to_string())
    });
    let version = conf.package_version.clone().unwrap_or_else(|| {
        dir.rsplit_once('-')
            .map_or(String::new(), |(_, v)| v.to_string())
    });
    Ok(Module {
        name,
        version,
        conf,
    })
}

/// Builds `m` (unpacked from `deb_path`) for each kernel in a throwaway tree under `work`.
pub fn try_build(
    deb_path: &Path,
    m: &Module,
    kernels: &[String],
    work: &Path,
) -> Result<Vec<Tried>> {
    let unpacked = work.join("deb");
    crate::exec::run(&[
        "dpkg-deb".into(),
        "-x".into(),
        "--".into(),
        deb_path.display().to_string(),
        unpacked.display().to_string(),
    ])
    .context("unpacking the .deb")?;
    let source = unpacked.join("usr/src");
    let tree = work.join("dkms");
    std::fs::create_dir_all(&tree)?;
    let dkms = |verb: &str, kernel: Option<&str>| -> Vec<String> {
        let mut v: Vec<String> = vec![
            "dkms".into(),
            verb.into(),
            "-m".into(),
            m.name.clone(),
            "-v".into(),
            m.version.clone(),
            "--dkmstree".into(),
            tree.display().to_string(),
            "--sourcetree".into(),
            source.display().to_string(),
        ];
        if let Some(k) = kernel {
            v.extend(["-k".into(), k.to_string()]);
        }
        v
    };
    crate::exec::run(&dkms("add", None)).context("dkms add in the throwaway tree")?;
    let mut out = Vec::new();
    for k in kernels {
        let start = Instant::now();
        let outcome = match dkmsconf::kernel_allowed(&m.conf, k) {
            Err(e) => bail!("dkms.conf: {e}"),
            Ok(false) => {
                Outcome::Refused(m.conf.build_exclusive_kernel.clone().unwrap_or_default())
            }
            Ok(true) => match crate::exec::run_with(
                &dkms("build", Some(k)),
                &mut super::makelog::watch(&dkms("build", Some(k))),
            ) {
                Ok(_) => Outcome::Builds,
                Err(e) => {
                    let log = tree.join(&m.name).join(&m.version).join("build/make.log");
                    let errors = crate::saferead::read_regular_string(
                        &log,
                        crate::saferead::CONFIG_LIMIT * 4,
                    )
                    .ok()
                    .flatten()
                    .map(|t| super::makelog::first_errors(&t, 5))
                    .unwrap_or_default();
                    Outcome::Fails(if errors.is_empty() {
                        vec![format!("{e:#}")]
                    } else {
                        errors
                    })
                }
            },
        };
        out.push(Tried {
            kernel: k.clone(),
            outcome,
            took: start.elapsed(),
        });
    }
    Ok(out)
}

/// Whether `kernel` lacks what `needs` asks of it, judged from its configuration in `root`
/// (`/boot/config-KVER`, else its headers' `.config`): `Some(Outcome::Unfit)` when it does, None
/// when it has everything or no configuration can be read (then the build says).
pub fn unfit(root: &crate::root::Root, kernel: &str, needs: &[Need]) -> Result<Option<Outcome>> {
    if needs.is_empty() {
        return Ok(None);
    }
    for path in [kconfig::boot_path(kernel), kconfig::headers_path(kernel)] {
        let Some(text) = root.read_string(&path)? else {
            continue;
        };
        let lacks = kconfig::parse(&text).lacks(needs);
        if lacks.is_empty() {
            return Ok(None);
        }
        return Ok(Some(Outcome::Unfit {
            missing: lacks.iter().map(|(n, _)| n.option.clone()).collect(),
            detail: format!(
                "kernel lacks {} (per {path}). {}",
                kconfig::describe_lacks(&lacks),
                kconfig::fix_hint(kernel)
            ),
        }));
    }
    Ok(None)
}

/// A `.deb` given by URL is downloaded (no sha256 needed: nothing is installed) into `dir`.
pub fn local_deb(arg: &str, dir: &Path) -> Result<PathBuf> {
    if arg.starts_with("http://") || arg.starts_with("https://") {
        let name = super::prefetch::file_name_of(arg);
        let spec = super::download::Spec::new(arg, None, dir.join(name), 4, Duration::from_secs(5));
        Ok(super::download::fetch(&spec)?.path)
    } else {
        let p = PathBuf::from(arg);
        if !p.is_file() {
            return Err(crate::exit::UsageError(format!("{arg}: no such file")).into());
        }
        Ok(p)
    }
}
