//! `[kubernetes]` on real parts: the kernel configurations Debian 13 ships (generic and cloud
//! flavours, from the testbed roots) against kubeadm's list, checked independently with grep; a
//! booted Debian 13 root's real containerd asked over its real CRI socket (by guestprep, and by
//! the Python gRPC client beside it), with runc's `SystemdCgroup` false (drift) and true; and
//! the NFD feature file the running daemon writes, read line by line against NFD's documented
//! local-source format and expiry (no NFD here: nfd-worker itself is not run), rewritten after a
//! report change.

use crate::common;
use common::container::{Container, rootfs_tar, unpack};
use common::daemon::Daemon;
use common::*;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

/// k8s.io/system-validators v1.12.1 `DefaultSysSpec` (Required and RequiredCgroupsV2), written
/// out again here for the independent check.
const KUBEADM_REQUIRED: &[&str] = &[
    "NAMESPACES",
    "NET_NS",
    "PID_NS",
    "IPC_NS",
    "UTS_NS",
    "CPUSETS",
    "MEMCG",
    "INET",
    "EXT4_FS",
    "PROC_FS",
    "NETFILTER_XT_TARGET_REDIRECT",
    "NETFILTER_XT_MATCH_COMMENT",
    "FAIR_GROUP_SCHED",
    "CGROUPS",
    "CGROUP_BPF",
    "CGROUP_PIDS",
    "CGROUP_SCHED",
];

fn policy_dir(text: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("k.toml"), text).unwrap();
    d
}

/// grep's verdict: the options of the list the file does not set to y or m.
fn grep_lacks(config: &Path) -> Vec<String> {
    KUBEADM_REQUIRED
        .iter()
        .filter(|o| {
            !Command::new("grep")
                .arg("-Eq")
                .arg(format!("^CONFIG_{o}=(y|m)$"))
                .arg(config)
                .status()
                .unwrap()
                .success()
        })
        .map(|o| format!("CONFIG_{o}"))
        .collect()
}

#[test]
fn debians_generic_and_cloud_kernel_configs_against_kubeadms_list() {
    for (set, kver) in [
        ("dkms", "6.12.117+deb13-amd64"),
        ("cloudkernel", "6.12.117+deb13-cloud-amd64"),
    ] {
        let root = tempfile::tempdir().unwrap();
        let member = format!("./boot/config-{kver}");
        let st = Command::new("tar")
            .arg("-xf")
            .arg(rootfs_tar(set))
            .arg("-C")
            .arg(root.path())
            .arg(&member)
            .status()
            .unwrap();
        assert!(st.success(), "{member} is not in the {set} root");
        std::fs::create_dir_all(root.path().join("usr/lib/modules").join(kver)).unwrap();
        let pol = policy_dir("[kubernetes]\n");
        let t = Instant::now();
        let o = guestprep(&[
            "verify",
            "--json",
            "--root",
            root.path().to_str().unwrap(),
            "--policy",
            pol.path().to_str().unwrap(),
            "--only",
            "kubernetes:kernel-config:*",
        ]);
        let r = json(&o);
        let it = item(&r, &format!("kubernetes:kernel-config:{kver}"));
        let lacks = grep_lacks(&root.path().join(&member[2..]));
        eprintln!(
            "{set} {kver}: guestprep says {} ({}) in {:?}; grep finds missing {lacks:?}",
            it["status"],
            it["message"],
            t.elapsed()
        );
        let want = if lacks.is_empty() {
            "compliant"
        } else {
            "drift"
        };
        assert_eq!(it["status"], want, "{it:#}");
        for l in &lacks {
            assert!(
                it["message"].as_str().unwrap().contains(l.as_str()),
                "{it:#}"
            );
        }
    }
}

/// The CRI's Status through tests/it/common/cri_status.py, on the host, over the container's
/// socket (reached through /proc/PID/root).
fn python_cri_status(c: &Container) -> serde_json::Value {
    let sock = format!("/proc/{}/root/run/containerd/containerd.sock", c.pid);
    let o = Command::new("/usr/bin/python3")
        .arg(repo().join("tests/it/common/cri_status.py"))
        .arg(&sock)
        .output()
        .expect("/usr/bin/python3 is needed (apt-get install python3-grpcio)");
    assert!(o.status.success(), "cri_status.py: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

const RUNC: &str = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  default_runtime_name = \"runc\"\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n  SystemdCgroup = ";

fn cri_item(c: &Container) -> serde_json::Value {
    let t = Instant::now();
    let o = c.exec(&[
        "guestprep",
        "verify",
        "--json",
        "--policy",
        "/root/k.toml",
        "--only",
        "kubernetes:cri",
    ]);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&o), stderr(&o)));
    let it = item(&r, "kubernetes:cri").clone();
    eprintln!(
        "kubernetes:cri in {:?}: {} {}",
        t.elapsed(),
        it["status"],
        it["message"]
    );
    it
}

fn set_runc(c: &Container, systemd: bool) {
    let cfg = format!("{RUNC}{systemd}\n");
    std::fs::write(c.root().join("etc/containerd/config.toml"), cfg).unwrap();
    let o = c.exec(&["systemctl", "restart", "containerd.service"]);
    assert!(o.status.success(), "restart containerd: {}", stderr(&o));
    // The CRI serves once containerd has booted: wait for the socket to answer.
    let deadline = Instant::now() + Duration::from_secs(30);
    while c
        .exec(&["test", "-S", "/run/containerd/containerd.sock"])
        .status
        .code()
        != Some(0)
    {
        assert!(
            Instant::now() < deadline,
            "containerd's socket never appeared"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn containerds_cri_answers_and_its_cgroup_driver_is_judged() {
    let dir = unpack(&rootfs_tar("vm"));
    std::fs::write(dir.path().join("root/k.toml"), "[kubernetes]\n").unwrap();
    let c = Container::boot_isolated(dir);
    set_runc(&c, false);
    let py = python_cri_status(&c);
    let ready = py["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["type"] == "RuntimeReady" && x["status"] == true);
    let runc =
        py["info"]["config"]["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"].clone();
    eprintln!("python's CRI Status: RuntimeReady {ready}, runc SystemdCgroup {runc}");
    let it = cri_item(&c);
    assert_eq!(it["status"], "drift", "{it:#}");
    let msg = it["message"].as_str().unwrap();
    assert!(msg.contains("SystemdCgroup is false"), "{msg}");
    let gp_ready = it["actual"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["type"] == "RuntimeReady" && x["status"] == true);
    assert_eq!(
        gp_ready, ready,
        "guestprep's and python's RuntimeReady: {it:#}"
    );
    assert_eq!(
        it["actual"]["runningCgroupDriver"],
        if runc == true { "systemd" } else { "cgroupfs" }
    );
    assert!(
        it["remediation"]
            .as_str()
            .unwrap()
            .contains("SystemdCgroup = true")
    );

    set_runc(&c, true);
    let py = python_cri_status(&c);
    let runc =
        py["info"]["config"]["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"].clone();
    eprintln!("python's CRI Status after SystemdCgroup = true: runc SystemdCgroup {runc}");
    assert_eq!(runc, true);
    let it = cri_item(&c);
    assert_eq!(it["status"], "compliant", "{it:#}");
    assert_eq!(it["actual"]["runningCgroupDriver"], "systemd");

    // A kubelet configured for cgroupfs disagrees with the runtime.
    std::fs::create_dir_all(c.root().join("var/lib/kubelet")).unwrap();
    std::fs::write(c.root().join("var/lib/kubelet/config.yaml"), "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: cgroupfs\n").unwrap();
    let it = cri_item(&c);
    assert_eq!(it["status"], "drift", "{it:#}");
    assert!(
        it["message"]
            .as_str()
            .unwrap()
            .contains("the kubelet's cgroupDriver is cgroupfs"),
        "{it:#}"
    );

    // The socket gone: the CRI does not answer, named.
    let o = c.exec(&["systemctl", "stop", "containerd.service"]);
    assert!(o.status.success());
    let it = cri_item(&c);
    assert_eq!(it["status"], "drift");
    assert!(
        it["message"]
            .as_str()
            .unwrap()
            .contains("/run/containerd/containerd.sock"),
        "{it:#}"
    );
}

/// NFD's local-source line: `name[=value]`, name `prefix/name` with a label value's rules.
fn valid_label_line(l: &str) -> bool {
    let re = regex::Regex::new(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)=(([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?)$").unwrap();
    re.is_match(l)
}

#[test]
fn the_daemon_publishes_expiring_nfd_labels_and_follows_a_change() {
    let root = converged_root();
    let pol = policies();
    let extra = tempfile::tempdir().unwrap();
    std::fs::write(
        extra.path().join("99-nfd.toml"),
        "[agent]\ninterval = \"20s\"\nnfd = true\n",
    )
    .unwrap();
    let mut d = Daemon::start(root.path(), &[&pol, &extra.path().join("99-nfd.toml")]);
    let file = root
        .path()
        .join("etc/kubernetes/node-feature-discovery/features.d/guestprep");
    let read = |want: &str| -> (String, Duration) {
        let t = Instant::now();
        loop {
            if let Ok(s) = std::fs::read_to_string(&file)
                && s.contains(want)
            {
                return (s, t.elapsed());
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "never {want}: {}",
                std::fs::read_to_string(&file).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    d.wait_report(|r| r["compliant"] == true, "compliant");
    let (text, _) = read("guestprep.io/compliant=true");
    let now = SystemTime::now();
    let mut expiry = None;
    for l in text.lines() {
        if let Some(t) = l.strip_prefix("# +expiry-time=") {
            expiry = Some(humantime::parse_rfc3339(t).expect("RFC 3339"));
        } else if !l.starts_with('#') {
            assert!(valid_label_line(l), "not an NFD label line: {l:?}");
        }
        eprintln!("nfd line: {l}");
    }
    let ahead = expiry
        .expect("an expiry-time directive")
        .duration_since(now)
        .unwrap();
    eprintln!("expires {ahead:?} ahead (3 intervals of 20 s)");
    assert!(
        ahead > Duration::from_secs(50) && ahead <= Duration::from_secs(61),
        "{ahead:?}"
    );
    let pos = |s: &str| text.find(s).unwrap();
    assert!(
        pos("# +expiry-time=") < pos("guestprep.io/compliant="),
        "the directive must precede the labels"
    );
    // No temporary file NFD would read: only dot-files besides ours.
    for e in std::fs::read_dir(file.parent().unwrap()).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(n == "guestprep" || n.starts_with('.'), "{n}");
    }
    // A report change: a managed file removed; the labels follow.
    let t = Instant::now();
    std::fs::remove_file(root.path().join("etc/chrony/conf.d/50-guestprep.conf")).unwrap();
    let (_, took) = read("guestprep.io/compliant=false");
    eprintln!(
        "compliant=false in the NFD file {took:?} after the change ({:?} total)",
        t.elapsed()
    );
    assert!(took < Duration::from_millis(1500), "{took:?}");
    d.stop();
}
