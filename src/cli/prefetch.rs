//! `guestprep prefetch URL`: download a release `.deb`, print its sha256 and the policy snippet.
//! The only way guestprep learns a checksum: from the bytes, never invented.

use anyhow::Result;
use clap::Args;

use crate::exit::ExitCode;

#[derive(Debug, Args)]
pub struct PrefetchArgs {
    /// The URL to download.
    pub url: String,
    /// Keep the file in this directory (default: a temporary one, removed afterwards).
    #[arg(long, value_name = "DIR")]
    pub keep_in: Option<std::path::PathBuf>,
}

pub fn run(args: &PrefetchArgs) -> Result<ExitCode> {
    let tmp = tempfile::tempdir()?;
    let dir = args
        .keep_in
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let (f, info) = crate::resources::packages::prefetch(&args.url, &dir)?;
    eprintln!("{}: {} bytes", args.url, f.bytes);
    println!("sha256 {}", f.sha256);
    println!();
    println!("[[packages.deb]]");
    let (name, version) = match &info {
        Some(i) => (
            i.package.clone().unwrap_or_default(),
            i.version.clone().unwrap_or_default(),
        ),
        None => ("NAME".into(), "VERSION".into()),
    };
    println!("name = {name:?}");
    println!("version = {version:?}");
    println!("url = {:?}", args.url);
    println!("sha256 = {:?}", f.sha256);
    println!("hold = true");
    if let Some((conf_path, conf)) = info.as_ref().and_then(|i| i.dkms.as_ref()) {
        let m = conf.package_name.clone().unwrap_or(name.clone());
        let v = conf.package_version.clone().unwrap_or(version.clone());
        println!("dkms = {{ module = {m:?}, version = {v:?} }}");
        if let Some(re) = &conf.build_exclusive_kernel {
            println!(
                "# {conf_path}: BUILD_EXCLUSIVE_KERNEL={re:?}: builds only for matching kernels"
            );
        }
    }
    if info.is_none() {
        eprintln!("note: not a Debian package; fill in name and version");
    }
    Ok(ExitCode::Ok)
}
