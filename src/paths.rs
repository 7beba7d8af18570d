//! The well-known paths of the managed system that several parts share (the daemon's report and
//! apply's stamp, the apply lock, the seal manifest, the download cache), in one place low in the
//! tree, so no part imports another for a constant.

/// The daemon's compliance report (read by the host through the guest agent).
pub const REPORT: &str = "/run/guestprep/report.json";
/// Touched by `apply` after it changed something: the daemon watches it.
pub const APPLIED_STAMP: &str = "/run/guestprep/applied";
/// The apply lock on a running system (offline, the image's root directory is locked instead).
pub const APPLY_LOCK: &str = "/run/guestprep/apply.lock";
/// The seal manifest.
pub const SEAL_MANIFEST: &str = "/var/lib/guestprep/seal.json";
/// Records of DKMS builds that failed (`MODULE_VERSION_KERNEL.json`): not redone while nothing
/// they depend on changed.
pub const DKMS_FAILED_DIR: &str = "/var/lib/guestprep/dkms-failed";
/// What `[[packages.deb]]` installed: `NAME.json` with the version and sha256 of the .deb.
pub const DEB_RECEIPTS_DIR: &str = "/var/lib/guestprep/debs";
/// Downloaded release `.deb`s.
pub const CACHE_DIR: &str = "/var/cache/guestprep";

/// Where guestprep keeps itself: its policy (vendor and admin), its report and lock, its state
/// and cache. `[[files]]` may not manage anything here: a valid policy could install an invalid
/// one, replace the report or the seal manifest, and every later run would fail.
pub const OWN_DIRS: &[&str] = &[
    "/etc/guestprep",
    "/usr/lib/guestprep",
    "/run/guestprep",
    "/var/lib/guestprep",
    "/var/cache/guestprep",
];

/// Kernel file systems: not files a policy can own (writes there are settings, not content; the
/// sections that set them, `[sysctl]` and `[modules]`, exist for that).
pub const KERNEL_DIRS: &[&str] = &["/proc", "/sys", "/dev"];

/// `dir` itself or a path below it.
pub fn is_at_or_under(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The files each section owns and writes whole (the resources name them from here; the policy
/// refuses a `[[files]]` entry at one of them, which two items would rewrite on every run).
pub const SYSCTL_FILE: &str = "/etc/sysctl.d/90-guestprep.conf";
pub const MODULES_LOAD_FILE: &str = "/etc/modules-load.d/guestprep.conf";
pub const MODPROBE_FILE: &str = "/etc/modprobe.d/guestprep.conf";
pub const CHRONY_FILE: &str = "/etc/chrony/conf.d/50-guestprep.conf";
pub const SSHD_FILE: &str = "/etc/ssh/sshd_config.d/05-guestprep.conf";
pub const GRUB_FILE: &str = "/etc/default/grub.d/99-guestprep.cfg";

/// Each owned file and the section that writes it.
pub const SECTION_FILES: &[(&str, &str)] = &[
    (SYSCTL_FILE, "[sysctl]"),
    (MODULES_LOAD_FILE, "[modules]"),
    (MODPROBE_FILE, "[modules]"),
    (CHRONY_FILE, "[chrony]"),
    (SSHD_FILE, "[ssh]"),
    (GRUB_FILE, "[grub]"),
];

/// What makes a Kubernetes node itself, which a template must not carry (clones would share it),
/// and which seal's `kubernetes` operation removes: kubeadm's kubeconfigs and certificates (what
/// `kubeadm reset` removes of /etc/kubernetes), the kubelet's client and serving certificates,
/// etcd's member data, K3s's node password, agent certificates and server TLS.
pub const KUBE_IDENTITY: &[&str] = &[
    "/etc/kubernetes/kubelet.conf",
    "/etc/kubernetes/bootstrap-kubelet.conf",
    "/etc/kubernetes/admin.conf",
    "/etc/kubernetes/super-admin.conf",
    "/etc/kubernetes/controller-manager.conf",
    "/etc/kubernetes/scheduler.conf",
    "/etc/kubernetes/pki",
    "/var/lib/kubelet/pki",
    "/var/lib/etcd/member",
    "/etc/rancher/node/password",
    "/var/lib/rancher/k3s/server/tls",
    "/var/lib/rancher/k3s/agent/client-kubelet.crt",
    "/var/lib/rancher/k3s/agent/client-kubelet.key",
    "/var/lib/rancher/k3s/agent/serving-kubelet.crt",
    "/var/lib/rancher/k3s/agent/serving-kubelet.key",
];

/// Static pod manifest directories: their `*.yaml` and `*.yml` are a control plane's identity.
pub const KUBE_MANIFEST_DIRS: &[&str] = &[
    "/etc/kubernetes/manifests",
    "/var/lib/rancher/k3s/agent/pod-manifests",
];

/// A static pod manifest's name.
pub fn is_manifest(name: &str) -> bool {
    !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
}
