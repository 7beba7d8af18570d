//! Verdicts and hints on a root shaped like the seed template's (examples/debian13-root with
//! the files the template's cloud-init script wrote: its chrony.conf, its backports `.list`, its
//! sshd drop-in), where each was weak or pointed the wrong way (issue 26):
//! - `apt:source:NAME` was compliant with no source configured at all (only the keyring was
//!   checked): it now reads the sources as apt does;
//! - "does sshd_config include sshd_config.d/*.conf?" was asked when it does;
//! - "apply cannot change this here" was said of items apply fixes through another item;
//! - "chrony.conf is the package's" was said of the file the script wrote.

use crate::common;
use common::*;

use std::path::Path;

/// The script's chrony.conf (its `write_files`, verbatim).
const SCRIPT_CHRONY: &str = "# Chrony configuration for Kubernetes\n# Use multiple reliable time sources\npool time.cloudflare.com iburst maxsources 4\npool time.google.com iburst maxsources 4\npool pool.ntp.org iburst maxsources 4\n\n# Record rate at which system clock gains/losses time\ndriftfile /var/lib/chrony/drift\n\n# Allow system clock to be stepped in first three updates if offset > 1s\nmakestep 1.0 3\n\n# Enable kernel synchronization of RTC\nrtcsync\n\n# Serve time to local network (for K8s pods)\nallow 10.0.0.0/8\nallow fc00::/7\nallow fd00::/8\n\n# Log statistics\nlogdir /var/log/chrony\nlog measurements statistics tracking\n";
/// The script's backports source.
const SCRIPT_BACKPORTS: &str =
    "deb http://deb.debian.org/debian trixie-backports main contrib non-free non-free-firmware\n";
const KEYRING: &str = "usr/share/keyrings/debian-archive-keyring.gpg";

fn put(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// The example root as the script left it (the parts these verdicts read), with dpkg's record of
/// the chrony package's own chrony.conf (its md5, as in a real status file).
fn scripts_root() -> tempfile::TempDir {
    let root = example_root();
    let r = root.path();
    let package_conf = std::fs::read(r.join("etc/chrony/chrony.conf")).unwrap();
    let o = std::process::Command::new("md5sum")
        .arg(r.join("etc/chrony/chrony.conf"))
        .output()
        .unwrap();
    let md5 = stdout(&o).split_whitespace().next().unwrap().to_string();
    assert_eq!(md5.len(), 32, "{package_conf:?}");
    let status = std::fs::read_to_string(r.join("var/lib/dpkg/status")).unwrap();
    let status = status.replace(
        "Description: chrony (example root entry)\n",
        &format!(
            "Conffiles:\n /etc/chrony/chrony.conf {md5}\n /etc/default/chrony 0123456789abcdef0123456789abcdef\nDescription: chrony (example root entry)\n"
        ),
    );
    std::fs::write(r.join("var/lib/dpkg/status"), status).unwrap();
    put(r, "etc/chrony/chrony.conf", SCRIPT_CHRONY);
    put(
        r,
        "etc/apt/sources.list.d/99-backports.list",
        SCRIPT_BACKPORTS,
    );
    put(r, KEYRING, "");
    root
}

fn policy(dir: &Path, text: &str) -> String {
    let p = dir.join("p.toml");
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

fn run(verb: &[&str], root: &Path, pol: &str) -> serde_json::Value {
    let mut a = verb.to_vec();
    a.extend(["--json", "--root", root.to_str().unwrap(), "--policy", pol]);
    let o = guestprep(&a);
    assert!(matches!(code(&o), 0..=4), "{}{}", stdout(&o), stderr(&o));
    json(&o)
}

fn text<'a>(it: &'a serde_json::Value, k: &str) -> &'a str {
    it[k].as_str().unwrap_or_default()
}

const SOURCE: &str = "[[apt.sources]]\nname = \"backports\"\nuris = [\"http://deb.debian.org/debian\"]\nsuites = [\"trixie-backports\"]\ncomponents = [\"main\"]\nsigned_by = \"/usr/share/keyrings/debian-archive-keyring.gpg\"\n";

#[test]
fn an_apt_source_is_compliant_only_when_apt_reads_it() {
    let root = scripts_root();
    let r = root.path();
    let dir = tempfile::tempdir().unwrap();
    let pol = policy(dir.path(), SOURCE);

    // The script's one-line .list has the target: compliant, and the duplicate is said.
    let it = item(&run(&["verify"], r, &pol), "apt:source:backports").clone();
    assert_eq!(it["status"], "compliant", "{it:#}");
    assert_eq!(
        it["actual"]["alsoIn"],
        serde_json::json!(["/etc/apt/sources.list.d/99-backports.list:1"])
    );
    assert!(
        text(&it, "message").contains("configured multiple times"),
        "{it:#}"
    );

    // No source anywhere, keyring present: this was `compliant`. Now drift, fixed through the
    // source's own file.
    std::fs::remove_file(r.join("etc/apt/sources.list.d/99-backports.list")).unwrap();
    let it = item(&run(&["verify"], r, &pol), "apt:source:backports").clone();
    assert_eq!(it["status"], "drift", "{it:#}");
    assert_eq!(
        text(&it, "message"),
        "not in any file apt reads: deb http://deb.debian.org/debian trixie-backports main"
    );
    assert!(
        text(&it, "remediation").starts_with(
            "through file:/etc/apt/sources.list.d/guestprep-backports.sources (create "
        ),
        "{it:#}"
    );
    let rep = run(&["apply"], r, &pol);
    let it = item(&rep, "apt:source:backports");
    assert_eq!(it["status"], "compliant", "{it:#}");
    assert_eq!(
        it["actual"]["configuredIn"],
        serde_json::json!(["/etc/apt/sources.list.d/guestprep-backports.sources:3"])
    );

    // Disabled in a deb822 stanza: apt does not read it, and neither does the check.
    put(
        r,
        "etc/apt/sources.list.d/guestprep-backports.sources",
        "Enabled: no\nTypes: deb\nURIs: http://deb.debian.org/debian\nSuites: trixie-backports\nComponents: main\n",
    );
    let rep = run(&["verify"], r, &pol);
    assert_eq!(item(&rep, "apt:source:backports")["status"], "drift");
}

#[test]
fn sshd_hints_say_what_is_true() {
    let root = scripts_root();
    let r = root.path();
    let dir = tempfile::tempdir().unwrap();
    let pol = policy(dir.path(), "[ssh]\nsettings = { MaxAuthTries = 3 }\n");
    // sshd_config includes sshd_config.d/*.conf; guestprep's drop-in is not written yet.
    let it = item(&run(&["verify"], r, &pol), "ssh:MaxAuthTries").clone();
    assert_eq!(it["status"], "drift");
    let msg = text(&it, "message");
    assert!(
        !msg.contains('?'),
        "no question when the answer is known: {msg}"
    );
    assert_eq!(
        msg,
        "MaxAuthTries not set in any file sshd reads (/etc/ssh/sshd_config includes /etc/ssh/sshd_config.d/05-guestprep.conf, which does not set it)"
    );
    assert!(
        text(&it, "remediation")
            .starts_with("through file:/etc/ssh/sshd_config.d/05-guestprep.conf (create "),
        "{it:#}"
    );
    // Without the Include, the message says so, and apply really cannot fix it.
    let main = std::fs::read_to_string(r.join("etc/ssh/sshd_config")).unwrap();
    put(
        r,
        "etc/ssh/sshd_config",
        &main.replace("Include /etc/ssh/sshd_config.d/*.conf\n", ""),
    );
    let it = item(&run(&["apply"], r, &pol), "ssh:MaxAuthTries").clone();
    assert_eq!(it["status"], "drift");
    assert!(
        text(&it, "message").contains(
            "/etc/ssh/sshd_config does not include /etc/ssh/sshd_config.d/05-guestprep.conf"
        ),
        "{it:#}"
    );
    assert!(
        text(&it, "remediation").starts_with("apply cannot change this here"),
        "{it:#}"
    );
}

#[test]
fn items_fixed_through_another_item_say_so() {
    let root = scripts_root();
    let r = root.path();
    let dir = tempfile::tempdir().unwrap();
    let pol = policy(
        dir.path(),
        "[apt]\noptions = { \"Acquire::Retries\" = 3 }\n[modules]\nblacklist = [\"xe\"]\noptions = { i915 = \"enable_guc=3\" }\n",
    );
    let rep = run(&["verify"], r, &pol);
    for (id, through) in [
        ("apt:options", "file:/etc/apt/apt.conf.d/90guestprep"),
        ("module-blacklist:xe", "file:/etc/modprobe.d/guestprep.conf"),
        ("module-options:i915", "file:/etc/modprobe.d/guestprep.conf"),
    ] {
        let it = item(&rep, id);
        assert_eq!(it["status"], "drift", "{it:#}");
        assert!(
            text(it, "remediation").starts_with(&format!("through {through} (create ")),
            "{it:#}"
        );
    }
    // And apply does fix them.
    let rep = run(&["apply"], r, &pol);
    for id in ["apt:options", "module-blacklist:xe", "module-options:i915"] {
        assert_eq!(item(&rep, id)["status"], "compliant", "{id}");
    }
}

#[test]
fn chrony_conf_is_named_for_what_it_is() {
    let root = scripts_root();
    let r = root.path();
    let dir = tempfile::tempdir().unwrap();
    let pol = policy(
        dir.path(),
        "[chrony]\nservers = [\"time.cloudflare.com\"]\nexclusive = true\n",
    );
    // The script's chrony.conf: not the package's, and without `confdir`.
    let rep = run(&["apply", "--check", "--chroot"], r, &pol);
    let ex = item(&rep, "chrony:exclusive");
    assert_eq!(ex["status"], "drift");
    assert!(
        text(ex, "message").starts_with(
            "/etc/chrony/chrony.conf is not diverted: written here, not the chrony package's file"
        ),
        "{ex:#}"
    );
    let cd = item(&rep, "chrony:confdir");
    assert_eq!(cd["status"], "drift");
    assert!(
        text(cd, "message").ends_with(
            "chrony:exclusive writes /etc/chrony/chrony.conf with `confdir /etc/chrony/conf.d`"
        ),
        "{cd:#}"
    );
    assert!(
        text(cd, "remediation").starts_with("through chrony:exclusive (run dpkg-divert"),
        "{cd:#}"
    );
    // The package's own file is named as such.
    let fresh = example_root();
    let package_conf =
        std::fs::read_to_string(fresh.path().join("etc/chrony/chrony.conf")).unwrap();
    put(r, "etc/chrony/chrony.conf", &package_conf);
    let rep = run(&["apply", "--check", "--chroot"], r, &pol);
    assert!(
        text(item(&rep, "chrony:exclusive"), "message")
            .starts_with("/etc/chrony/chrony.conf is the chrony package's (not diverted)"),
        "{:#}",
        item(&rep, "chrony:exclusive")
    );
}
