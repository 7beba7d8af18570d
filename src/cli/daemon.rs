//! `guestprep daemon`: the arguments; the daemon itself is [`crate::agent`].

use clap::Args;

use super::Target;

#[derive(Debug, Args)]
#[command(after_help = "\
The report (same schema as `verify --json`) is at ROOT/run/guestprep/report.json, mode 0644.
Settings come from the policy's [agent] section: interval (default 15min), debounce (200ms),
enforce (false), prometheus_textfile (unset). Under systemd: Type=notify, STATUS= shows the
summary; SIGHUP reloads the policy (an invalid one keeps the running one); SIGTERM stops.")]
pub struct DaemonArgs {
    #[command(flatten)]
    pub target: Target,
}
