//! A Proxmox node's VMs as `guestprep fleet` sees them, with real guest agents: one real `qemu-ga`
//! per VM, each in its own mount namespace (`unshare -m`) with a private /run where its own
//! report directory is bind-mounted at /run/guestprep, listening on `RUN/VMID.qga` like QEMU's
//! chardev; VM configurations in `CONF/VMID.conf` as /etc/pve/qemu-server has them. Shared by
//! tests/it/fleet.rs and benches/fleet.rs (which includes this file by path).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the agents' guests keep guestprep (a file in their private /run): `--guest-command`.
pub const GUEST_COMMAND: &str = "/run/gp/guestprep";

/// What one VM's guest has.
pub enum Guest {
    /// This report at /run/guestprep/report.json, and guestprep installed.
    Report(serde_json::Value),
    /// No report; guestprep installed or not.
    NoReport { installed: bool },
    /// A report file that is not JSON.
    Garbage,
    /// No guestprep, on a system guestprep does not manage: qemu-ga's `guest-get-osinfo` reads
    /// this os-release (bind-mounted over /etc/os-release in the agent's namespace).
    Unmanaged(&'static str),
}

pub struct Bed {
    pub dir: tempfile::TempDir,
    pub run: PathBuf,
    pub conf: PathBuf,
    agents: Vec<(u32, Child)>,
}

impl Default for Bed {
    fn default() -> Self {
        Self::new()
    }
}

impl Bed {
    pub fn new() -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("qemu-server");
        let conf = dir.path().join("pve-qemu-server");
        std::fs::create_dir(&run).unwrap();
        std::fs::create_dir(&conf).unwrap();
        Bed {
            dir,
            run,
            conf,
            agents: Vec::new(),
        }
    }

    pub fn socket(&self, vmid: u32) -> PathBuf {
        self.run.join(format!("{vmid}.qga"))
    }

    fn config(&self, vmid: u32, name: &str, agent: &str) {
        std::fs::write(
            self.conf.join(format!("{vmid}.conf")),
            format!(
                "boot: order=scsi0\ncores: 2\nmemory: 4096\nname: {name}\nagent: {agent}\nostype: l26\n\n[snap1]\nname: old-{name}\nagent: 0\n"
            ),
        )
        .unwrap();
    }

    /// A running VM with its agent on and a real qemu-ga answering for `guest`; returns the
    /// agent's pid.
    pub fn agent(&mut self, vmid: u32, name: &str, guest: Guest) -> u32 {
        self.config(vmid, name, "enabled=1,fstrim_cloned_disks=1");
        let vm = self.dir.path().join(format!("vm-{vmid}"));
        let reports = vm.join("guestprep");
        let state = vm.join("state");
        std::fs::create_dir_all(&reports).unwrap();
        std::fs::create_dir_all(&state).unwrap();
        let installed = match &guest {
            Guest::Report(r) => {
                std::fs::write(reports.join("report.json"), serde_json::to_vec(r).unwrap())
                    .unwrap();
                true
            }
            Guest::Garbage => {
                std::fs::write(
                    reports.join("report.json"),
                    b"{\"apiVersion\": \"guestprep.io/v1\", trunc",
                )
                .unwrap();
                true
            }
            Guest::NoReport { installed } => *installed,
            Guest::Unmanaged(_) => false,
        };
        let os_release = match &guest {
            Guest::Unmanaged(text) => {
                let p = vm.join("os-release");
                std::fs::write(&p, text).unwrap();
                p.display().to_string()
            }
            _ => String::new(),
        };
        // unshare execs (no fork) and so does sh: the child's pid is qemu-ga's.
        let script = r#"set -e
mount -t tmpfs -o mode=0755 fleet-test /run
mkdir -p /run/guestprep /run/gp
mount --bind "$1" /run/guestprep
if [ "$2" = 1 ]; then : >/run/gp/guestprep; fi
if [ -n "$5" ]; then mount --bind "$5" /etc/os-release; fi
exec qemu-ga -m unix-listen -p "$3" -t "$4" -f "$4/qemu-ga.pid"
"#;
        let child = Command::new("unshare")
            .args([
                "-m",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .arg(&reports)
            .arg(if installed { "1" } else { "0" })
            .arg(self.socket(vmid))
            .arg(&state)
            .arg(&os_release)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(vm.join("qemu-ga.log")).unwrap())
            .spawn()
            .expect("unshare and qemu-ga (Debian packages util-linux, qemu-guest-agent)");
        let pid = child.id();
        self.agents.push((vmid, child));
        pid
    }

    /// A socket file with nothing listening (QEMU died and left it).
    pub fn refused(&mut self, vmid: u32, name: &str) {
        self.config(vmid, name, "1");
        drop(std::os::unix::net::UnixListener::bind(self.socket(vmid)).unwrap());
    }

    /// A running VM (its pid file names a live process) whose agent option is off.
    pub fn agent_off(&mut self, vmid: u32, name: &str) {
        self.config(vmid, name, "0");
        std::fs::write(
            self.run.join(format!("{vmid}.pid")),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
    }

    /// A VM that does not run: a configuration only.
    pub fn stopped(&mut self, vmid: u32, name: &str) {
        self.config(vmid, name, "1");
    }

    /// Waits until every agent listens.
    pub fn wait_ready(&mut self) {
        let start = Instant::now();
        for (vmid, child) in &mut self.agents {
            let sock = self.run.join(format!("{vmid}.qga"));
            while !sock.exists() {
                if let Ok(Some(st)) = child.try_wait() {
                    let log = std::fs::read_to_string(
                        self.dir.path().join(format!("vm-{vmid}/qemu-ga.log")),
                    )
                    .unwrap_or_default();
                    panic!("the agent of VM {vmid} exited ({st}): {log}");
                }
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "the agent of VM {vmid} never listened"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// Stops an agent with SIGSTOP: its socket accepts connections, nothing answers.
    pub fn hang(&self, pid: u32) {
        let st = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// `guestprep fleet` for this node: `--qga-dir`, `--config-dir`, `--guest-command` and `args`.
    pub fn fleet(&self, bin: &str, args: &[&str]) -> Command {
        let mut c = Command::new(bin);
        c.arg("fleet")
            .arg("--qga-dir")
            .arg(&self.run)
            .arg("--config-dir")
            .arg(&self.conf)
            .args(["--guest-command", GUEST_COMMAND])
            .args(args)
            .env_remove("GUESTPREP_ROOT");
        c
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        for (_, c) in &mut self.agents {
            // SIGKILL ends a stopped process too.
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A report like `base` with another verdict: exit code, drift count, made at `generated_at`.
pub fn variant(
    base: &serde_json::Value,
    exit_code: i32,
    drift: u64,
    generated_at: &str,
    hostname: &str,
) -> serde_json::Value {
    let mut r = base.clone();
    r["exitCode"] = exit_code.into();
    r["compliant"] = (drift == 0 && exit_code != 5).into();
    r["summary"]["drift"] = drift.into();
    r["generatedAt"] = generated_at.into();
    r["host"]["hostname"] = hostname.into();
    r
}

/// A directory of this file's crate: the repository.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}
