//! The seal fixtures several test files share: a converged root holding every kind of state a
//! default seal removes, the user's files beside them, a directory a package owns, and symlink
//! traps that point out of the root.

use super::*;
use std::os::unix::fs::symlink;
use std::path::Path;

pub fn put(root: &Path, abs: &str, content: &str) {
    let p = root.join(abs.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

pub fn exists(root: &Path, abs: &str) -> bool {
    std::fs::symlink_metadata(root.join(abs.trim_start_matches('/'))).is_ok()
}

pub fn content(root: &Path, abs: &str) -> String {
    std::fs::read_to_string(root.join(abs.trim_start_matches('/'))).unwrap()
}

/// What seal removes by default: (path, removed entirely?) — else truncated to empty.
pub const STATE: &[(&str, bool)] = &[
    ("/etc/ssh/ssh_host_ed25519_key", true),
    ("/etc/ssh/ssh_host_ed25519_key.pub", true),
    ("/etc/ssh/ssh_host_rsa_key", true),
    ("/var/lib/dbus/machine-id", true),
    ("/var/lib/cloud/instances/i-0abc/user-data.txt", true),
    ("/var/lib/cloud/seed/nocloud/user-data", true),
    ("/var/lib/cloud/data/instance-id", true),
    ("/var/log/cloud-init.log", true),
    ("/var/log/cloud-init-output.log", true),
    ("/etc/netplan/50-cloud-init.yaml", true),
    ("/etc/network/interfaces.d/50-cloud-init", true),
    ("/etc/systemd/network/10-cloud-init-eth0.network", true),
    ("/var/log/syslog.1", true),
    ("/var/log/dpkg.log.2.gz", true),
    ("/var/log/messages-20260101", true),
    ("/var/log/journal/0123abcd/system.journal", true),
    ("/var/log/journal/0123abcd/user-1000.journal~", true),
    ("/root/.bash_history", true),
    ("/home/alice/.bash_history", true),
    ("/tmp/build.log", true),
    ("/tmp/scratch/deep/file", true),
    ("/var/tmp/leftover", true),
    ("/var/cache/apt/archives/containerd_1.7.24_amd64.deb", true),
    ("/var/cache/apt/archives/partial/x.deb", true),
    ("/var/cache/apt/pkgcache.bin", true),
    ("/var/lib/dhcp/dhclient.eth0.leases", true),
    ("/var/lib/systemd/random-seed", true),
    ("/var/crash/_usr_bin_foo.0.crash", true),
    ("/run/guestprep/report.json", true),
    ("/etc/machine-id", false),
    ("/var/log/syslog", false),
    ("/var/log/wtmp", false),
    ("/var/log/btmp", false),
    ("/var/log/lastlog", false),
    ("/var/log/apt/history.log", false),
];

/// Kept by a default seal, with their content.
pub const KEPT: &[(&str, &str)] = &[
    (
        "/etc/ssh/sshd_config",
        "Include /etc/ssh/sshd_config.d/*.conf\n",
    ),
    ("/etc/ssh/moduli", "moduli\n"),
    ("/etc/netplan/01-site.yaml", "network: {}\n"),
    ("/etc/systemd/network/20-site.network", "[Match]\n"),
    ("/home/alice/notes.txt", "alice's own file\n"),
    (
        "/home/alice/.ssh/authorized_keys",
        "ssh-ed25519 AAAA alice\n",
    ),
    ("/root/.ssh/authorized_keys", "ssh-ed25519 AAAA master\n"),
    ("/var/cache/apt/archives/lock", ""),
    (
        "/var/lib/apt/lists/deb.debian.org_debian_dists_trixie_InRelease",
        "lists\n",
    ),
    ("/etc/hostname", "k8s-template\n"),
    ("/var/lib/dpkg/info/owner.list", "/tmp/owned-dir\n"),
];

/// A converged root with all of the above, plus traps pointing at `outside`.
pub fn stateful_root(outside: &Path) -> tempfile::TempDir {
    let root = converged_root();
    let r = root.path();
    for (p, _) in STATE {
        put(r, p, &format!("state of {p}\n"));
    }
    for (p, c) in KEPT {
        put(r, p, c);
    }
    put(r, "/etc/machine-id", "0123456789abcdef0123456789abcdef\n");
    // journald names its directory after the machine-id.
    put(
        r,
        "/var/log/journal/0123456789abcdef0123456789abcdef/system.journal",
        "journal\n",
    );
    put(
        r,
        "/etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n\
         bob:x:1001:1001::/home/bob:/bin/bash\nnobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n",
    );
    // A directory a package owns: emptied, kept.
    put(r, "/tmp/owned-dir/inside", "x\n");
    // Traps: absolute symlinks to host paths outside the root, where a seal that followed them
    // would truncate or delete the host's files.
    put(outside, "secret.log", "the host's log\n");
    put(outside, ".bash_history", "the host's history\n");
    put(outside, "ssh_host_ed25519_key", "the host's key\n");
    let o = outside.to_str().unwrap();
    symlink(format!("{o}/secret.log"), r.join("var/log/trap.log")).unwrap();
    symlink(o, r.join("var/log/trapdir")).unwrap();
    symlink(o, r.join("tmp/trapdir")).unwrap();
    symlink(o, r.join("home/bob")).unwrap();
    std::fs::create_dir_all(r.join("var/lib/trap")).unwrap();
    symlink(o, r.join("var/crash/link")).unwrap();
    root
}

pub fn seal(root: &Path, extra: &[&str]) -> std::process::Output {
    on_root("seal", root, extra)
}
