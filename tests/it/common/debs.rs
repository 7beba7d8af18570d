//! Builds the test DKMS package with `tests/fixtures/hello-dkms/mkdeb.sh` (shared with the VM
//! test): a hello-world kernel module with a `dkms.conf`, packaged the way release `.deb`s of DKMS
//! modules are (source under /usr/src, `dkms add` in postinst, `dkms remove` in prerm).

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
    build(out, name, module, version, exclusive, false, None)
}

/// The same package with a module that does not compile.
pub fn broken_deb(out: &Path, name: &str, module: &str, version: &str) -> Vec<u8> {
    build(out, name, module, version, None, true, None)
}

/// A package whose module is built as `ko.ko`: it replaces the in-tree module of that name (from
/// `/usr/lib/modules/KVER/updates`, as i915-sriov-dkms replaces i915).
pub fn shadow_deb(out: &Path, name: &str, module: &str, version: &str, ko: &str) -> Vec<u8> {
    build(out, name, module, version, None, false, Some(ko))
}

fn build(
    out: &Path,
    name: &str,
    module: &str,
    version: &str,
    exclusive: Option<&str>,
    broken: bool,
    ko: Option<&str>,
) -> Vec<u8> {
    let mut cmd = Command::new(repo().join("tests/fixtures/hello-dkms/mkdeb.sh"));
    if let Some(k) = ko {
        cmd.env("KO", k);
    }
    let st = cmd
        .arg(out)
        .args([name, module, version, exclusive.unwrap_or("")])
        .args(broken.then_some("broken"))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "mkdeb.sh: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let deb = String::from_utf8(st.stdout).unwrap();
    std::fs::read(deb.trim()).unwrap()
}

/// A package with no maintainer scripts, built with dpkg-deb: `files` are (path in the package,
/// content), `conffiles` the ones dpkg keeps as configuration (removed only by a purge).
pub fn plain_deb(out: &Path, name: &str, files: &[(&str, &str)], conffiles: &[&str]) -> Vec<u8> {
    let tree = out.join(format!("{name}.tree"));
    std::fs::create_dir_all(tree.join("DEBIAN")).unwrap();
    for (p, content) in files {
        let f = tree.join(p.trim_start_matches('/'));
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, content).unwrap();
    }
    std::fs::write(
        tree.join("DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: 1\nArchitecture: all\nMaintainer: guestprep tests <tests@localhost>\nDescription: guestprep test package\n"
        ),
    )
    .unwrap();
    if !conffiles.is_empty() {
        std::fs::write(tree.join("DEBIAN/conffiles"), conffiles.join("\n") + "\n").unwrap();
    }
    let deb = out.join(format!("{name}.deb"));
    let st = Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&tree)
        .arg(&deb)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "dpkg-deb: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    std::fs::read(deb).unwrap()
}

/// A package with a version and a `Depends:` line (a kernel's image, a meta package), built with
/// dpkg-deb into `out/NAME_VERSION_all.deb`.
pub fn control_deb(
    out: &Path,
    name: &str,
    version: &str,
    depends: &str,
    files: &[(&str, &str)],
) -> std::path::PathBuf {
    let tree = out.join(format!("{name}_{version}.tree"));
    std::fs::create_dir_all(tree.join("DEBIAN")).unwrap();
    for (p, content) in files {
        let f = tree.join(p.trim_start_matches('/'));
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, content).unwrap();
    }
    let depends = if depends.is_empty() {
        String::new()
    } else {
        format!("Depends: {depends}\n")
    };
    std::fs::write(
        tree.join("DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: all\n{depends}Maintainer: guestprep tests <tests@localhost>\nDescription: guestprep test package\n"
        ),
    )
    .unwrap();
    let deb = out.join(format!("{name}_{version}_all.deb"));
    let st = Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&tree)
        .arg(&deb)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "dpkg-deb: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    std::fs::remove_dir_all(&tree).unwrap();
    deb
}
