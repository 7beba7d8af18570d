//! Builds the test DKMS package: a hello-world kernel module (tests/fixtures/hello-dkms) with a
//! `dkms.conf`, packaged with `dpkg-deb --build` the way release `.deb`s of DKMS modules are
//! (source under /usr/src, `dkms add` in postinst, `dkms remove` in prerm).
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use super::repo;

/// Builds `NAME_VERSION_all.deb` for DKMS module `module`; `exclusive` sets BUILD_EXCLUSIVE_KERNEL.
pub fn hello_deb(
    out: &Path,
    name: &str,
    module: &str,
    version: &str,
    exclusive: Option<&str>,
) -> Vec<u8> {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let src = r.join(format!("usr/src/{module}-{version}"));
    std::fs::create_dir_all(&src).unwrap();
    for f in ["guestprep_hello.c", "Makefile"] {
        std::fs::copy(
            repo().join("tests/fixtures/hello-dkms").join(f),
            src.join(f),
        )
        .unwrap();
    }
    let mut conf = format!(
        "PACKAGE_NAME=\"{module}\"\nPACKAGE_VERSION=\"{version}\"\nBUILT_MODULE_NAME[0]=\"guestprep_hello\"\nDEST_MODULE_LOCATION[0]=\"/updates/dkms\"\nAUTOINSTALL=\"yes\"\n"
    );
    if let Some(re) = exclusive {
        conf.push_str(&format!("BUILD_EXCLUSIVE_KERNEL=\"{re}\"\n"));
    }
    std::fs::write(src.join("dkms.conf"), conf).unwrap();
    let debian = r.join("DEBIAN");
    std::fs::create_dir_all(&debian).unwrap();
    std::fs::write(
        debian.join("control"),
        format!("Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: guestprep tests <tests@localhost>\nDepends: dkms\nDescription: guestprep test DKMS module\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    for (script, body) in [
        (
            "postinst",
            format!(
                "#!/bin/sh\nset -e\nif [ \"$1\" = configure ]; then dkms add -m {module} -v {version} || true; fi\n"
            ),
        ),
        (
            "prerm",
            format!("#!/bin/sh\nset -e\ndkms remove -m {module} -v {version} --all || true\n"),
        ),
    ] {
        let p = debian.join(script);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let deb = out.join(format!("{name}_{version}_all.deb"));
    let st = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(r)
        .arg(&deb)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "dpkg-deb: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    std::fs::read(&deb).unwrap()
}
