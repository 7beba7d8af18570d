//! `[packages]` with real parts: a hello-world DKMS package built with dpkg-deb, served over HTTP
//! on loopback, installed by guestprep inside a booted Debian 13 root (systemd-nspawn) that has
//! real dkms, gcc and the headers of its own kernel. The module must be built by dkms for the
//! root's installed kernel (not the host's) and found by `modinfo -k`, the package held, a second
//! apply must download and build nothing; a wrong checksum, a 404 and a BUILD_EXCLUSIVE_KERNEL
//! mismatch install nothing.

use crate::common;
use common::container::{Container, rootfs_tar, unpack};
use common::debs::{broken_deb, hello_deb, plain_deb, shadow_deb};
use common::http::Server;
use common::*;

use sha2::{Digest, Sha256};

fn deb_entry(name: &str, module: &str, url: &str, sha: &str) -> String {
    format!(
        "[[packages.deb]]\nname = \"{name}\"\nversion = \"1.0\"\nurl = \"{url}\"\nsha256 = \"{sha}\"\nhold = true\ndkms = {{ module = \"{module}\", version = \"1.0\" }}\nretries = 3\nretry_delay = 0.05\n"
    )
}

#[test]
fn installs_builds_and_holds_a_dkms_deb_in_a_real_root() {
    let debs = tempfile::tempdir().unwrap();
    let good = hello_deb(
        debs.path(),
        "guestprep-hello-dkms",
        "guestprep-hello",
        "1.0",
        None,
    );
    let other = hello_deb(
        debs.path(),
        "guestprep-other-dkms",
        "guestprep-other",
        "1.0",
        None,
    );
    let excl = hello_deb(
        debs.path(),
        "guestprep-excl-dkms",
        "guestprep-excl",
        "1.0",
        Some("^99\\."),
    );
    let sha = |b: &[u8]| hex::encode(Sha256::digest(b));
    let srv = Server::start();
    srv.add("hello.deb", good.clone());
    srv.add("other.deb", other.clone());
    srv.add("excl.deb", excl.clone());

    let dir = unpack(&rootfs_tar("dkms"));
    let kernels: Vec<String> = std::fs::read_dir(dir.path().join("usr/lib/modules"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(kernels.len(), 1, "{kernels:?}");
    let kver = kernels[0].clone();
    let host_kernel = nix::sys::utsname::uname()
        .unwrap()
        .release()
        .to_string_lossy()
        .into_owned();
    assert_ne!(
        kver, host_kernel,
        "the test must build for the image's kernel, not the running one"
    );
    let c = Container::boot(dir);

    // The first request gets a 500: retried with backoff, then installed.
    let policy = format!(
        "[packages]\ninstall = [\"dkms\", \"kmod\"]\nhold = [\"dkms\"]\n\n{}",
        deb_entry(
            "guestprep-hello-dkms",
            "guestprep-hello",
            &srv.url("/flaky/1/hello.deb"),
            &sha(&good)
        )
    );
    std::fs::write(c.root().join("root/p.toml"), &policy).unwrap();
    let o = c.exec(&["guestprep", "verify", "--json", "--policy", "/root/p.toml"]);
    assert_eq!(code(&o), 1);
    let t = std::time::Instant::now();
    let o = c.exec_env(
        &[("GUESTPREP_HEARTBEAT_SECS", "2")],
        &["guestprep", "apply", "--json", "--policy", "/root/p.toml"],
    );
    eprintln!("first install took {:?}", t.elapsed());
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    // Off a terminal, long commands show they are alive (cloud-init's output log, journald).
    let beats = stderr(&o)
        .lines()
        .filter(|l| l.starts_with("guestprep: still running `"))
        .count();
    eprintln!("{beats} heartbeat lines during the first install");
    assert!(beats >= 1, "no heartbeat: {}", stderr(&o));
    // A DKMS build says what it builds, read from its make.log.
    assert!(
        stderr(&o)
            .lines()
            .any(|l| l.starts_with("guestprep: still running `")
                && l.contains(&format!("building guestprep-hello/1.0 for {kver}"))),
        "{}",
        stderr(&o)
    );
    assert!(
        !stderr(&o).contains('\r'),
        "no progress line off a terminal"
    );
    let rep = json(&o);
    assert_eq!(
        srv.requests("/flaky/1/hello.deb").len(),
        2,
        "one 500, then the file"
    );
    let dkms_id = format!("dkms:guestprep-hello/1.0/{kver}");
    assert_eq!(item(&rep, &dkms_id)["status"], "compliant");
    let details: Vec<String> = rep["apply"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["details"].as_array().cloned().unwrap_or_default())
        .map(|d| d.as_str().unwrap().to_string())
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d.contains("downloaded") && d.contains("2 attempt(s)")),
        "{details:#?}"
    );
    assert!(rep["apply"]["changes"].as_array().unwrap().iter().any(|c| {
        c["action"]
            .as_str()
            .unwrap()
            .starts_with("run dkms install guestprep-hello/1.0 -k")
    }));

    // Real tools agree: built by dkms for the image's kernel, found by modinfo, held.
    let o = c.exec(&["modinfo", "-k", &kver, "guestprep_hello"]);
    assert!(o.status.success(), "modinfo: {}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!(
            "/usr/lib/modules/{kver}/updates/dkms/guestprep_hello.ko"
        )) || stdout(&o).contains("/updates/dkms/guestprep_hello.ko"),
        "{}",
        stdout(&o)
    );
    let o = c.exec(&["dkms", "status", "guestprep-hello/1.0"]);
    assert!(
        stdout(&o).contains(&format!("guestprep-hello/1.0, {kver}, x86_64: installed")),
        "{}",
        stdout(&o)
    );
    let held = stdout(&c.exec(&["apt-mark", "showhold"]));
    assert!(
        held.lines().any(|l| l == "guestprep-hello-dkms") && held.lines().any(|l| l == "dkms"),
        "{held}"
    );

    // Second apply: no download, no build, nothing.
    let before = srv.requests("/").len();
    let t = std::time::Instant::now();
    let o = c.exec(&["guestprep", "apply", "--json", "--policy", "/root/p.toml"]);
    eprintln!(
        "no-op apply with the packages section took {:?} (nsenter included)",
        t.elapsed()
    );
    assert_eq!(code(&o), 0);
    assert_eq!(json(&o)["apply"]["changes"], serde_json::json!([]));
    assert_eq!(srv.requests("/").len(), before, "second apply downloaded");

    // Failures install nothing: wrong bytes, 404, a module no installed kernel may build.
    for (case, url, pkg, module, want) in [
        (
            "wrong checksum",
            srv.url("/wrong/other.deb"),
            "guestprep-other-dkms",
            "guestprep-other",
            "checksum mismatch",
        ),
        (
            "404",
            srv.url("/missing/other.deb"),
            "guestprep-other-dkms",
            "guestprep-other",
            "404",
        ),
        (
            "exclusive",
            srv.url("/ok/excl.deb"),
            "guestprep-excl-dkms",
            "guestprep-excl",
            "BUILD_EXCLUSIVE_KERNEL",
        ),
    ] {
        let sha = if pkg == "guestprep-excl-dkms" {
            sha(&excl)
        } else {
            sha(&other)
        };
        std::fs::write(
            c.root().join("root/bad.toml"),
            format!("[packages]\n{}", deb_entry(pkg, module, &url, &sha)),
        )
        .unwrap();
        let o = c.exec(&["guestprep", "apply", "--json", "--policy", "/root/bad.toml"]);
        assert_eq!(code(&o), 4, "{case}: {}", stdout(&o));
        let msg = item(&json(&o), &format!("deb:{pkg}"))["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(msg.contains(want), "{case}: {msg}");
        let st = c.exec(&["dpkg-query", "-W", "-f=${Status}", pkg]);
        assert!(
            !stdout(&st).contains("installed") || stdout(&st).contains("not-installed"),
            "{case}: {pkg} was installed: {}",
            stdout(&st)
        );
        let left: Vec<String> = std::fs::read_dir(c.root().join("var/cache/guestprep"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| {
                n.starts_with(pkg) && !n.ends_with(".deb")
                    || (case != "exclusive" && n.starts_with(pkg))
            })
            .collect();
        assert!(left.is_empty(), "{case}: left in the cache: {left:?}");
    }
    // A module that does not compile (as a release on a kernel it does not support): guestprep's
    // verdict agrees with a build done independently, carries the compiler's first errors, is the
    // same in verify and apply, and the build is not redone until asked.
    let broken = broken_deb(
        debs.path(),
        "guestprep-broken-dkms",
        "guestprep-broken",
        "1.0",
    );
    srv.add("broken.deb", broken.clone());
    std::fs::write(
        c.root().join("root/broken.toml"),
        format!(
            "[packages]\n{}",
            deb_entry(
                "guestprep-broken-dkms",
                "guestprep-broken",
                &srv.url("/ok/broken.deb"),
                &sha(&broken)
            )
        ),
    )
    .unwrap();
    let id = format!("dkms:guestprep-broken/1.0/{kver}");
    let o = c.exec(&[
        "guestprep",
        "apply",
        "--json",
        "--policy",
        "/root/broken.toml",
    ]);
    assert_eq!(code(&o), 4, "{}{}", stdout(&o), stderr(&o));
    let it = item(&json(&o), &id).clone();
    let msg = it["message"].as_str().unwrap().to_string();
    let independent = c.exec(&[
        "make",
        "-C",
        &format!("/usr/lib/modules/{kver}/build"),
        "M=/usr/src/guestprep-broken-1.0",
        "modules",
    ]);
    let built = independent.status.success();
    eprintln!(
        "independent build of the broken module: {}; guestprep: {} ({msg})",
        if built { "builds" } else { "fails" },
        it["status"]
    );
    assert!(!built, "the broken module built: {}", stdout(&independent));
    assert_eq!(it["status"], "error", "{it}");
    assert!(
        msg.contains("guestprep_hello.c:") && msg.contains("guestprep_symbol_no_kernel_has"),
        "the first compiler error is in the message: {msg}"
    );
    assert!(
        stderr(&independent).contains("guestprep_symbol_no_kernel_has"),
        "{}",
        stderr(&independent)
    );
    // The package stays installed, and is not held: a hold would keep a driver that builds
    // nowhere. The report says so; apt-mark agrees.
    let hold = item(&json(&o), "package-hold:guestprep-broken-dkms").clone();
    assert_eq!(hold["status"], "skipped", "{hold}");
    assert!(
        hold["message"]
            .as_str()
            .unwrap()
            .contains("guestprep-broken-dkms 1.0 is left installed, not held"),
        "{hold}"
    );
    let held = |c: &Container| {
        stdout(&c.exec(&["apt-mark", "showhold"]))
            .lines()
            .any(|l| l == "guestprep-broken-dkms")
    };
    assert!(!held(&c));
    // Held by hand (or by an older guestprep): apply lets it go.
    assert!(
        c.exec(&["apt-mark", "hold", "guestprep-broken-dkms"])
            .status
            .success()
    );
    let o = c.exec(&[
        "guestprep",
        "apply",
        "--json",
        "--policy",
        "/root/broken.toml",
    ]);
    let rep = json(&o);
    assert!(
        rep["apply"]["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["action"]
                .as_str()
                .unwrap()
                .contains("apt-mark unhold -- guestprep-broken-dkms")),
        "{rep}"
    );
    assert_eq!(
        item(&rep, "package-hold:guestprep-broken-dkms")["status"],
        "skipped"
    );
    assert!(!held(&c), "apply left the broken package held");
    // verify says the same; a second apply does not build again.
    let o = c.exec(&[
        "guestprep",
        "verify",
        "--json",
        "--policy",
        "/root/broken.toml",
    ]);
    assert_eq!(item(&json(&o), &id)["status"], "error");
    assert_eq!(code(&o), 5, "{}", stdout(&o));
    let t = std::time::Instant::now();
    let o = c.exec(&[
        "guestprep",
        "apply",
        "--json",
        "--policy",
        "/root/broken.toml",
    ]);
    let rep = json(&o);
    let again = item(&rep, &id)["message"].as_str().unwrap().to_string();
    assert!(again.contains("--retry-failed"), "{again}");
    assert!(
        !rep["apply"]["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["action"].as_str().unwrap().contains("dkms install")),
        "a failed build was redone: {rep}"
    );
    eprintln!("apply after a failed build: {:?}, no rebuild", t.elapsed());
    let o = c.exec(&[
        "guestprep",
        "apply",
        "--json",
        "--retry-failed",
        "--policy",
        "/root/broken.toml",
    ]);
    assert!(
        json(&o)["apply"]["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["action"].as_str().unwrap().contains("dkms install")),
        "--retry-failed builds again: {}",
        stdout(&o)
    );
    // The way out sites take: their own patched build of the same release, same name and
    // version, pinned by its own sha256. guestprep reinstalls it (dpkg would say "already
    // installed") and the build is tried again (the package's files changed).
    let patched = shadow_deb(
        debs.path(),
        "guestprep-broken-dkms",
        "guestprep-broken",
        "1.0",
        "guestprep_patched",
    );
    assert_ne!(patched, broken);
    srv.add("patched.deb", patched.clone());
    std::fs::write(
        c.root().join("root/patched.toml"),
        deb_entry(
            "guestprep-broken-dkms",
            "guestprep-broken",
            &srv.url("/ok/patched.deb"),
            &sha(&patched),
        ),
    )
    .unwrap();
    let o = c.exec(&[
        "guestprep",
        "verify",
        "--json",
        "--policy",
        "/root/patched.toml",
    ]);
    let deb = item(&json(&o), "deb:guestprep-broken-dkms").clone();
    assert_eq!(deb["status"], "drift", "{deb}");
    assert!(
        deb["message"]
            .as_str()
            .unwrap()
            .contains("installed from another .deb"),
        "{deb}"
    );
    let o = c.exec(&[
        "guestprep",
        "apply",
        "--json",
        "--policy",
        "/root/patched.toml",
    ]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let rep = json(&o);
    assert_eq!(
        item(&rep, &id)["status"],
        "compliant",
        "the patched build built"
    );
    assert_eq!(
        item(&rep, "package-hold:guestprep-broken-dkms")["status"],
        "compliant"
    );
    let st = stdout(&c.exec(&[
        "dkms",
        "status",
        "-m",
        "guestprep-broken",
        "-v",
        "1.0",
        "-k",
        &kver,
    ]));
    assert!(st.contains("installed"), "dkms status: {st}");
    // First-boot contention: another package manager holds dpkg's lock (fcntl, as apt takes it)
    // for 20 s; apply waits, says for whom, and then installs. It never breaks the lock.
    let late = hello_deb(
        debs.path(),
        "guestprep-late-dkms",
        "guestprep-late",
        "1.0",
        None,
    );
    srv.add("late.deb", late.clone());
    std::fs::write(
        c.root().join("root/late.toml"),
        format!(
            "[[packages.deb]]\nname = \"guestprep-late-dkms\"\nversion = \"1.0\"\nurl = \"{}\"\nsha256 = \"{}\"\n",
            srv.url("/ok/late.deb"),
            sha(&late)
        ),
    )
    .unwrap();
    let o = c.exec(&[
        "systemd-run",
        "--unit=dpkg-lock-holder",
        "perl",
        "-e",
        r#"use Fcntl; open(my $f, "+<", "/var/lib/dpkg/lock-frontend") or die "open: $!"; my $l = pack("s s x4 q q i x4", F_WRLCK, 0, 0, 0, 0); fcntl($f, F_SETLK, $l) or die "lock: $!"; sleep 20"#,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(
        c.systemctl("is-active", "dpkg-lock-holder.service"),
        "active",
        "the lock holder runs: {}",
        stdout(&c.exec(&["journalctl", "-u", "dpkg-lock-holder", "--no-pager"]))
    );
    let t = std::time::Instant::now();
    let o = c.exec(&["guestprep", "apply", "--policy", "/root/late.toml"]);
    let waited = t.elapsed();
    let err = stderr(&o);
    eprintln!(
        "apply with dpkg's lock held for 20 s: exit {} after {waited:?}",
        code(&o)
    );
    assert_eq!(code(&o), 0, "{}{err}", stdout(&o));
    assert!(
        err.contains("waiting for dpkg's lock /var/lib/dpkg/lock-frontend, held by perl (PID"),
        "{err}"
    );
    assert!(waited >= std::time::Duration::from_secs(15), "{waited:?}");
    let st = c.exec(&["dpkg-query", "-W", "-f=${Status}", "guestprep-late-dkms"]);
    assert!(stdout(&st).ends_with("ok installed"), "{}", stdout(&st));
    // `guestprep dkms try`: the same answers as the real installs above, nothing installed.
    for (file, bytes) in [
        ("good.deb", &good),
        ("broken.deb", &broken),
        ("excl.deb", &excl),
    ] {
        std::fs::write(c.root().join("root").join(file), bytes).unwrap();
    }
    let status_before = stdout(&c.exec(&["dkms", "status"]));
    let updates_before = snapshot(&c.root().join(format!("usr/lib/modules/{kver}/updates")));
    let try_ = |file: &str| c.exec(&["guestprep", "dkms", "try", &format!("/root/{file}")]);
    let o = try_("good.deb");
    eprintln!("dkms try good.deb: {}", stdout(&o).trim());
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).starts_with(&format!("{kver}: builds (")),
        "{}",
        stdout(&o)
    );
    let o = try_("broken.deb");
    eprintln!("dkms try broken.deb: {}", stdout(&o).trim());
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).starts_with(&format!("{kver}: fails ("))
            && stdout(&o).contains("guestprep_symbol_no_kernel_has"),
        "agrees with the independent build: {}",
        stdout(&o)
    );
    let o = try_("excl.deb");
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("refused") && stdout(&o).contains("^99\\."),
        "{}",
        stdout(&o)
    );
    let o = c.exec(&[
        "guestprep",
        "dkms",
        "try",
        "/root/good.deb",
        "--kernel",
        "0.0-none",
    ]);
    assert_fails(&o, 2, "has no headers here");
    assert_eq!(
        stdout(&c.exec(&["dkms", "status"])),
        status_before,
        "dkms try installed something"
    );
    assert_same(
        &updates_before,
        &snapshot(&c.root().join(format!("usr/lib/modules/{kver}/updates"))),
        "dkms try touched the installed modules",
    );
}

/// Offline, without --chroot: package items are checked and reported, not changed.
#[test]
fn offline_packages_are_checked_not_changed() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("var/lib/dpkg")).unwrap();
    std::fs::write(
        root.path().join("var/lib/dpkg/status"),
        "Package: dkms\nStatus: install ok installed\nVersion: 3.2.2-1\n\n",
    )
    .unwrap();
    let pol = root.path().join("p.toml");
    std::fs::write(
        &pol,
        "[packages]\ninstall = [\"dkms\", \"chrony\"]\nhold = [\"dkms\"]\n",
    )
    .unwrap();
    let before = snapshot(root.path());
    let o = guestprep(&[
        "apply",
        "--json",
        "--root",
        root.path().to_str().unwrap(),
        "--policy",
        pol.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 4, "{}", stdout(&o));
    let rep = json(&o);
    assert_eq!(item(&rep, "package:dkms")["status"], "compliant");
    let chrony = item(&rep, "package:chrony");
    assert_eq!(chrony["status"], "drift");
    assert!(
        chrony["message"].as_str().unwrap().contains("--chroot"),
        "{chrony}"
    );
    assert_eq!(item(&rep, "package-hold:dkms")["status"], "drift");
    assert_same(
        &persistent(before),
        &persistent(snapshot(root.path())),
        "offline apply changed packages",
    );
}

/// An offline image (the same root, not booted) with `apply --chroot`: downloaded on the host into
/// the image's cache, installed and built by apt and dkms inside `chroot`.
#[test]
fn offline_chroot_installs_and_builds_in_an_image() {
    let debs = tempfile::tempdir().unwrap();
    let good = hello_deb(
        debs.path(),
        "guestprep-hello-dkms",
        "guestprep-hello",
        "1.0",
        None,
    );
    let srv = Server::start();
    srv.add("hello.deb", good.clone());
    let dir = unpack(&rootfs_tar("dkms"));
    let r = dir.path();
    let kver = std::fs::read_dir(r.join("usr/lib/modules"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name()
        .to_string_lossy()
        .into_owned();
    let pol = debs.path().join("p.toml");
    std::fs::write(
        &pol,
        format!(
            "[packages]\n{}",
            deb_entry(
                "guestprep-hello-dkms",
                "guestprep-hello",
                &srv.url("/ok/hello.deb"),
                &hex::encode(Sha256::digest(&good))
            )
        ),
    )
    .unwrap();
    let args = [
        "apply",
        "--root",
        r.to_str().unwrap(),
        "--policy",
        pol.to_str().unwrap(),
    ];

    // Without --chroot: reported, not changed.
    let o = guestprep(&args);
    assert_eq!(code(&o), 4);
    assert!(stdout(&o).contains("--chroot"), "{}", stdout(&o));
    assert!(
        srv.requests("/").is_empty(),
        "nothing downloaded without --chroot"
    );

    let mut with = args.to_vec();
    with.push("--chroot");
    let o = guestprep(&with);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let modinfo = std::process::Command::new("chroot")
        .arg(r)
        .args(["modinfo", "-k", &kver, "guestprep_hello"])
        .output()
        .unwrap();
    assert!(
        modinfo.status.success(),
        "{}",
        String::from_utf8_lossy(&modinfo.stderr)
    );
    let held = std::process::Command::new("chroot")
        .arg(r)
        .args(["apt-mark", "showhold"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&held.stdout)
            .lines()
            .any(|l| l == "guestprep-hello-dkms")
    );
    // Converged: verify offline says so, and a second run changes nothing.
    let o = guestprep(&[
        "verify",
        "--root",
        r.to_str().unwrap(),
        "--policy",
        pol.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let o = guestprep(&with);
    assert!(stdout(&o).contains("nothing to change"), "{}", stdout(&o));
}

/// `[packages] remove` and `purge` with the real apt-get and dpkg: a package with a conffile is
/// removed (its configuration stays: dpkg's `config-files`), then purged (nothing left), each
/// verdict checked with `dpkg-query`.
#[test]
fn remove_and_purge_with_real_apt() {
    let debs = tempfile::tempdir().unwrap();
    let dummy = plain_deb(
        debs.path(),
        "guestprep-dummy",
        &[("/etc/guestprep-dummy.conf", "x = 1\n")],
        &["/etc/guestprep-dummy.conf"],
    );
    let dir = unpack(&rootfs_tar("dkms"));
    std::fs::write(dir.path().join("root/dummy.deb"), &dummy).unwrap();
    let c = Container::boot(dir);
    assert!(c.exec(&["dpkg", "-i", "/root/dummy.deb"]).status.success());
    let status = |c: &Container| {
        stdout(&c.exec(&[
            "dpkg-query",
            "-W",
            "-f=${db:Status-Status}",
            "guestprep-dummy",
        ]))
    };
    assert_eq!(status(&c), "installed");

    std::fs::write(
        c.root().join("root/rm.toml"),
        "[packages]\nremove = [\"guestprep-dummy\"]\n",
    )
    .unwrap();
    let o = c.exec(&["guestprep", "verify", "--json", "--policy", "/root/rm.toml"]);
    assert_eq!(code(&o), 1);
    assert_eq!(
        item(&json(&o), "package-absent:guestprep-dummy")["message"],
        "installed (1)"
    );
    let o = c.exec(&["guestprep", "apply", "--json", "--policy", "/root/rm.toml"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(status(&c), "config-files", "remove keeps the configuration");
    assert_eq!(
        item(&json(&o), "package-absent:guestprep-dummy")["status"],
        "compliant"
    );

    std::fs::write(
        c.root().join("root/purge.toml"),
        "[packages]\npurge = [\"guestprep-dummy\"]\n",
    )
    .unwrap();
    let o = c.exec(&[
        "guestprep",
        "verify",
        "--json",
        "--policy",
        "/root/purge.toml",
    ]);
    assert_eq!(
        item(&json(&o), "package-absent:guestprep-dummy")["message"],
        "removed, but its configuration files are left"
    );
    let o = c.exec(&[
        "guestprep",
        "apply",
        "--json",
        "--policy",
        "/root/purge.toml",
    ]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    // dpkg forgets a purged package entirely.
    assert!(
        matches!(status(&c).as_str(), "" | "not-installed"),
        "{}",
        status(&c)
    );
    assert!(!c.root().join("etc/guestprep-dummy.conf").exists());
    let o = c.exec(&[
        "guestprep",
        "apply",
        "--json",
        "--policy",
        "/root/purge.toml",
    ]);
    assert_eq!(json(&o)["apply"]["changes"].as_array().unwrap().len(), 0);
}

/// `[apt] options` and `sources` with the real apt: `apt-config dump` agrees with guestprep's
/// effective options (including a later file that overrides one), and apt reads the source
/// (`apt-get --print-uris update` lists its index files; nothing is downloaded).
#[test]
fn apt_options_and_sources_as_apt_reads_them() {
    let c = Container::boot(unpack(&rootfs_tar("dkms")));
    std::fs::write(
        c.root().join("root/apt.toml"),
        "[apt]\noptions = { \"Acquire::ForceIPv4\" = true, \"Dpkg::Options\" = [\"--force-confdef\", \"--force-confold\"] }\n\n\
         [[apt.sources]]\nname = \"backports\"\nuris = [\"http://deb.debian.org/debian\"]\nsuites = [\"trixie-backports\"]\n\
         components = [\"main\"]\nsigned_by = \"/usr/share/keyrings/debian-archive-keyring.gpg\"\n",
    )
    .unwrap();
    let o = c.exec(&["guestprep", "apply", "--json", "--policy", "/root/apt.toml"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let rep = json(&o);
    assert_eq!(item(&rep, "apt:options")["status"], "compliant");
    assert_eq!(item(&rep, "apt:source:backports")["status"], "compliant");
    let dump = stdout(&c.exec(&["apt-config", "dump"]));
    assert!(dump.contains("Acquire::ForceIPv4 \"true\";"), "{dump}");
    // apt prints a key in the case it first saw it (its own `DPkg`): keys ignore case.
    assert!(
        dump.to_ascii_lowercase()
            .contains("dpkg::options:: \"--force-confdef\";"),
        "{dump}"
    );
    let uris = stdout(&c.exec(&["apt-get", "--print-uris", "update"]));
    assert!(
        uris.contains("dists/trixie-backports/InRelease"),
        "apt reads the source: {uris}"
    );

    // A later file overrides one option: apt and guestprep agree on the value and who set it.
    std::fs::write(
        c.root().join("etc/apt/apt.conf.d/99site"),
        "Acquire::ForceIPv4 \"false\";\n",
    )
    .unwrap();
    let dump = stdout(&c.exec(&["apt-config", "dump"]));
    assert!(dump.contains("Acquire::ForceIPv4 \"false\";"), "{dump}");
    let o = c.exec(&[
        "guestprep",
        "verify",
        "--json",
        "--only",
        "apt",
        "--policy",
        "/root/apt.toml",
    ]);
    assert_eq!(code(&o), 1);
    let it = item(&json(&o), "apt:options").clone();
    assert!(
        it["message"]
            .as_str()
            .unwrap()
            .contains("Acquire::ForceIPv4 is \"false\" from /etc/apt/apt.conf.d/99site:1"),
        "{it}"
    );
    // A source that leaves the policy leaves no file.
    std::fs::write(c.root().join("root/apt.toml"), "[apt]\n").unwrap();
    let o = c.exec(&["guestprep", "apply", "--json", "--policy", "/root/apt.toml"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(
        !c.root()
            .join("etc/apt/sources.list.d/guestprep-backports.sources")
            .exists()
    );
    assert!(!c.root().join("etc/apt/apt.conf.d/90guestprep").exists());
}
