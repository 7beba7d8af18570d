//! The command line: one file per subcommand, parsed with clap. Each subcommand returns the exit
//! code; errors are printed once, whole chain, by `main`.

pub mod apply;
pub mod daemon;
pub mod dkms;
pub mod fleet;
pub mod generate;
pub mod policy;
pub mod prefetch;
pub mod qga;
pub mod schema;
pub mod seal;
pub mod verify;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::exit::{EXIT_CODES_HELP, ExitCode, UsageError};
use crate::report::Filter;

#[derive(Debug, Parser)]
#[command(
    name = "guestprep",
    version,
    about = "Converge, verify and seal Proxmox VM templates from a declarative TOML policy",
    after_help = EXIT_CODES_HELP,
)]
pub struct Cli {
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less output: `verify -q` and `apply -q` print only the verdict line, `-qq` nothing (the
    /// exit code says it); accepted anywhere on the command line.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub quiet: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Converge the system to the policy: check, change only what differs, check again.
    #[command(after_help = EXIT_CODES_HELP)]
    Apply(apply::ApplyArgs),
    /// Check the system against the policy and report, item by item. Never writes.
    #[command(after_help = EXIT_CODES_HELP)]
    Verify(verify::VerifyArgs),
    /// Validate or show the policy.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Download a URL, print its sha256 and the `[[packages.deb]]` snippet to paste (like
    /// nix-prefetch-url).
    Prefetch(prefetch::PrefetchArgs),
    /// Print the JSON Schema of the compliance report.
    Schema,
    /// Keep the compliance report fresh at /run/guestprep/report.json (for the QEMU guest agent's
    /// file-read) until SIGTERM: re-verify on changes and on a timer; SIGHUP reloads the policy.
    Daemon(daemon::DaemonArgs),
    /// On the host: read a VM's report through its QEMU guest agent socket (file-read of the
    /// daemon's report, or guest-exec of `guestprep verify`); exit with the report's code.
    #[command(after_help = EXIT_CODES_HELP)]
    Qga(qga::QgaArgs),
    /// Before `qm template`: remove what makes this machine an individual (SSH host keys,
    /// machine-id, cloud-init state, logs…), by named operations; refuses unless compliant.
    #[command(after_help = crate::seal::operations_help())]
    Seal(seal::SealArgs),
    /// On a Proxmox node: every VM's compliance through its guest agent, concurrently, as a
    /// table, JSON, or a Prometheus textfile; exit 0 all compliant, 1 any not, 6 any silent.
    Fleet(fleet::FleetArgs),
    /// Will a DKMS package build here? `dkms try FILE.deb|URL`: its module built for each
    /// installed kernel with headers in a throwaway tree; nothing installed. Exit 0 only if it
    /// builds for every kernel asked (1 otherwise).
    #[command(subcommand)]
    Dkms(dkms::DkmsCommand),
    /// Print a completion script for a shell (the Debian package installs bash, zsh and fish's).
    Completions(generate::CompletionsArgs),
    /// Write the manual pages (guestprep.8, guestprep-SUBCOMMAND.8) into a directory.
    #[command(hide = true)]
    Man(generate::ManArgs),
}

/// Where the system and the policy are.
#[derive(Debug, Args, Clone)]
pub struct Target {
    /// Root directory of the system to manage; anything but `/` is an offline image: only files
    /// are read and written, live checks and actions are skipped.
    #[arg(long, value_name = "DIR", default_value = "/", env = "GUESTPREP_ROOT")]
    pub root: PathBuf,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

#[derive(Debug, Args, Clone)]
pub struct PolicyArgs {
    /// Policy file, or directory of `*.toml` fragments merged in name order; repeatable. Default:
    /// the root's /usr/lib/guestprep/policy.d, /etc/guestprep/policy.d and /etc/guestprep/policy.toml.
    #[arg(long = "policy", value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One line per item and a summary.
    Human,
    /// The versioned compliance report (docs/report.schema.json).
    Json,
    /// Prometheus text exposition format (as the daemon's textfile).
    Prometheus,
    /// JUnit XML, one test case per item, for CI systems.
    Junit,
}

/// `--only` and `--skip`: which items a run covers.
#[derive(Debug, Args, Clone, Default)]
pub struct SelectArgs {
    /// Only the items of this kind (`sysctl`, `unit`) or whose id matches this glob
    /// (`unit:chrony*`); repeatable. The exit code covers the selected items.
    #[arg(long, value_name = "KIND|ID-GLOB")]
    pub only: Vec<String>,
    /// Leave out the items of this kind or whose id matches this glob; repeatable.
    #[arg(long, value_name = "KIND|ID-GLOB")]
    pub skip: Vec<String>,
}

impl SelectArgs {
    pub fn filter(&self) -> anyhow::Result<Filter> {
        for p in self.only.iter().chain(&self.skip) {
            if p.trim().is_empty() {
                return Err(
                    UsageError("--only and --skip need a kind or an id glob".into()).into(),
                );
            }
        }
        Ok(Filter {
            only: self.only.clone(),
            skip: self.skip.clone(),
        })
    }
}

pub use crate::usecase::selected;

impl Target {
    /// Opens the root and loads its policy: [`crate::open`].
    pub fn open(&self) -> anyhow::Result<(crate::engine::System, crate::policy::Loaded)> {
        crate::open(&self.root, &self.policy.paths)
    }
}

/// Options people put before the verb (`guestprep --root /mnt verify`) that belong to the verb's
/// own arguments: moved after the last subcommand, before any `--`, so clap parses them there.
/// `-v` and `-q` are clap globals already.
pub fn hoist(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut out: Vec<std::ffi::OsString> = args.iter().take(1).cloned().collect();
    let mut moved = Vec::new();
    let mut i = 1;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        let with_value = a == "--root" || a == "--policy";
        if with_value && i + 1 < args.len() {
            moved.extend([args[i].clone(), args[i + 1].clone()]);
            i += 2;
        } else if a.starts_with("--root=") || a.starts_with("--policy=") || a == "--json" {
            moved.push(args[i].clone());
            i += 1;
        } else if a.starts_with('-') {
            // Another option before the verb (-v, --help, --version): left where it is.
            out.push(args[i].clone());
            i += 1;
        } else {
            break;
        }
    }
    if moved.is_empty() {
        return args;
    }
    let rest = &args[i..];
    let end = rest.iter().position(|a| a == "--").unwrap_or(rest.len());
    out.extend(rest[..end].iter().cloned());
    out.extend(moved);
    out.extend(rest[end..].iter().cloned());
    out
}

/// The directory a host file given on the command line goes in (`.` for a bare name).
pub(crate) fn parent_dir(path: &std::path::Path) -> &std::path::Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."))
}

/// Whether a host file guestprep writes (`verify --output FORMAT=PATH`, `fleet
/// --prometheus-textfile PATH`) may be written: its directory exists and at PATH is nothing
/// (`false`) or a regular file (`true`), which is replaced. Anything else is a [`UsageError`]
/// naming `what` (the argument as given), and is left as it is:
/// - a device, FIFO or socket: as root, `--output json=/dev/null` must not replace the host's
///   /dev/null with a regular file;
/// - a directory;
/// - a symlink: replacing the link with a file would silently undo what its owner set up, and
///   writing through it would let whoever made the link choose which file root replaces (in a
///   shared directory, anyone). The message names its target: give that path instead.
pub(crate) fn check_host_file(path: &std::path::Path, what: &str) -> anyhow::Result<bool> {
    use anyhow::Context;
    let refuse = |why: String, hint: &str| -> anyhow::Result<bool> {
        Err(UsageError(format!(
            "{what}: {why}; guestprep writes only where nothing is or over a regular file, and \
             left it as it is{hint}"
        ))
        .into())
    };
    if path.as_os_str().is_empty() {
        return Err(UsageError(format!("{what}: the path is empty")).into());
    }
    if path.as_os_str().as_encoded_bytes().ends_with(b"/") {
        return refuse("the path names a directory".into(), "");
    }
    let dir = parent_dir(path);
    if !dir.is_dir() {
        return Err(UsageError(format!(
            "{what}: the directory {} does not exist",
            dir.display()
        ))
        .into());
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("inspecting {}", path.display())),
        Ok(m) if m.file_type().is_file() => Ok(true),
        Ok(m) if m.file_type().is_symlink() => {
            let target =
                std::fs::read_link(path).map_or_else(|_| "?".into(), |t| t.display().to_string());
            refuse(
                format!("a symlink (to {}) is there", crate::text::escape(&target)),
                ": give the path of its target instead",
            )
        }
        Ok(m) => refuse(
            format!("a {} is there", crate::saferead::kind_of(m.file_type())),
            "",
        ),
    }
}

/// Writes a file of the host (not of the checked root: `verify --output`, `fleet`'s textfile)
/// atomically, mode 0644 as a file made with `>` would be for others to read: a temporary file
/// beside it, synced, then a rename, only where nothing is or over a regular file (checked
/// again here, just before the rename: see [`check_host_file`]; where nothing was, the rename
/// does not replace what appeared meanwhile). `what` names the argument in messages.
pub(crate) fn write_host_file(
    path: &std::path::Path,
    text: &str,
    what: &str,
) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    check_host_file(path, what)?;
    let dir = parent_dir(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(".guestprep.")
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file beside {}", path.display()))?;
    tmp.write_all(text.as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("writing {}", path.display()))?;
    let written = if check_host_file(path, what)? {
        tmp.persist(path)
    } else {
        match tmp.persist_noclobber(path) {
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
                // Something appeared meanwhile: replaced only if it is a regular file.
                check_host_file(path, what)?;
                e.file.persist(path)
            }
            other => other,
        }
    };
    written.with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Runs a parsed command line and returns the process exit code. Errors are printed here, once.
pub fn run(cli: Cli) -> i32 {
    let code = |r: anyhow::Result<ExitCode>| r.map(ExitCode::code);
    let (result, failure) = match &cli.command {
        Command::Apply(a) => (code(apply::run(a, cli.quiet)), ExitCode::ApplyFailed),
        Command::Verify(a) => (code(verify::run(a, cli.quiet)), ExitCode::CheckFailed),
        Command::Policy(p) => (code(policy::run(p)), ExitCode::Usage),
        Command::Schema => (code(schema::run()), ExitCode::Usage),
        Command::Prefetch(a) => (code(prefetch::run(a)), ExitCode::ApplyFailed),
        // `qga exec` passes the guest program's own code through: already a number.
        Command::Qga(a) => (qga::run(a), ExitCode::AgentUnavailable),
        Command::Daemon(a) => (
            code(crate::agent::run(&a.target.root, &a.target.policy.paths)),
            ExitCode::CheckFailed,
        ),
        Command::Seal(a) => (code(seal::run(a)), ExitCode::ApplyFailed),
        Command::Fleet(a) => (fleet::run(a, cli.quiet), ExitCode::AgentUnavailable),
        Command::Dkms(a) => (code(dkms::run(a)), ExitCode::ApplyFailed),
        Command::Completions(a) => (code(generate::completions(a)), ExitCode::Usage),
        Command::Man(a) => (code(generate::man(a)), ExitCode::Usage),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if let Some(inv) = e.downcast_ref::<crate::policy::InvalidPolicy>() {
                eprintln!("{}", crate::text::escape_lines(&inv.to_string()));
                eprintln!("nothing was changed");
                return ExitCode::Usage.code();
            }
            if let Some(u) = e.downcast_ref::<UsageError>() {
                eprintln!(
                    "guestprep: error: {}",
                    crate::text::escape_lines(&u.to_string())
                );
                eprintln!("nothing was changed");
                return ExitCode::Usage.code();
            }
            eprintln!(
                "guestprep: error: {}",
                crate::text::escape_lines(&format!("{e:#}"))
            );
            let code = if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
            }) && matches!(cli.command, Command::Policy(_))
            {
                ExitCode::Usage
            } else {
                failure
            };
            code.code()
        }
    }
}

#[cfg(test)]
mod host_file_tests {
    use super::{UsageError, write_host_file};
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    /// The writer itself refuses (not only the commands' early checks): whatever is at the path
    /// when it writes, unless a regular file or nothing, stays as it was.
    #[test]
    fn only_nothing_or_a_regular_file_is_replaced() {
        use nix::sys::stat::{Mode, SFlag, makedev, mknod};
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        let mode = Mode::from_bits_truncate(0o600);
        nix::unistd::mkfifo(&d.join("fifo"), mode).unwrap();
        mknod(&d.join("null"), SFlag::S_IFCHR, mode, makedev(1, 3)).unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(d.join("sock")).unwrap();
        std::fs::create_dir(d.join("dir")).unwrap();
        std::fs::write(d.join("target"), "old").unwrap();
        std::os::unix::fs::symlink("target", d.join("link")).unwrap();
        for name in ["fifo", "null", "sock", "dir", "link", "dir/"] {
            let p = d.join(name);
            let before = std::fs::symlink_metadata(&p).unwrap();
            let e = write_host_file(&p, "new", "--x").unwrap_err();
            assert!(e.is::<UsageError>(), "{name}: {e:#}");
            let after = std::fs::symlink_metadata(&p).unwrap();
            assert_eq!(
                (before.ino(), before.file_type(), before.rdev()),
                (after.ino(), after.file_type(), after.rdev()),
                "{name}"
            );
        }
        assert!(
            std::fs::symlink_metadata(d.join("null"))
                .unwrap()
                .file_type()
                .is_char_device()
        );
        assert_eq!(std::fs::read_to_string(d.join("target")).unwrap(), "old");
        write_host_file(&d.join("target"), "new", "--x").unwrap();
        write_host_file(&d.join("fresh"), "new", "--x").unwrap();
        assert_eq!(std::fs::read_to_string(d.join("target")).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(d.join("fresh")).unwrap(), "new");
        let e = write_host_file(&d.join("no/such/x"), "new", "--x").unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        // No temporary file is left behind.
        let left: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".guestprep."))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}

#[cfg(test)]
mod hoist_tests {
    use super::hoist;

    fn v(s: &str) -> Vec<std::ffi::OsString> {
        s.split(' ').map(Into::into).collect()
    }

    #[test]
    fn options_before_the_verb_go_after_it() {
        assert_eq!(
            hoist(v("guestprep --root /mnt -v verify --only sysctl")),
            v("guestprep -v verify --only sysctl --root /mnt")
        );
        assert_eq!(
            hoist(v("guestprep --policy=p.toml --json policy show")),
            v("guestprep policy show --policy=p.toml --json")
        );
        assert_eq!(
            hoist(v("guestprep --json qga --socket s apply -- --check")),
            v("guestprep qga --socket s apply --json -- --check")
        );
        assert_eq!(
            hoist(v("guestprep verify --root /")),
            v("guestprep verify --root /")
        );
        assert_eq!(hoist(v("guestprep --root")), v("guestprep --root"));
    }
}
