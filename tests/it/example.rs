//! The seed template's configuration as a policy (`examples/seed-template`), applied in a booted
//! Debian 13 root that has the template's packages (the VM test root, in systemd-nspawn), then
//! checked with the programs themselves: `sshd -T` (first value wins, against cloud-init's
//! drop-in), `chronyd -p` (only the policy's sources), `timedatectl`, `locale -a`,
//! `apt-get --print-uris update` (the backports source), `dpkg-query` (the purged package),
//! `containerd config dump` (runc's runtime type and cgroup driver as containerd resolves them).
//! GRUB, kernel modules and sysctls are left to their own tests (a container cannot run
//! update-grub or load modules), and so is qemu-guest-agent's unit (no virtio port here).

use crate::common;
use common::container::{Container, rootfs_tar, unpack};
use common::*;

#[test]
fn the_seed_template_as_a_policy() {
    let dir = unpack(&rootfs_tar("vm"));
    let r = dir.path();
    copy_tree(
        &repo().join("examples/seed-template"),
        &r.join("root/example"),
    );
    // What cloud-init writes on a Debian cloud image, and what the script's sshd edits lost to.
    std::fs::create_dir_all(r.join("etc/ssh/sshd_config.d")).unwrap();
    std::fs::write(
        r.join("etc/ssh/sshd_config.d/50-cloud-init.conf"),
        "PasswordAuthentication yes\n",
    )
    .unwrap();
    // chrony refuses to run in a container (ConditionCapability=CAP_SYS_TIME): let it run
    // without touching the clock.
    let d = r.join("etc/systemd/system/chrony.service.d");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("test.conf"),
        "[Unit]\nConditionCapability=\n[Service]\nExecStart=\nExecStart=!/usr/sbin/chronyd -F 0 -x\n",
    )
    .unwrap();
    // Its own network namespace: the example enables and starts ssh.service, whose port 22 the
    // host (or another test's container) may hold.
    let c = Container::boot_isolated(dir);
    let select = [
        "--skip",
        "grub",
        "--skip",
        "modules",
        "--skip",
        "sysctl",
        "--skip",
        "initramfs",
        "--skip",
        "unit:qemu-guest-agent.service",
    ];
    let run = |verb: &str| {
        let mut a = vec!["guestprep", verb, "--json", "--policy", "/root/example"];
        a.extend(select);
        c.exec(&a)
    };
    let t = std::time::Instant::now();
    let o = run("apply");
    eprintln!("apply of the example took {:?}", t.elapsed());
    assert!(matches!(code(&o), 0 | 3), "{}{}", stdout(&o), stderr(&o));

    let sshd = c.sshd_t();
    // The script's 99-hardening.conf, as sshd resolves it.
    for (k, v) in [
        ("passwordauthentication", "no"),
        ("permitrootlogin", "without-password"),
        ("x11forwarding", "no"),
        ("clientaliveinterval", "300"),
        ("clientalivecountmax", "2"),
        ("usepam", "yes"),
        ("printmotd", "no"),
        ("kbdinteractiveauthentication", "no"),
        (
            "ciphers",
            "chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-gcm@openssh.com",
        ),
        (
            "macs",
            "hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com,umac-128-etm@openssh.com",
        ),
        (
            "kexalgorithms",
            "curve25519-sha256,curve25519-sha256@libssh.org,diffie-hellman-group16-sha512,diffie-hellman-group18-sha512",
        ),
    ] {
        assert_eq!(sshd.get(k).map(String::as_str), Some(v), "sshd -T {k}");
    }
    let chrony = stdout(&c.exec(&["chronyd", "-p"]));
    // The script's chrony.conf, as chronyd reads it.
    for want in [
        "pool time.cloudflare.com iburst maxsources 4",
        "pool time.google.com iburst maxsources 4",
        "pool pool.ntp.org iburst maxsources 4",
        "allow 10.0.0.0/8",
        "allow fc00::/7",
        "allow fd00::/8",
        "driftfile /var/lib/chrony/drift",
        "makestep 1 3",
        "log measurements statistics tracking",
        "rtcsync",
    ] {
        assert!(chrony.contains(want), "chronyd -p lacks {want}:\n{chrony}");
    }
    assert!(
        !chrony.contains("sourcedir"),
        "DHCP sources still read:\n{chrony}"
    );
    assert_eq!(
        chrony.matches("pool ").count(),
        3,
        "Debian's pool line is not read:\n{chrony}"
    );
    let tz = stdout(&c.exec(&["timedatectl", "show", "-p", "Timezone", "--value"]));
    assert_eq!(tz.trim(), "America/Los_Angeles");
    assert!(stdout(&c.exec(&["locale", "-a"])).contains("en_US.utf8"));
    let uris = stdout(&c.exec(&["apt-get", "--print-uris", "update"]));
    assert!(uris.contains("dists/trixie-backports/InRelease"), "{uris}");
    let ifupdown = c.exec(&["dpkg-query", "-W", "-f=${db:Status-Status}", "ifupdown"]);
    assert!(
        !stdout(&ifupdown).contains("installed") || stdout(&ifupdown).contains("not-installed")
    );
    // The script's networkd-wait-online override, as systemd loaded it.
    let wait = stdout(&c.exec(&[
        "systemctl",
        "show",
        "-p",
        "ExecStart",
        "--value",
        "systemd-networkd-wait-online.service",
    ]));
    assert!(wait.contains("--timeout=20 --any"), "{wait}");
    // containerd 1.7 as Debian 13 ships it resolves runc as the script configured it (without a
    // runtime_type a pod sandbox fails); tests/it/containerd.rs asks its CRI as well.
    let dump = stdout(&c.exec(&["containerd", "config", "dump"]));
    let dump: toml::Table = dump.parse().expect("containerd config dump is TOML");
    let cri = &dump["plugins"]["io.containerd.grpc.v1.cri"];
    let runc = &cri["containerd"]["runtimes"]["runc"];
    assert_eq!(runc["runtime_type"].as_str(), Some("io.containerd.runc.v2"));
    assert_eq!(runc["options"]["SystemdCgroup"].as_bool(), Some(true));
    assert_eq!(
        cri["sandbox_image"].as_str(),
        Some("registry.k8s.io/pause:3.9")
    );
    assert_eq!(cri["containerd"]["snapshotter"].as_str(), Some("overlayfs"));

    // What guestprep reports is what the programs said, and a second apply changes nothing.
    let rep = json(&run("verify"));
    let bad: Vec<String> = rep["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["status"] == "drift" || i["status"] == "error")
        .map(|i| format!("{} {} {}", i["id"], i["status"], i["message"]))
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
    let o = run("apply");
    assert_eq!(
        json(&o)["apply"]["changes"].as_array().unwrap().len(),
        0,
        "{}",
        stdout(&o)
    );
}
