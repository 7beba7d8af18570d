//! The `guestprep` binary: parse the command line, set up logging, run the library, exit with its
//! code. Nothing else belongs here.

use std::io::IsTerminal;

use clap::Parser;

fn main() {
    let cli = guestprep::cli::Cli::parse_from(guestprep::cli::hoist(std::env::args_os().collect()));
    let daemon = matches!(cli.command, guestprep::cli::Command::Daemon(_));
    let level = match cli.verbose {
        0 if daemon => "info",
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("GUESTPREP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Under systemd, journald adds timestamps. Colour only on a terminal, never with NO_COLOR
    // or into the journal: escape codes in cloud-init's output log or a CI log are noise.
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && !under_journald;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_target(false);
    if under_journald {
        builder.without_time().init();
    } else {
        builder.init();
    }
    std::process::exit(guestprep::cli::run(cli));
}
