//! `guestprep prefetch URL`: download a release `.deb`, print its sha256 and the policy snippet.
//! The only way guestprep learns a checksum: from the bytes, never invented.

use anyhow::Result;
use clap::Args;

use crate::exit::ExitCode;

#[derive(Debug, Args)]
pub struct PrefetchArgs {
    /// The URL to download.
    pub url: String,
    /// Keep the file in this directory (default: a temporary one, removed afterwards). An existing
    /// file of the same name is never overwritten.
    #[arg(long, value_name = "DIR")]
    pub keep_in: Option<std::path::PathBuf>,
    /// Retries after the first attempt (as `[[packages.deb]] retries`).
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=10))]
    pub retries: u32,
    /// First retry delay in seconds, doubled after each (as `[[packages.deb]] retry_delay`).
    #[arg(long, value_name = "SECS", default_value_t = 5.0, value_parser = parse_delay)]
    pub retry_delay: f64,
}

fn parse_delay(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 300.0 => Ok(f),
        _ => Err(format!(
            "`{s}`: a number of seconds, more than 0 and at most 300"
        )),
    }
}

pub fn run(args: &PrefetchArgs) -> Result<ExitCode> {
    let tmp = tempfile::tempdir()?;
    let dir = args
        .keep_in
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let (f, info) = crate::packages::prefetch::prefetch(
        &args.url,
        &dir,
        args.retries,
        std::time::Duration::from_secs_f64(args.retry_delay),
    )?;
    eprintln!("{}: {} bytes", args.url, f.bytes);
    println!("sha256 {}", f.sha256);
    println!();
    let (name, version) = match &info {
        Some(i) => (
            i.package.clone().unwrap_or_default(),
            i.version.clone().unwrap_or_default(),
        ),
        None => ("NAME".into(), "VERSION".into()),
    };
    // Serialised by the toml crate: any character in a URL or a version is quoted correctly.
    let mut deb = toml::Table::new();
    deb.insert("name".into(), name.clone().into());
    deb.insert("version".into(), version.clone().into());
    deb.insert("url".into(), args.url.clone().into());
    deb.insert("sha256".into(), f.sha256.clone().into());
    deb.insert("hold".into(), true.into());
    let mut note = None;
    if let Some((conf_path, conf)) = info.as_ref().and_then(|i| i.dkms.as_ref()) {
        let mut dkms = toml::Table::new();
        dkms.insert(
            "module".into(),
            conf.package_name.clone().unwrap_or(name.clone()).into(),
        );
        dkms.insert(
            "version".into(),
            conf.package_version
                .clone()
                .unwrap_or(version.clone())
                .into(),
        );
        deb.insert("dkms".into(), dkms.into());
        if let Some(re) = &conf.build_exclusive_kernel {
            note = Some(format!(
                "# {conf_path}: BUILD_EXCLUSIVE_KERNEL={re:?}: builds only for matching kernels"
            ));
        }
    }
    let mut packages = toml::Table::new();
    packages.insert("deb".into(), toml::Value::Array(vec![deb.into()]));
    let mut doc = toml::Table::new();
    doc.insert("packages".into(), packages.into());
    print!("{}", toml::to_string(&doc)?);
    if let Some(n) = note {
        println!("{n}");
    }
    if info.is_none() {
        eprintln!("note: not a Debian package; fill in name and version");
    }
    Ok(ExitCode::Ok)
}
