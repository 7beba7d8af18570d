//! containerd reads the `config.toml` guestprep writes the way the policy means it, asked of
//! containerd itself: for the seed-template example and for the shipped policy, the file
//! `guestprep apply` writes is given to the real containerd (Debian's package), which resolves it
//! (`containerd config dump`), and then runs with it on a private socket, in throwaway root and
//! state directories, where its CRI's `Status` (what the kubelet asks) reports the runtime it
//! resolved. The config the example shipped before is the control: runc without a
//! `runtime_type`, which is how a pod sandbox failed ("container.Runtime.Name must be set").
//!
//! Not here: a real `RunPodSandbox`, which needs a pause image (none can be downloaded here) and a
//! CNI network.

use crate::common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CRI: &str = "io.containerd.grpc.v1.cri";

/// The example's containerd config before issue 26: runc has options but no runtime type.
const BROKEN: &str = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n  SystemdCgroup = true\n";

/// The config.toml `guestprep apply` writes from `policy` (only that item, on an empty root).
fn written(policy: &Path) -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let o = guestprep(&[
        "apply",
        "--root",
        root.path().to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
        "--only",
        "file:/etc/containerd/config.toml",
    ]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let f = root.path().join("etc/containerd/config.toml");
    assert!(f.is_file(), "{}", stdout(&o));
    (root, f)
}

fn containerd() -> Command {
    assert!(
        Path::new("/usr/bin/containerd").exists(),
        "this test needs Debian's containerd (apt-get install --no-install-recommends containerd)"
    );
    Command::new("/usr/bin/containerd")
}

/// What runc, the sandbox image and the snapshotter resolve to, as containerd's `config dump`
/// prints them (every default filled in).
#[derive(Debug, PartialEq)]
struct Resolved {
    runtime_type: String,
    systemd_cgroup: Option<bool>,
    sandbox_image: String,
    snapshotter: String,
}

fn dump(config: &Path) -> Resolved {
    let o = containerd()
        .arg("--config")
        .arg(config)
        .args(["config", "dump"])
        .output()
        .unwrap();
    assert!(o.status.success(), "config dump: {}", stderr(&o));
    let t: toml::Table = stdout(&o).parse().expect("containerd prints TOML");
    let cri = &t["plugins"][CRI];
    let runc = &cri["containerd"]["runtimes"]["runc"];
    Resolved {
        runtime_type: runc["runtime_type"].as_str().unwrap().to_string(),
        systemd_cgroup: runc
            .get("options")
            .and_then(|o| o.get("SystemdCgroup"))
            .and_then(|v| v.as_bool()),
        sandbox_image: cri["sandbox_image"].as_str().unwrap().to_string(),
        snapshotter: cri["containerd"]["snapshotter"]
            .as_str()
            .unwrap()
            .to_string(),
    }
}

/// A containerd running `config` on a private socket; its root, state and `/opt` (the opt
/// plugin's directory) are throwaway, in a mount namespace of its own. Stopped when dropped.
struct Running {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Running {
    fn start(config: &Path) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let log = std::fs::File::create(d.join("log")).unwrap();
        let bin = containerd().get_program().to_owned();
        // unshare execs sh, which execs containerd: the child's pid is containerd's.
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-ec"])
            .arg("mount -t tmpfs guestprep-test /opt; exec \"$@\"")
            .arg("sh")
            .arg(bin)
            .arg("--config")
            .arg(config)
            .arg("--root")
            .arg(d.join("root"))
            .arg("--state")
            .arg(d.join("state"))
            .arg("--address")
            .arg(d.join("c.sock"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut r = Running { child, dir };
        r.wait_booted();
        r
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn wait_booted(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.log().contains("containerd successfully booted") {
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!("containerd exited ({st}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not boot in 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The CRI's `Status` (verbose), through tests/it/common/cri_status.py.
    fn cri_status(&self) -> serde_json::Value {
        let o = Command::new("/usr/bin/python3")
            .arg(repo().join("tests/it/common/cri_status.py"))
            .arg(self.dir.path().join("c.sock"))
            .output()
            .expect("/usr/bin/python3 is needed (apt-get install python3-grpcio)");
        assert!(
            o.status.success(),
            "CRI Status: {}\ncontainerd:\n{}",
            stderr(&o),
            self.log()
        );
        serde_json::from_slice(&o.stdout).unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// runc as the CRI resolved it, from `Status`'s `config`.
fn cri_runc(status: &serde_json::Value) -> (String, serde_json::Value, String, String) {
    let c = &status["info"]["config"];
    let runc = &c["containerd"]["runtimes"]["runc"];
    (
        runc["runtimeType"].as_str().unwrap_or_default().to_string(),
        runc["options"]["SystemdCgroup"].clone(),
        c["sandboxImage"].as_str().unwrap_or_default().to_string(),
        c["containerd"]["snapshotter"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

fn runtime_ready(status: &serde_json::Value) -> bool {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "RuntimeReady" && c["status"] == true)
}

/// What the seed template's script configured (its containerd `config.toml` heredoc).
fn scripts() -> Resolved {
    Resolved {
        runtime_type: "io.containerd.runc.v2".into(),
        systemd_cgroup: Some(true),
        sandbox_image: "registry.k8s.io/pause:3.9".into(),
        snapshotter: "overlayfs".into(),
    }
}

fn check_policy(policy: &Path) {
    let (_root, config) = written(policy);
    assert_eq!(dump(&config), scripts(), "{}", policy.display());
    let c = Running::start(&config);
    let st = c.cri_status();
    assert!(runtime_ready(&st), "{st:#}");
    let s = scripts();
    assert_eq!(
        cri_runc(&st),
        (
            s.runtime_type,
            serde_json::json!(true),
            s.sandbox_image,
            s.snapshotter
        ),
        "{}: {st:#}",
        policy.display()
    );
}

#[test]
fn the_examples_containerd_config_is_what_containerd_runs() {
    check_policy(&repo().join("examples/seed-template"));
}

#[test]
fn the_shipped_containerd_config_is_what_containerd_runs() {
    check_policy(&policies());
}

/// The control: the config the example had resolves runc to no runtime type at all, in the dump
/// and in the CRI, so the two tests above can fail.
#[test]
fn runc_without_a_runtime_type_is_seen_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("config.toml");
    std::fs::write(&f, BROKEN).unwrap();
    let d = dump(&f);
    assert_eq!(d.runtime_type, "");
    assert_eq!(d.systemd_cgroup, Some(true));
    let c = Running::start(&f);
    let (runtime_type, ..) = cri_runc(&c.cri_status());
    assert_eq!(runtime_type, "");
}
