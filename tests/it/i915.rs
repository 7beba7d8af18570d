//! The real SR-IOV driver: upstream's i915-sriov-dkms at three release tags, and 2025.07.22 with
//! the test-only compatibility patch (tests/fixtures/i915-sriov-dkms/), built into .debs the way
//! upstream's CI does (tests/testbed/i915-debs.sh), each tried with `guestprep dkms try` and then
//! installed through `guestprep apply` in a fresh booted Debian 13 root with the mirror's current
//! kernel and headers.
//!
//! What happens is whatever the mirror's kernel makes happen: the test does not assume which
//! release builds. For every .deb it asserts that guestprep's verdict (apply's item, verify's,
//! `dkms try`'s) agrees with an independent one: the release's own BUILD_EXCLUSIVE_KERNEL tested
//! with bash's regex against the kernel, and, for what DKMS attempted, `dkms status` and
//! `modinfo -k` (the module DKMS installed, where modprobe will find it). It prints which way each
//! went and how long the build took. When a build succeeds, the initramfs is checked the same way:
//! `unmkinitramfs` and `modinfo` against guestprep's `initramfs:KVER` item.

use crate::common;
use common::container::{Container, rootfs_tar, unpack};
use common::http::Server;
use common::*;

use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

const MODULE: &str = "i915-sriov-dkms";

fn i915_debs() -> PathBuf {
    let o = Command::new(repo().join("tests/testbed/i915-debs.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("running tests/testbed/i915-debs.sh");
    assert!(
        o.status.success(),
        "building the i915-sriov-dkms .debs failed"
    );
    PathBuf::from(String::from_utf8(o.stdout).unwrap().trim())
}

/// What happened to one release on one kernel, in one word.
#[derive(Debug, PartialEq, Clone, Copy)]
enum Verdict {
    Builds,
    Refused,
    Fails,
}

/// The independent verdict: BUILD_EXCLUSIVE_KERNEL with bash's own regex match (what DKMS does),
/// then what DKMS and kmod say about the module after the package's real install.
fn independent(c: &Container, deb: &str, version: &str, kver: &str) -> Verdict {
    let script = format!(
        "set -e; rm -rf /tmp/x; dpkg-deb -x {deb} /tmp/x; . /tmp/x/usr/src/{MODULE}-{version}/dkms.conf; \
         if [ -n \"$BUILD_EXCLUSIVE_KERNEL\" ] && ! [[ {kver} =~ $BUILD_EXCLUSIVE_KERNEL ]]; then echo refused; exit 0; fi; \
         dkms status -m {MODULE} -v {version} -k {kver}; \
         modinfo -k {kver} -n i915"
    );
    let o = c.exec(&["bash", "-c", &script]);
    let out = stdout(&o);
    eprintln!(
        "independent check of {deb}: {}",
        out.trim().replace('\n', " | ")
    );
    if out.trim() == "refused" {
        Verdict::Refused
    } else if out.contains(": installed") && out.contains("/updates/") {
        Verdict::Builds
    } else {
        Verdict::Fails
    }
}

fn try_verdict(o: &std::process::Output) -> (Verdict, f64) {
    let line: serde_json::Value = serde_json::from_str(stdout(o).lines().next().unwrap_or("null"))
        .unwrap_or_else(|_| panic!("dkms try --json: {}{}", stdout(o), stderr(o)));
    let v = match line["outcome"].as_str() {
        Some("builds") => Verdict::Builds,
        Some("refused") => Verdict::Refused,
        Some("fails") => Verdict::Fails,
        _ => panic!("dkms try --json: {line}"),
    };
    (v, line["seconds"].as_f64().unwrap_or(0.0))
}

#[test]
fn real_i915_releases_get_the_verdict_the_real_build_gives() {
    let debs = i915_debs();
    let tar = rootfs_tar("dkms");
    let srv = Server::start();
    let releases = [
        ("i915-sriov-dkms_2026.05.06_amd64.deb", "2026.05.06"),
        ("i915-sriov-dkms_2026.03.05.2_amd64.deb", "2026.03.05.2"),
        ("i915-sriov-dkms_2025.07.22_amd64.deb", "2025.07.22"),
        ("i915-sriov-dkms_2025.07.22+compat_amd64.deb", "2025.07.22"),
    ];
    let mut summary = Vec::new();
    for (file, version) in releases {
        let bytes = std::fs::read(debs.join(file)).unwrap();
        let sha = hex::encode(Sha256::digest(&bytes));
        srv.add(file, bytes.clone());
        let dir = unpack(&tar);
        let kver = std::fs::read_dir(dir.path().join("usr/lib/modules"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .next()
            .unwrap();
        std::fs::write(dir.path().join("root").join(file), &bytes).unwrap();
        let c = Container::boot(dir);
        // Sites that want early KMS list i915 for the initramfs: it then carries the in-tree copy.
        let o = c.exec(&[
            "sh",
            "-c",
            &format!("echo i915 >>/etc/initramfs-tools/modules && update-initramfs -u -k {kver}"),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));

        // 1. dkms try: nothing installed.
        let t = Instant::now();
        let o = c.exec(&[
            "guestprep",
            "dkms",
            "try",
            "--json",
            &format!("/root/{file}"),
        ]);
        let (tried, try_secs) = try_verdict(&o);
        eprintln!(
            "dkms try {file}: {tried:?} in {:?}: {}",
            t.elapsed(),
            stdout(&o).trim()
        );
        assert_eq!(code(&o), if tried == Verdict::Builds { 0 } else { 1 });
        let st = c.exec(&["dkms", "status"]);
        assert!(
            !stdout(&st).contains(MODULE),
            "dkms try left {}",
            stdout(&st)
        );

        // 2. apply, the way a template is built.
        let policy = format!(
            "[packages]\n\n[[packages.deb]]\nname = \"{MODULE}\"\nversion = \"{version}\"\nurl = \"{}\"\nsha256 = \"{sha}\"\nhold = true\ndkms = {{ module = \"{MODULE}\", version = \"{version}\" }}\n\n[modules]\nblacklist = [\"xe\"]\noptions = {{ i915 = \"enable_guc=3\" }}\n",
            srv.url(&format!("/ok/{file}"))
        );
        std::fs::write(c.root().join("root/p.toml"), &policy).unwrap();
        let t = Instant::now();
        let o = c.exec_env(
            &[("GUESTPREP_HEARTBEAT_SECS", "15")],
            &["guestprep", "apply", "--json", "--policy", "/root/p.toml"],
        );
        let took = t.elapsed();
        let rep = json(&o);
        let dkms_id = format!("dkms:{MODULE}/{version}/{kver}");
        let deb_item = item(&rep, &format!("deb:{MODULE}"));
        let dkms_item = item(&rep, &dkms_id);
        let said = if deb_item["status"] == "error"
            && deb_item["message"]
                .as_str()
                .unwrap_or("")
                .contains("refusing to install")
        {
            Verdict::Refused
        } else if dkms_item["status"] == "compliant" {
            Verdict::Builds
        } else if dkms_item["status"] == "error" {
            Verdict::Fails
        } else {
            panic!("{deb_item}\n{dkms_item}")
        };
        let truth = independent(&c, &format!("/root/{file}"), version, &kver);
        eprintln!(
            "RESULT {file} on {kver}: guestprep apply says {said:?} (exit {}, {:.0?}), dkms try says {tried:?} ({try_secs:.0}s), the independent check says {truth:?}",
            code(&o),
            took
        );
        summary.push(format!(
            "{file}: {truth:?} on {kver} (apply {took:.0?}, dkms try {try_secs:.0}s)"
        ));
        assert_eq!(said, truth, "apply disagrees: {}", stdout(&o));
        assert_eq!(tried, truth, "dkms try disagrees");
        match truth {
            Verdict::Builds => {
                assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
                let beats = stderr(&o).matches("guestprep: still running `").count();
                eprintln!("{beats} heartbeat lines during the build");
                assert!(beats >= 1, "a build of minutes shows it is alive");
                let said = format!("building {MODULE}/{version} for {kver}, CC");
                assert!(
                    stderr(&o).lines().any(|l| l.contains(&said)),
                    "the heartbeat names the build and its make target: {}",
                    stderr(&o)
                );
            }
            Verdict::Fails => {
                assert_eq!(code(&o), 4, "{}", stdout(&o));
                let msg = item(&rep, &dkms_id)["message"]
                    .as_str()
                    .unwrap()
                    .to_string();
                assert!(msg.contains("error:") && msg.contains("make.log"), "{msg}");
                assert!(msg.contains("dkms try"), "says the way out: {msg}");
                let hold = item(&rep, &format!("package-hold:{MODULE}"));
                assert_eq!(
                    hold["status"], "skipped",
                    "left installed, not held: {hold}"
                );
                let holds = stdout(&c.exec(&["apt-mark", "showhold"]));
                assert!(!holds.lines().any(|l| l == MODULE), "{holds}");
            }
            Verdict::Refused => {
                assert_eq!(code(&o), 4, "{}", stdout(&o));
                let msg = deb_item["message"].as_str().unwrap_or("").to_string();
                assert!(msg.contains("BUILD_EXCLUSIVE_KERNEL"), "{deb_item}");
                let q = c.exec(&["dpkg-query", "-W", "-f=${Status}", MODULE]);
                assert!(
                    !stdout(&q).contains("ok installed"),
                    "a refused package was installed"
                );
                // Only what happened: the download done, the install not run, one error.
                let changes = rep["apply"]["changes"].as_array().unwrap();
                let of = |what: &str| {
                    changes
                        .iter()
                        .find(|c| c["action"].as_str().unwrap_or("").contains(what))
                        .unwrap_or_else(|| panic!("no {what} change: {changes:?}"))
                        .clone()
                };
                assert_eq!(of("download")["done"], true, "{changes:?}");
                assert_eq!(of("apt-get")["notRun"], true, "{changes:?}");
                let errors: Vec<&serde_json::Value> = rep["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|i| i["status"] == "error")
                    .collect();
                assert_eq!(errors.len(), 1, "one error, the refusal: {errors:#?}");
                let human = c.exec(&["guestprep", "apply", "--policy", "/root/p.toml"]);
                eprintln!("human output of the refusal:\n{}", stdout(&human));
                assert!(
                    !stdout(&human).contains("failed        "),
                    "{}",
                    stdout(&human)
                );
            }
        }
        // One verdict for one state: verify says what apply said, with the same status.
        let v = c.exec(&["guestprep", "verify", "--json", "--policy", "/root/p.toml"]);
        let vrep = json(&v);
        if truth != Verdict::Refused {
            assert_eq!(
                item(&vrep, &dkms_id)["status"],
                item(&rep, &dkms_id)["status"]
            );
        }
        if truth == Verdict::Fails {
            // An error as in apply (verify's exit for an error without drift is 5), not drift.
            assert_eq!(code(&v), 5, "{}", stdout(&v));
            let again = c.exec(&["guestprep", "apply", "--json", "--policy", "/root/p.toml"]);
            let msg = item(&json(&again), &dkms_id)["message"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(msg.contains("--retry-failed"), "not rebuilt blindly: {msg}");
        }
        if truth == Verdict::Builds {
            initramfs_agrees(&c, &kver, &vrep);
        }
    }
    eprintln!(
        "i915-sriov-dkms on the mirror's kernel today:\n  {}",
        summary.join("\n  ")
    );
}

/// The initramfs after a successful build: guestprep's item against `unmkinitramfs` + `modinfo`.
fn initramfs_agrees(c: &Container, kver: &str, vrep: &serde_json::Value) {
    let (initrd, system, conf_same) = c.initramfs_truth(kver, "i915");
    let current = !initrd.is_empty() && initrd == system && conf_same;
    let it = item(vrep, &format!("initramfs:{kver}"));
    eprintln!(
        "guestprep's initramfs:{kver}: {} {}",
        it["status"], it["message"]
    );
    assert_eq!(
        it["status"] == "compliant",
        current,
        "guestprep and unmkinitramfs disagree: {it}"
    );
    assert!(
        current,
        "after apply the initramfs carries the DKMS i915 and current modprobe.d"
    );
}
