//! `guestprep completions SHELL` and the hidden `guestprep man --out DIR`: shell completions and
//! manual pages generated from the clap definition, so they cannot disagree with `--help`. The
//! package build (`make install`) runs both; nothing is generated at compile time.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, CommandFactory};

use crate::exit::ExitCode;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Directory to write guestprep.8 and one guestprep-SUBCOMMAND.8 per subcommand into.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

pub fn completions(args: &CompletionsArgs) -> Result<ExitCode> {
    let mut cmd = super::Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "guestprep", &mut std::io::stdout());
    Ok(ExitCode::Ok)
}

/// The page's date: SOURCE_DATE_EPOCH's day when set (Debian builds set it from the changelog),
/// so two builds of one source give the same pages.
fn page_date() -> String {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(|secs| {
            crate::clock::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
                [..10]
                .to_string()
        })
        .unwrap_or_default()
}

pub fn man(args: &ManArgs) -> Result<ExitCode> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut cmd = super::Cli::command().disable_help_subcommand(true);
    cmd.build();
    let date = page_date();
    let mut written = Vec::new();
    write_pages(&cmd, "guestprep", &date, &args.out, &mut written)?;
    for p in written {
        println!("{}", p.display());
    }
    Ok(ExitCode::Ok)
}

/// Writes `NAME.8` for `cmd` and, under it, `NAME-SUB.8` for each visible subcommand.
fn write_pages(
    cmd: &clap::Command,
    name: &str,
    date: &str,
    out: &Path,
    written: &mut Vec<PathBuf>,
) -> Result<()> {
    let page = cmd
        .clone()
        .display_name(name.to_string())
        .bin_name(name.replace('-', " "));
    let man = clap_mangen::Man::new(page)
        .section("8")
        .manual("System Administration")
        .source(format!("guestprep {}", env!("CARGO_PKG_VERSION")))
        .date(date);
    let mut buf = Vec::new();
    render(&man, cmd, name == "guestprep", &mut buf).context("rendering a manual page")?;
    let path = out.join(format!("{name}.8"));
    std::fs::write(&path, &buf).with_context(|| format!("writing {}", path.display()))?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(
            sub,
            &format!("{name}-{}", sub.get_name()),
            date,
            out,
            written,
        )?;
    }
    Ok(())
}

/// clap_mangen's sections, with `after_help` as real sections instead of its one filled "EXTRA"
/// paragraph: a table ("Exit codes:", "Operations:") as a tagged list (EXIT STATUS, OPERATIONS),
/// other notes as NOTES; FILES and SEE ALSO on guestprep(8).
fn render(
    man: &clap_mangen::Man,
    cmd: &clap::Command,
    top: bool,
    w: &mut Vec<u8>,
) -> std::io::Result<()> {
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(w)?;
    }
    if let Some(after) = cmd.get_after_help().map(|a| a.to_string()) {
        let mut lines = after.lines();
        let head = lines.next().unwrap_or("");
        let rest: Vec<&str> = lines.collect();
        if head.ends_with(':') && !rest.is_empty() && rest.iter().all(|l| l.starts_with("  ")) {
            // "Exit codes:" or "Operations:" and "  KEY  text" lines: a tagged list.
            let title = match head {
                "Exit codes:" => "EXIT STATUS".to_string(),
                h => h.trim_end_matches(':').to_uppercase(),
            };
            w.extend_from_slice(format!(".SH \"{title}\"\n").as_bytes());
            for line in rest {
                let (key, text) = line.trim().split_once("  ").unwrap_or((line.trim(), ""));
                w.extend_from_slice(
                    format!(".TP\n\\fB{}\\fR\n{}\n", escape(key), escape(text.trim())).as_bytes(),
                );
            }
        } else {
            w.extend_from_slice(
                format!(".SH NOTES\n{}\n", escape(&after.replace('\n', " "))).as_bytes(),
            );
        }
    }
    if top {
        w.extend_from_slice(FILES_AND_SEE_ALSO.as_bytes());
    }
    if cmd.get_version().is_some() {
        man.render_version_section(w)?;
    }
    Ok(())
}

/// Escapes text for roff: backslashes, and a leading `.` or `'` that would read as a request.
fn escape(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

const FILES_AND_SEE_ALSO: &str = r#".SH FILES
.TP
\fI/usr/lib/guestprep/policy.d/*.toml\fR
The shipped policy fragments (vendor).
.TP
\fI/etc/guestprep/policy.d/*.toml\fR, \fI/etc/guestprep/policy.toml\fR
The administrator's fragments, merged with the vendor's in file\-name order; a file here with
the name of a vendor one replaces it.
.TP
\fI/run/guestprep/report.json\fR
The compliance report the daemon keeps fresh, for the QEMU guest agent's file\-read.
.TP
\fI/run/guestprep/apply.lock\fR
Held by a running \fBguestprep apply\fR.
.TP
\fI/run/guestprep/initramfs.json\fR
What each initramfs was found to hold (module and file hashes), keyed by the image's device,
inode, size, mtime and ctime: the next run on the live system reads no unchanged image again.
Root's, mode 0600; ignored when it is anything else. Never written in an offline image.
.TP
\fI/usr/share/guestprep/guestprep\-enforce.conf\fR
Drop\-in for \fBguestprep.service\fR when the policy sets \fB[agent] enforce = true\fR.
.SH "SEE ALSO"
\fBsystemctl\fR(1), \fBqemu\-ga\fR(8), \fBdkms\fR(8), \fBupdate\-grub\fR(8), \fBssh\-keygen\fR(1),
/usr/share/doc/guestprep
"#;
