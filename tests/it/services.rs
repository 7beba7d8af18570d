//! Running services follow their configuration, against real daemons: the VM test root (sshd,
//! chrony, containerd) booted with systemd-nspawn, guestprep inside it. Each claim is checked
//! independently of guestprep: a real `ssh -c aes128-ctr` to the container's sshd, containerd's
//! and chronyd's main PIDs, `systemctl show -p DropInPaths/NeedDaemonReload`. One boot for all.

use crate::common;
use common::container::{Container, rootfs_tar, unpack};
use common::*;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Ciphers without aes128-ctr (which sshd's defaults accept).
const SSH: &str = r#"
[ssh]
ciphers = ["aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"]
"#;

const CONTAINERD_V1: &str = "# test v1\nversion = 2\n";
const CONTAINERD_V2: &str = "# test v2\nversion = 2\n";

/// chrony refuses to run in a container (ConditionCapability=CAP_SYS_TIME): a drop-in lets it
/// run without touching the clock, and `now` starts it (only it).
fn policy(ssh_restart: bool, containerd: &str, chrony_server: &str) -> String {
    format!(
        r#"{SSH}restart = {ssh_restart}

[chrony]
servers = ["{chrony_server}"]

[[files]]
path = "/etc/containerd/config.toml"
content = """{containerd}"""
restart = ["containerd.service"]

[units]
enable = ["chrony.service", "containerd.service"]
now = ["chrony.service"]

[[units.dropins]]
unit = "chrony.service"
name = "container"
content = """[Unit]
ConditionCapability=
[Service]
ExecStart=
ExecStart=!/usr/sbin/chronyd -F 0 -x
"""
"#
    )
}

fn write_policy(root: &Path, name: &str, text: &str) -> String {
    std::fs::write(root.join("root").join(name), text).unwrap();
    format!("/root/{name}")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real SSH client offering only `cipher`: Ok if sshd accepted the cipher (authentication then
/// fails, as no key is given), Err with ssh's words if it refused it.
fn ssh_cipher(c: &Container, port: u16, cipher: &str) -> Result<(), String> {
    let o = c.exec(&[
        "ssh",
        "-c",
        cipher,
        "-p",
        &port.to_string(),
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "ConnectTimeout=10",
        "nobody@127.0.0.1",
        "true",
    ]);
    let err = stderr(&o);
    if err.contains("no matching cipher") {
        Err(err)
    } else if err.contains("Permission denied") {
        Ok(())
    } else {
        panic!("ssh gave neither answer: {err}")
    }
}

fn main_pid(c: &Container, unit: &str) -> String {
    let o = c.exec(&["systemctl", "show", "-P", "MainPID", unit]);
    stdout(&o).trim().to_string()
}

fn show(c: &Container, prop: &str, unit: &str) -> String {
    let o = c.exec(&["systemctl", "show", "-P", prop, unit]);
    stdout(&o).trim().to_string()
}

fn changes(rep: &serde_json::Value) -> Vec<String> {
    rep["apply"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{}: {}",
                c["item"].as_str().unwrap(),
                c["action"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn services_follow_their_configuration() {
    let dir = unpack(&rootfs_tar("vm"));
    // sshd on a free loopback port: the container shares the host's network.
    let port = free_port();
    std::fs::write(
        dir.path().join("etc/ssh/sshd_config.d/00-test-port.conf"),
        format!("Port {port}\nListenAddress 127.0.0.1\n"),
    )
    .unwrap();
    let c = Container::boot(dir);
    assert_eq!(c.systemctl("is-active", "ssh.service"), "active");
    assert_eq!(c.systemctl("is-active", "containerd.service"), "active");
    assert_eq!(ssh_cipher(&c, port, "aes128-ctr"), Ok(()), "precondition");

    // restart = false: the drop-in is written, sshd is left alone and still takes aes128-ctr;
    // the report says so (pending until a reload or reboot) instead of claiming compliance.
    let p0 = write_policy(
        c.root(),
        "p0.toml",
        &policy(false, CONTAINERD_V1, "127.0.0.1"),
    );
    let sshd_pid = main_pid(&c, "ssh.service");
    let o = c.exec(&["guestprep", "apply", "--json", "--policy", &p0]);
    let rep = json(&o);
    let s = item(&rep, "service:ssh.service");
    assert_eq!(s["status"], "pending-reboot", "{s}");
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("/etc/ssh/sshd_config.d/05-guestprep.conf changed at"),
        "{s}"
    );
    assert_eq!(code(&o), 3, "{}", stdout(&o));
    let accepted = ssh_cipher(&c, port, "aes128-ctr");
    eprintln!("restart = false: sshd still accepts aes128-ctr: {accepted:?}");
    assert_eq!(accepted, Ok(()), "nothing reloaded sshd");
    // The first apply wrote chrony's drop-in, reloaded systemd once, and started chrony.
    let all = changes(&rep);
    eprintln!("first apply: {all:#?}");
    assert_eq!(
        all.iter().filter(|c| c.ends_with("reload systemd")).count(),
        1,
        "one daemon-reload: {all:#?}"
    );
    assert_eq!(c.systemctl("is-active", "chrony.service"), "active");
    let dropins = show(&c, "DropInPaths", "chrony.service");
    assert!(
        dropins
            .split_whitespace()
            .any(|p| p == "/etc/systemd/system/chrony.service.d/container.conf"),
        "systemd loaded the drop-in: {dropins}"
    );
    assert_eq!(
        item(&rep, "unit-dropins:chrony.service")["status"],
        "compliant"
    );
    // containerd ran before apply wrote its config: apply restarted it in the same run.
    assert_eq!(
        item(&rep, "service:containerd.service")["status"],
        "compliant"
    );
    assert!(
        all.contains(&"service:containerd.service: try-restart containerd.service".to_string()),
        "{all:#?}"
    );

    // The default: sshd is reloaded (not restarted: same PID), and refuses aes128-ctr.
    let p1 = write_policy(
        c.root(),
        "p1.toml",
        &policy(true, CONTAINERD_V1, "127.0.0.1"),
    );
    let o = c.exec(&["guestprep", "verify", "--json", "--policy", &p1]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    let s = item(&json(&o), "service:ssh.service").clone();
    assert_eq!(s["status"], "drift", "{s}");
    let o = c.exec(&["guestprep", "apply", "--json", "--policy", &p1]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let rep = json(&o);
    assert_eq!(
        changes(&rep),
        ["service:ssh.service: reload-or-try-restart ssh.service"]
    );
    let refused = ssh_cipher(&c, port, "aes128-ctr");
    eprintln!("after apply: aes128-ctr → {refused:?}");
    assert!(refused.is_err(), "sshd still accepts aes128-ctr");
    assert_eq!(
        ssh_cipher(&c, port, "aes256-gcm@openssh.com"),
        Ok(()),
        "sshd still serves"
    );
    assert_eq!(
        main_pid(&c, "ssh.service"),
        sshd_pid,
        "reloaded, not restarted"
    );

    // A second apply restarts nothing.
    let pids = |c: &Container| {
        ["ssh.service", "containerd.service", "chrony.service"].map(|u| main_pid(c, u))
    };
    let before = pids(&c);
    let o = c.exec(&["guestprep", "apply", "--json", "--policy", &p1]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert_eq!(changes(&json(&o)), Vec::<String>::new());
    assert_eq!(pids(&c), before, "nothing restarted");

    // containerd's config changes: one restart, a new PID; chrony's too, in the same run.
    let p2 = write_policy(
        c.root(),
        "p2.toml",
        &policy(true, CONTAINERD_V2, "127.0.0.2"),
    );
    let o = c.exec(&["guestprep", "apply", "--json", "--policy", &p2]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let all = changes(&json(&o));
    assert!(
        all.contains(&"service:containerd.service: try-restart containerd.service".to_string()),
        "{all:#?}"
    );
    assert!(
        all.contains(&"service:chrony.service: try-restart chrony.service".to_string()),
        "{all:#?}"
    );
    let after = pids(&c);
    eprintln!("PIDs (ssh, containerd, chrony) before {before:?}, after {after:?}");
    assert_eq!(after[0], before[0], "ssh untouched");
    assert_ne!(after[1], before[1], "containerd restarted");
    assert_ne!(after[2], before[2], "chrony restarted");

    // A file changed behind the running daemon (same content, newer mtime): verify says the
    // daemon runs an older configuration, naming the file; apply restarts it.
    let o = c.exec(&["touch", "/etc/containerd/config.toml"]);
    assert_eq!(code(&o), 0);
    let o = c.exec(&["guestprep", "verify", "--json", "--policy", &p2]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    let s = item(&json(&o), "service:containerd.service").clone();
    assert_eq!(s["status"], "drift", "{s}");
    let msg = s["message"].as_str().unwrap();
    assert!(
        msg.contains("/etc/containerd/config.toml changed at")
            && msg.contains("systemctl restart containerd.service"),
        "{msg}"
    );
    let o = c.exec(&["guestprep", "apply", "--policy", &p2]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert_ne!(main_pid(&c, "containerd.service"), after[1], "restarted");

    // A drop-in edited behind systemd's back: NeedDaemonReload, drift; apply reloads.
    std::fs::write(
        c.root()
            .join("etc/systemd/system/chrony.service.d/container.conf"),
        "# edited\n",
    )
    .unwrap();
    assert_eq!(show(&c, "NeedDaemonReload", "chrony.service"), "yes");
    let o = c.exec(&["guestprep", "verify", "--json", "--policy", &p2]);
    let rep = json(&o);
    assert_eq!(item(&rep, "unit-dropins:chrony.service")["status"], "drift");
    let o = c.exec(&["guestprep", "apply", "--json", "--policy", &p2]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert_eq!(show(&c, "NeedDaemonReload", "chrony.service"), "no");

    // `sshd -t` rejects the new drop-in (a clone's first boot before its host keys exist): the
    // old file comes back, with its content and its mode, and sshd is not reloaded.
    let dropin = c.root().join("etc/ssh/sshd_config.d/05-guestprep.conf");
    let old = std::fs::read(&dropin).unwrap();
    std::fs::set_permissions(&dropin, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = c.exec(&[
        "sh",
        "-c",
        "mkdir /root/keys && mv /etc/ssh/ssh_host_* /root/keys/",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let t = c.exec(&["/usr/sbin/sshd", "-t"]);
    eprintln!(
        "sshd -t without host keys: exit {} {}",
        code(&t),
        stderr(&t).trim()
    );
    assert_ne!(code(&t), 0, "precondition: sshd -t fails without host keys");
    let other = SSH.replace(
        r#"ciphers = ["aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"]"#,
        r#"ciphers = ["aes256-gcm@openssh.com"]"#,
    );
    let p3 = write_policy(c.root(), "p3.toml", &other);
    let o = c.exec(&["guestprep", "apply", "--json", "--policy", &p3]);
    assert_eq!(code(&o), 4, "{}", stdout(&o));
    let i = item(&json(&o), "file:/etc/ssh/sshd_config.d/05-guestprep.conf").clone();
    assert_eq!(i["status"], "error", "{i}");
    assert!(
        i["message"]
            .as_str()
            .unwrap()
            .contains("rejected by validation; previous version restored"),
        "{i}"
    );
    assert_eq!(
        std::fs::read(&dropin).unwrap(),
        old,
        "the old content is back"
    );
    let mode = std::fs::metadata(&dropin).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "the old mode is back");
    assert_eq!(main_pid(&c, "ssh.service"), sshd_pid, "sshd untouched");
    let o = c.exec(&["sh", "-c", "mv /root/keys/* /etc/ssh/"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

/// ssh.service is active, and so /run/sshd (its RuntimeDirectory) exists: what `sshd -t` and
/// `sshd -T` need. Boot waited for the unit's start job, so this is settled; the journal says why
/// when it is not.
fn assert_sshd_running(c: &Container) {
    let state = c.systemctl("is-active", "ssh.service");
    let journal = stdout(&c.exec(&["journalctl", "-u", "ssh.service", "--no-pager", "-o", "cat"]));
    assert_eq!(state, "active", "ssh.service after boot: {journal}");
}

/// `[ssh] settings`: sshd keeps the first value it reads. guestprep's `05-` drop-in sorts before
/// cloud-init's `50-cloud-init.conf` (which sets `PasswordAuthentication yes`), so the policy's
/// value wins there; a site file sorted earlier wins over guestprep, and the item says which
/// file:line. Every verdict is checked against what the real sshd reads (`sshd -T`). Then, as
/// on a clone whose socket-activated sshd never ran, without /run/sshd: apply makes it for
/// `sshd -t` and says so.
#[test]
fn ssh_settings_first_value_wins_as_sshd_reads_it() {
    let dir = unpack(&rootfs_tar("vm"));
    let d = dir.path().join("etc/ssh/sshd_config.d");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("50-cloud-init.conf"), "PasswordAuthentication yes\n").unwrap();
    std::fs::write(d.join("01-site.conf"), "PermitRootLogin yes\n").unwrap();
    // Its own network: its sshd's port 22 is not the host's, which another test's container (or
    // the host) may hold.
    let c = Container::boot_isolated(dir);
    assert_sshd_running(&c);
    let pol = write_policy(
        c.root(),
        "ssh.toml",
        "[ssh]\nsettings = { PermitRootLogin = \"prohibit-password\", PasswordAuthentication = false, ClientAliveInterval = 300, X11Forwarding = \"no\" }\n",
    );
    let o = c.exec(&["guestprep", "apply", "--json", "--policy", &pol]);
    assert_eq!(
        code(&o),
        4,
        "drift remains (01-site.conf wins): {}",
        stdout(&o)
    );
    let rep = json(&o);
    let real = c.sshd_t();
    for (kw, lower) in [
        ("PermitRootLogin", "permitrootlogin"),
        ("PasswordAuthentication", "passwordauthentication"),
        ("ClientAliveInterval", "clientaliveinterval"),
        ("X11Forwarding", "x11forwarding"),
    ] {
        let it = item(&rep, &format!("ssh:{kw}"));
        let said = it["actual"][kw]["value"]
            .as_str()
            .unwrap_or("")
            .to_ascii_lowercase();
        let sshd = real.get(lower).cloned().unwrap_or_default();
        eprintln!(
            "{kw}: guestprep {} ({said} from {}), sshd -T {sshd}",
            it["status"], it["actual"][kw]["from"]
        );
        assert_eq!(said, sshd, "guestprep's effective {kw} is not sshd's");
    }
    assert_eq!(
        item(&rep, "ssh:PasswordAuthentication")["status"],
        "compliant"
    );
    assert_eq!(
        real["passwordauthentication"], "no",
        "05-guestprep.conf wins over cloud-init's 50-"
    );
    let root_login = item(&rep, "ssh:PermitRootLogin");
    assert_eq!(root_login["status"], "drift");
    assert!(
        root_login["message"]
            .as_str()
            .unwrap()
            .contains("PermitRootLogin is yes from /etc/ssh/sshd_config.d/01-site.conf:1"),
        "{root_login}"
    );
    // Without the site's file, the policy's value is the one sshd uses.
    std::fs::remove_file(c.root().join("etc/ssh/sshd_config.d/01-site.conf")).unwrap();
    let o = c.exec(&[
        "guestprep",
        "verify",
        "--json",
        "--only",
        "ssh",
        "--policy",
        &pol,
    ]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    // sshd -T prints prohibit-password by its older alias.
    assert_eq!(c.sshd_t()["permitrootlogin"], "without-password");

    // Stopped, ssh.service takes /run/sshd with it (Debian has no tmpfiles entry for it), and
    // `sshd -t` refuses any configuration: a fresh socket-activated clone looks like this.
    let o = c.exec(&["systemctl", "stop", "ssh.service"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_ne!(
        code(&c.exec(&["test", "-e", "/run/sshd"])),
        0,
        "precondition"
    );
    let t = c.exec(&["/usr/sbin/sshd", "-t"]);
    eprintln!(
        "sshd -t without /run/sshd: exit {} {}",
        code(&t),
        stderr(&t).trim()
    );
    assert!(stderr(&t).contains("Missing privilege separation directory: /run/sshd"));
    let pol2 = write_policy(
        c.root(),
        "ssh2.toml",
        "[ssh]\nsettings = { PermitRootLogin = \"prohibit-password\", ClientAliveInterval = 600 }\n",
    );
    let o = c.exec(&["guestprep", "apply", "--json", "--policy", &pol2]);
    let rep = json(&o);
    let file = "file:/etc/ssh/sshd_config.d/05-guestprep.conf";
    assert_eq!(item(&rep, file)["status"], "compliant", "{}", stdout(&o));
    let made = changes(&rep);
    eprintln!(
        "apply without /run/sshd: exit {}, changes {made:?}",
        code(&o)
    );
    assert_eq!(
        made.iter()
            .filter(|c| c.starts_with(file))
            .collect::<Vec<_>>(),
        [
            &format!("{file}: create directory /run/sshd (0755)"),
            &format!("{file}: update /etc/ssh/sshd_config.d/05-guestprep.conf"),
        ]
    );
    let details = rep["apply"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["item"] == file && c["action"].as_str().unwrap().starts_with("update"))
        .map(|c| c["details"].to_string())
        .unwrap_or_default();
    assert!(
        details.contains("accepted by `/usr/sbin/sshd -t`"),
        "{details}"
    );
    let st = stdout(&c.exec(&["stat", "-c", "%F %a %U:%G", "/run/sshd"]));
    assert_eq!(st.trim(), "directory 755 root:root");
    assert_eq!(c.sshd_t()["clientaliveinterval"], "600");
    // ssh.service takes the directory over when it starts again.
    let o = c.exec(&["systemctl", "start", "ssh.service"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_sshd_running(&c);
}

/// `[chrony] exclusive` and `directives`, checked with what chrony itself reads (`chronyd -p`
/// prints the parsed configuration) and with dpkg's diversions: Debian's pool and DHCP sources
/// are gone, the package's other settings stay, and chrony.conf's own upgrades go to
/// chrony.conf.distrib.
#[test]
fn chrony_uses_only_the_policys_sources() {
    let dir = unpack(&rootfs_tar("vm"));
    // Its own network: its sshd does not take the host's port 22 from another test's container.
    let c = Container::boot_isolated(dir);
    let chronyd_p = |c: &Container| {
        let o = c.exec(&["chronyd", "-p"]);
        assert!(o.status.success(), "chronyd -p: {}", stderr(&o));
        stdout(&o)
    };
    let before = chronyd_p(&c);
    assert!(before.contains("pool 2.debian.pool.ntp.org"), "{before}");
    let pol = write_policy(
        c.root(),
        "chrony.toml",
        "[chrony]\nservers = [\"192.0.2.10\"]\nexclusive = true\ndirectives = [\"log measurements statistics\", \"maxdistance 16.0\"]\nrestart = false\n",
    );
    let o = c.exec(&["guestprep", "verify", "--json", "--policy", &pol]);
    let ex = item(&json(&o), "chrony:exclusive").clone();
    assert_eq!(ex["status"], "drift", "{ex}");
    assert!(
        ex["message"]
            .as_str()
            .unwrap()
            .contains("pool 2.debian.pool.ntp.org"),
        "{ex}"
    );
    let o = c.exec(&["guestprep", "apply", "--json", "--policy", &pol]);
    assert!(matches!(code(&o), 0 | 3), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(item(&json(&o), "chrony:exclusive")["status"], "compliant");
    let after = chronyd_p(&c);
    eprintln!("chronyd -p after apply:\n{after}");
    assert!(after.contains("server 192.0.2.10 iburst"), "{after}");
    assert!(!after.contains("pool 2.debian.pool.ntp.org"), "{after}");
    assert!(!after.contains("sourcedir"), "{after}");
    assert!(after.contains("log measurements statistics") && after.contains("maxdistance 16.0"));
    assert!(
        after.contains("driftfile /var/lib/chrony/chrony.drift"),
        "Debian's other settings stay"
    );
    let div = stdout(&c.exec(&["dpkg-divert", "--list", "/etc/chrony/chrony.conf"]));
    assert!(div.contains("/etc/chrony/chrony.conf.distrib"), "{div}");
    let o = c.exec(&["guestprep", "apply", "--json", "--policy", &pol]);
    assert_eq!(
        json(&o)["apply"]["changes"].as_array().unwrap().len(),
        0,
        "{}",
        stdout(&o)
    );
}
