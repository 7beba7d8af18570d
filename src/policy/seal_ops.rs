//! `[seal] operations` and `seal --operations`: the named operations (virt-sysprep's names where
//! the meaning is the same; `guestprep seal` carries them out) and choosing them:
//! `defaults,-logfiles,+user-ssh-keys`, read left to right.

use std::collections::BTreeSet;

/// One named operation.
pub struct Operation {
    pub name: &'static str,
    /// In `defaults`.
    pub default: bool,
    pub about: &'static str,
}

/// Every operation, in the order they run.
pub const OPERATIONS: &[Operation] = &[
    Operation {
        name: "ssh-hostkeys",
        default: true,
        about: "SSH host keys (/etc/ssh/ssh_host_*); guestprep-ssh-keygen.service makes new ones before sshd",
    },
    Operation {
        name: "machine-id",
        default: true,
        about: "/etc/machine-id emptied (or `uninitialized`, [seal] machine_id) and /var/lib/dbus/machine-id removed: systemd makes a new ID at boot",
    },
    Operation {
        name: "cloud-init",
        default: true,
        about: "cloud-init's state and seed (/var/lib/cloud/*), its logs, and what `cloud-init clean --logs --seed --configs all` removes: the network configs it wrote (netplan, ifupdown, networkd, NetworkManager's connections and conf.d), sshd_config.d/50-cloud-init.conf, its /etc/fstab entries (comment=cloudconfig)",
    },
    Operation {
        name: "logfiles",
        default: true,
        about: "the journal's files, rotated logs under /var/log removed, the other files under /var/log (wtmp, btmp, lastlog too) truncated",
    },
    Operation {
        name: "bash-history",
        default: true,
        about: "~/.bash_history of root, of every user in /etc/passwd, and /home/*/.bash_history",
    },
    Operation {
        name: "tmp-files",
        default: true,
        about: "what is in /tmp and /var/tmp (on a live system, not the systemd-private-* directories of running services)",
    },
    Operation {
        name: "package-manager-cache",
        default: true,
        about: "apt's downloaded packages (/var/cache/apt/archives) and its binary caches (/var/cache/apt/*.bin)",
    },
    Operation {
        name: "package-manager-lists",
        default: false,
        about: "apt's package lists (/var/lib/apt/lists): smaller template, but clones need `apt update` before installing",
    },
    Operation {
        name: "dhcp-client-state",
        default: true,
        about: "DHCP leases (dhclient, dhcpcd, NetworkManager)",
    },
    Operation {
        name: "random-seed",
        default: true,
        about: "the saved random seed (/var/lib/systemd/random-seed, /var/lib/urandom/random-seed): clones must not share it",
    },
    Operation {
        name: "crash-data",
        default: true,
        about: "crash dumps and core files (/var/crash, /var/lib/systemd/coredump)",
    },
    Operation {
        name: "guestprep-state",
        default: true,
        about: "guestprep's report, apply stamp and Prometheus textfile (the clone's daemon writes its own)",
    },
    Operation {
        name: "net-hostname",
        default: false,
        about: "/etc/hostname emptied: the clone takes its name from DHCP or cloud-init",
    },
    Operation {
        name: "kubernetes",
        default: false,
        about: "Kubernetes node identity: kubeadm's kubeconfigs (/etc/kubernetes/kubelet.conf, admin.conf, …), /etc/kubernetes/pki, /var/lib/kubelet/pki, etcd's member data, static pod manifests, K3s's node password and certificates; the item kubernetes:identity lists them",
    },
    Operation {
        name: "user-ssh-keys",
        default: false,
        about: "~/.ssh/authorized_keys of the users named in [seal] user_ssh_keys (a temporary master key)",
    },
    Operation {
        name: "build-ssh-keys",
        default: false,
        about: "the build's temporary keys ([seal] build_ssh_keys: comment or SHA256 fingerprint) taken out of every user's and root's authorized_keys, the other keys kept",
    },
];

/// The items an operation settles: seal's gate does not refuse for their drift when the
/// operation is selected (the seal removes what they report).
pub const SETTLES: &[(&str, &str)] = &[("kubernetes", "kubernetes:identity")];

/// The `after_help` of `guestprep seal`: every operation, with its default (the man page's
/// OPERATIONS section).
pub fn operations_help() -> String {
    let mut s = String::from("Operations:\n");
    for op in OPERATIONS {
        s.push_str(&format!(
            "  {} ({})  {}\n",
            op.name,
            if op.default { "default" } else { "off" },
            op.about
        ));
    }
    s
}

/// Checks one entry of an operation list (`defaults`, `all`, `NAME`, `+NAME`, `-NAME`).
pub fn check_spec(entry: &str) -> Result<(), String> {
    let name = entry.trim_start_matches(['+', '-']);
    if (entry == name && matches!(name, "defaults" | "default" | "all"))
        || OPERATIONS.iter().any(|o| o.name == name)
    {
        return Ok(());
    }
    let names: Vec<&str> = OPERATIONS.iter().map(|o| o.name).collect();
    let mut m = format!("unknown seal operation `{name}`");
    if let Some(c) = crate::text::closest(name, &names) {
        m.push_str(&format!(" (did you mean `{c}`?)"));
    }
    m.push_str("; `guestprep seal --list` shows them");
    Err(m)
}

/// The operations a list selects, applied left to right from nothing (as virt-sysprep's
/// `--operations`); an empty list means `defaults`.
pub fn select(spec: &[String]) -> Result<BTreeSet<&'static str>, String> {
    let mut on = BTreeSet::new();
    if spec.is_empty() {
        on.extend(OPERATIONS.iter().filter(|o| o.default).map(|o| o.name));
    }
    for entry in spec {
        check_spec(entry)?;
        match entry.as_str() {
            "defaults" | "default" => {
                on.extend(OPERATIONS.iter().filter(|o| o.default).map(|o| o.name))
            }
            "all" => on.extend(OPERATIONS.iter().map(|o| o.name)),
            e => {
                let name = e.trim_start_matches(['+', '-']);
                let op = OPERATIONS.iter().find(|o| o.name == name).expect("checked");
                if e.starts_with('-') {
                    on.remove(op.name);
                } else {
                    on.insert(op.name);
                }
            }
        }
    }
    Ok(on)
}

/// The chosen operations in the order they run (the order of [`OPERATIONS`]).
pub fn ordered(ops: &BTreeSet<&'static str>) -> Vec<&'static str> {
    OPERATIONS
        .iter()
        .map(|o| o.name)
        .filter(|n| ops.contains(n))
        .collect()
}

/// Splits `--operations a,b,-c` into entries.
pub fn split_spec(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(String::from)
        .collect()
}
