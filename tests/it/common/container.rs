//! A real Debian 13 system for tests: a cached mmdebstrap root (tests/testbed/rootfs.sh) unpacked
//! into a temp directory and booted with `systemd-nspawn -b` (systemd as PID 1, its own D-Bus).
//! Commands run inside with `nsenter`. No network: the container shares nothing but the host
//! kernel. A test that needs this and cannot get it fails, with the reason.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{BIN, repo};

/// The cached root tarball of a package set, built on first use.
pub fn rootfs_tar(set: &str) -> PathBuf {
    let o = Command::new(repo().join("tests/testbed/rootfs.sh"))
        .arg(set)
        .stderr(Stdio::inherit())
        .output()
        .expect("running tests/testbed/rootfs.sh");
    assert!(
        o.status.success(),
        "building the {set} test root failed (needs root and mmdebstrap; tests/run installs it)"
    );
    PathBuf::from(String::from_utf8(o.stdout).unwrap().trim())
}

/// Unpacks a root tarball into a fresh temp directory (with guestprep in /usr/local/bin).
pub fn unpack(tar: &Path) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("guestprep-root-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(tar)
        .arg("-C")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(st.success(), "unpacking {}", tar.display());
    std::fs::copy(BIN, dir.path().join("usr/local/bin/guestprep")).unwrap();
    dir
}

pub struct Container {
    pub dir: tempfile::TempDir,
    nspawn: Child,
    pub pid: u32,
}

impl Container {
    /// Boots the root with systemd-nspawn and waits until systemd reports `running`. It shares
    /// the host's network: its daemons listen on the host's ports.
    pub fn boot(dir: tempfile::TempDir) -> Container {
        Self::boot_with(dir, &[])
    }

    /// [`Container::boot`] in a network namespace of its own (loopback only): its daemons'
    /// ports are its own. Two VM roots booted on the host's network at once both start sshd on
    /// port 22; the second one's fails ("Address already in use", exit 255, not restarted), and
    /// with it goes /run/sshd, its RuntimeDirectory, which `sshd -t` and `sshd -T` need.
    pub fn boot_isolated(dir: tempfile::TempDir) -> Container {
        Self::boot_with(dir, &["--private-network"])
    }

    /// [`Container::boot`] with more `systemd-nspawn` options (`--bind-ro=`, `--private-network`).
    pub fn boot_with(dir: tempfile::TempDir, extra: &[&str]) -> Container {
        let start = Instant::now();
        assert!(
            Command::new("systemd-nspawn")
                .arg("--version")
                .output()
                .is_ok(),
            "systemd-nspawn is needed (Debian package systemd-container; tests/run installs it)"
        );
        let log = std::fs::File::create(dir.path().join("../").join(format!(
            "{}.console",
            dir.path().file_name().unwrap().to_string_lossy()
        )))
        .unwrap();
        let nspawn = Command::new("systemd-nspawn")
            .args(["--register=no", "--keep-unit", "-b", "--console=read-only"])
            .args(extra)
            .arg("-D")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting systemd-nspawn");
        let npid = nspawn.id();
        let mut c = Container {
            dir,
            nspawn,
            pid: 0,
        };
        // Until systemd answers on its bus, `is-system-running` says "offline"; the init process
        // is looked up again each time (nspawn forks an intermediate child first).
        let state = loop {
            if let Some(pid) = container_init(npid) {
                c.pid = pid;
                let o = c.exec(&["systemctl", "is-system-running", "--wait"]);
                let state = String::from_utf8_lossy(&o.stdout).trim().to_string();
                if state != "offline" && !state.is_empty() {
                    break state;
                }
            }
            if let Ok(Some(st)) = c.nspawn.try_wait() {
                panic!("systemd-nspawn exited ({st}) before the container came up");
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "container systemd never came up"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(
            state == "running" || state == "degraded",
            "container systemd state: {state}"
        );
        eprintln!("container booted in {:?} ({state})", start.elapsed());
        c
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Runs a command inside the container.
    pub fn exec(&self, args: &[&str]) -> Output {
        self.exec_env(&[], args)
    }

    pub fn exec_env(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut cmd = Command::new("nsenter");
        cmd.args([
            "-t",
            &self.pid.to_string(),
            "-m",
            "-u",
            "-i",
            "-n",
            "-p",
            "--",
            "env",
            "NO_COLOR=1",
        ]);
        for (k, v) in env {
            cmd.arg(format!("{k}={v}"));
        }
        cmd.args(args).output().expect("nsenter")
    }

    /// `systemctl is-enabled` / `is-active` as systemd itself answers.
    pub fn systemctl(&self, verb: &str, unit: &str) -> String {
        let o = self.exec(&["systemctl", verb, unit]);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }
}

/// The descendant of `nspawn_pid` that is PID 1 of its own PID namespace: the container's init.
fn container_init(nspawn_pid: u32) -> Option<u32> {
    let mut todo = vec![nspawn_pid];
    while let Some(p) = todo.pop() {
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
        let nspid = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .unwrap_or("");
        let ids: Vec<&str> = nspid.split_whitespace().collect();
        if p != nspawn_pid && ids.len() > 1 && ids.last() == Some(&"1") {
            return Some(p);
        }
        for t in std::fs::read_dir(format!("/proc/{p}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            todo.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    None
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.exec(&["systemctl", "poweroff"]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}

impl Container {
    /// `sshd -T`: the configuration the real sshd reads, keyword (lowercase) → value.
    pub fn sshd_t(&self) -> std::collections::BTreeMap<String, String> {
        let o = self.exec(&["/usr/sbin/sshd", "-T"]);
        assert!(
            o.status.success(),
            "sshd -T: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// What initramfs-tools' own tools say about an initramfs: the sha256 of the decompressed
    /// `module` in it (empty when it has none) and of the one modprobe finds on the system, and
    /// whether its copy of /etc/modprobe.d/guestprep.conf is the system's.
    pub fn initramfs_truth(&self, kver: &str, module: &str) -> (String, String, bool) {
        let script = format!(
            "set -e; rm -rf /tmp/ird; unmkinitramfs /boot/initrd.img-{kver} /tmp/ird; \
             dec() {{ case \"$1\" in *.xz) xz -dc \"$1\";; *) cat \"$1\";; esac; }}; \
             f=$(find /tmp/ird -name '{module}.ko*' | head -1); \
             echo \"initrd=$([ -n \"$f\" ] && dec \"$f\" | sha256sum | cut -c1-64)\"; \
             echo \"system=$(dec \"$(modinfo -k {kver} -n {module})\" | sha256sum | cut -c1-64)\"; \
             m=$(find /tmp/ird -path '*etc/modprobe.d/guestprep.conf' | head -1); \
             if [ -n \"$m\" ] && cmp -s \"$m\" /etc/modprobe.d/guestprep.conf; then echo conf=same; else echo conf=differs; fi"
        );
        let o = self.exec(&["bash", "-c", &script]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        eprintln!("unmkinitramfs: {}", out.trim().replace('\n', " "));
        let field = |k: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap_or("")
                .to_string()
        };
        (field("initrd"), field("system"), field("conf") == "same")
    }
}
