//! What a Proxmox VE node says about its VMs, read from its files: the VM configurations
//! (`/etc/pve/qemu-server/VMID.conf`: the name, whether the guest agent option is on) and the
//! runtime directory (`/var/run/qemu-server/`: `VMID.pid` of a running QEMU, `VMID.qga`, the
//! agent's chardev socket, which QEMU creates only when the agent option was on at start).
//!
//! Never trusts those files to be well formed: an odd configuration gives a VM without a name and
//! with the agent option unknown, never an error for the whole node. They are read through
//! [`crate::saferead`]: a FIFO, device or socket where a pid file or configuration should be,
//! one too large or unreadable, is that VM's [`Vm::problem`], never a hang.

use std::collections::BTreeMap;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A VM as the node's files describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vm {
    pub vmid: u32,
    /// `name:` of its configuration.
    pub name: Option<String>,
    /// The `agent` option of its configuration: `None` without a configuration.
    pub agent: Option<bool>,
    /// QEMU runs (its pid file names a live process; without pid files, a socket exists).
    pub running: bool,
    /// The guest agent socket, when there is one.
    pub socket: Option<PathBuf>,
    /// Why this VM's own files cannot be read (a FIFO at its pid file, a device at its
    /// configuration…): it is then not asked, and shown as not answering with this message.
    pub problem: Option<String>,
}

/// Configurations larger than this are not read (a real one is a few KiB).
const MAX_CONFIG: u64 = 1 << 20;
/// Pid files larger than this are not read (a real one is a number and a newline).
const MAX_PID: u64 = 4096;

/// The VMs of a node: every id with a configuration in `config_dir`, a pid file or an agent
/// socket in `run_dir`, sorted by id. `run_dir` must exist; `config_dir` may not (a test bed, or
/// a node whose cluster filesystem is down).
pub fn discover(run_dir: &Path, config_dir: &Path) -> Result<Vec<Vm>> {
    #[derive(Default)]
    struct Seen {
        pid: Option<PathBuf>,
        socket: Option<PathBuf>,
        config: Option<PathBuf>,
    }
    let mut seen: BTreeMap<u32, Seen> = BTreeMap::new();
    let entries = std::fs::read_dir(run_dir)
        .with_context(|| format!("reading the VM runtime directory {}", run_dir.display()))?;
    for e in entries {
        let e = e.with_context(|| format!("reading {}", run_dir.display()))?;
        let name = e.file_name();
        let Some((id, ext)) = id_and_ext(&name) else {
            continue;
        };
        match ext {
            "pid" => seen.entry(id).or_default().pid = Some(e.path()),
            "qga" if e.file_type().is_ok_and(|t| t.is_socket()) => {
                seen.entry(id).or_default().socket = Some(e.path())
            }
            _ => {}
        }
    }
    if let Ok(entries) = std::fs::read_dir(config_dir) {
        for e in entries.flatten() {
            if let Some((id, "conf")) = id_and_ext(&e.file_name()) {
                seen.entry(id).or_default().config = Some(e.path());
            }
        }
    }
    Ok(seen
        .into_iter()
        .map(|(vmid, s)| {
            let mut problem = None;
            let config = match s.config.as_deref().map(read_config) {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    problem = Some(e);
                    None
                }
                None => None,
            };
            let (name, agent) = config.map_or((None, None), |c| {
                let parsed = parse_config(&c);
                (parsed.name, Some(parsed.agent))
            });
            let running = match &s.pid {
                Some(p) => pid_alive(p).unwrap_or_else(|e| {
                    problem.get_or_insert(e);
                    false
                }),
                None => s.socket.is_some(),
            };
            Vm {
                vmid,
                name,
                agent,
                running,
                socket: s.socket,
                problem,
            }
        })
        .collect())
}

/// `101.qga` → (101, "qga").
fn id_and_ext(name: &std::ffi::OsStr) -> Option<(u32, &str)> {
    let (id, ext) = name.to_str()?.split_once('.')?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) || id.starts_with('0') {
        return None;
    }
    Some((id.parse().ok()?, ext))
}

/// A node file of a VM through [`crate::saferead`]: `Ok(None)` when it vanished meanwhile (the VM
/// was removed or stopped), `Err` with the reason in words when it is not a readable regular file
/// of a sane size.
fn read_node_file(path: &Path, limit: u64) -> Result<Option<String>, String> {
    crate::saferead::read_regular_string(path, limit).map_err(|e| format!("{e:#}"))
}

fn read_config(path: &Path) -> Result<Option<String>, String> {
    read_node_file(path, MAX_CONFIG)
}

/// Whether the pid file names a live process.
fn pid_alive(path: &Path) -> Result<bool, String> {
    let Some(text) = read_node_file(path, MAX_PID)? else {
        return Ok(false);
    };
    Ok(match text.trim().parse::<i32>() {
        Ok(pid) if pid > 0 => Path::new(&format!("/proc/{pid}")).exists(),
        _ => false,
    })
}

/// What the fleet needs of a VM configuration.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub name: Option<String>,
    pub agent: bool,
}

/// Parses the current configuration (the lines before the first `[snapshot]` or `[special:…]`
/// section): `name: NAME` and `agent: [enabled=]1|0[,option=…]` (qm.conf(5)).
pub fn parse_config(text: &str) -> Config {
    let mut c = Config::default();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            break;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "name" if !value.is_empty() => c.name = Some(value.to_string()),
            "agent" => c.agent = agent_enabled(value),
            _ => {}
        }
    }
    c
}

/// The `agent` property string: its default key is `enabled`, a Proxmox boolean.
fn agent_enabled(value: &str) -> bool {
    let mut enabled = false;
    for (i, part) in value.split(',').enumerate() {
        let part = part.trim();
        let v = match part.split_once('=') {
            Some((k, v)) if k.trim() == "enabled" => v.trim(),
            None if i == 0 => part,
            _ => continue,
        };
        enabled = matches!(v.to_ascii_lowercase().as_str(), "1" | "yes" | "on" | "true");
    }
    enabled
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_option_forms() {
        for (v, want) in [
            ("1", true),
            ("0", false),
            ("enabled=1", true),
            ("enabled=0", false),
            ("1,fstrim_cloned_disks=1", true),
            ("enabled=1,freeze-fs-on-backup=0,type=virtio", true),
            ("type=isa,enabled=1", true),
            ("fstrim_cloned_disks=1", false),
            ("yes", true),
            ("", false),
            ("garbage", false),
        ] {
            assert_eq!(agent_enabled(v), want, "agent: {v}");
        }
    }

    #[test]
    fn config_current_section_only() {
        let c = parse_config(
            "boot: order=scsi0\nname: k8s-node-7\nagent: 1\n\n[snap1]\nname: old\nagent: 0\n",
        );
        assert_eq!(
            c,
            Config {
                name: Some("k8s-node-7".into()),
                agent: true
            }
        );
        assert_eq!(parse_config("name:\nagent"), Config::default());
        // Comments and odd bytes do not stop the parse.
        let c = parse_config("#agent: 1\n\u{fffd}: x\nagent: enabled=1\n");
        assert!(c.agent);
    }

    #[test]
    fn ids() {
        fn id(s: &str) -> Option<(u32, String)> {
            id_and_ext(std::ffi::OsStr::new(s)).map(|(i, e)| (i, e.to_string()))
        }
        assert_eq!(id("101.qga"), Some((101, "qga".to_string())));
        assert_eq!(id("101.pid"), Some((101, "pid".to_string())));
        assert_eq!(id("x101.qga"), None);
        assert_eq!(id("0101.qga"), None);
        assert_eq!(id("99999999999.qga"), None);
        assert_eq!(id(".qga"), None);
    }

    #[test]
    fn discovers_from_sockets_pids_and_configs() {
        let run = tempfile::tempdir().unwrap();
        let conf = tempfile::tempdir().unwrap();
        // 100: running (live pid, socket), named, agent on.
        std::fs::write(
            run.path().join("100.pid"),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        let _l = std::os::unix::net::UnixListener::bind(run.path().join("100.qga")).unwrap();
        std::fs::write(conf.path().join("100.conf"), "name: a\nagent: 1\n").unwrap();
        // 101: stopped (dead pid), agent on.
        std::fs::write(run.path().join("101.pid"), "999999999\n").unwrap();
        std::fs::write(conf.path().join("101.conf"), "agent: 1\n").unwrap();
        // 102: config only, agent off. 103: a regular file named like a socket.
        std::fs::write(conf.path().join("102.conf"), "name: c\n").unwrap();
        std::fs::write(run.path().join("103.qga"), "").unwrap();
        std::fs::write(
            run.path().join("103.pid"),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        let vms = discover(run.path(), conf.path()).unwrap();
        let got: Vec<_> = vms
            .iter()
            .map(|v| {
                (
                    v.vmid,
                    v.name.as_deref(),
                    v.agent,
                    v.running,
                    v.socket.is_some(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (100, Some("a"), Some(true), true, true),
                (101, None, Some(true), false, false),
                (102, Some("c"), Some(false), false, false),
                (103, None, None, true, false),
            ]
        );
        assert!(discover(&run.path().join("absent"), conf.path()).is_err());
    }

    #[test]
    fn node_files_that_are_not_regular_files_are_the_vms_problem() {
        use nix::sys::stat::{Mode, SFlag, makedev, mknod};
        let run = tempfile::tempdir().unwrap();
        let conf = tempfile::tempdir().unwrap();
        let mode = Mode::from_bits_truncate(0o600);
        // 100: a FIFO for a pid file (would block a plain read forever).
        nix::unistd::mkfifo(&run.path().join("100.pid"), mode).unwrap();
        std::fs::write(conf.path().join("100.conf"), "name: a\nagent: 1\n").unwrap();
        // 101: a FIFO for a configuration; 102: a character device (/dev/null's numbers).
        nix::unistd::mkfifo(&conf.path().join("101.conf"), mode).unwrap();
        mknod(
            &conf.path().join("102.conf"),
            SFlag::S_IFCHR,
            mode,
            makedev(1, 3),
        )
        .unwrap();
        // 103: a configuration of 2 GiB (sparse): too large, not read.
        let big = std::fs::File::create(conf.path().join("103.conf")).unwrap();
        big.set_len(2 << 30).unwrap();
        // 104: a directory for a pid file.
        std::fs::create_dir(run.path().join("104.pid")).unwrap();
        let vms = discover(run.path(), conf.path()).unwrap();
        let problems: Vec<_> = vms
            .iter()
            .map(|v| (v.vmid, v.problem.clone().unwrap_or_default()))
            .collect();
        for ((vmid, p), want) in problems.iter().zip([
            "100.pid is a FIFO",
            "101.conf is a FIFO",
            "102.conf is a character device",
            "more than the 1048576 bytes",
            "104.pid is a directory",
        ]) {
            assert!(p.contains(want), "{vmid}: {p}");
        }
        // The rest of the configuration still counts where it was read.
        assert_eq!(vms[0].name.as_deref(), Some("a"));
    }
}
