//! `[chrony]`: time sources and serving, its keys, validation and typed value (the items are
//! `resources/chrony.rs`).
//!
//! ```toml
//! [chrony]
//! servers = ["ntp1.example.net"]
//! exclusive = true       # only the policy's sources (Debian's pool and DHCP sources are not used)
//! directives = ["log measurements statistics tracking", "maxupdateskew 100.0"]
//! ```

use serde::Serialize;

use super::tree::{Table, Value};
use super::validate::{V, check_allow, check_host, check_line_value};
use crate::text::closest;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Chrony {
    pub servers: Vec<String>,
    pub pools: Vec<String>,
    /// Options appended to every `server`/`pool` line (default `iburst`).
    pub source_options: String,
    pub allow: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub makestep: Option<(f64, i64)>,
    pub rtcsync: bool,
    /// Only the policy's sources: chrony.conf diverted, its source lines left out.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub exclusive: bool,
    /// More chrony.conf directives, one line each, after the sources.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub directives: Vec<String>,
    /// Restart a running chrony.service after the drop-in changed (default true).
    #[serde(skip_serializing_if = "super::is_true")]
    pub restart: bool,
}

/// chrony 4.6's directives (chrony.conf(5), Debian 13), without the ones other keys own.
pub const CHRONY_DIRECTIVES: &[&str] = &[
    "acquisitionport",
    "authselectmode",
    "bindacqaddress",
    "bindacqdevice",
    "bindaddress",
    "bindcmdaddress",
    "bindcmddevice",
    "binddevice",
    "broadcast",
    "clientloglimit",
    "clockprecision",
    "cmdallow",
    "cmddeny",
    "cmdport",
    "cmdratelimit",
    "combinelimit",
    "corrtimeratio",
    "deny",
    "driftfile",
    "dscp",
    "dumpdir",
    "fallbackdrift",
    "hwclockfile",
    "hwtimestamp",
    "hwtstimeout",
    "initstepslew",
    "keyfile",
    "leapsecmode",
    "leapseclist",
    "leapsectz",
    "local",
    "lock_all",
    "log",
    "logbanner",
    "logchange",
    "logdir",
    "mailonchange",
    "manual",
    "maxchange",
    "maxclockerror",
    "maxdistance",
    "maxdrift",
    "maxjitter",
    "maxntsconnections",
    "maxsamples",
    "maxslewrate",
    "maxupdateskew",
    "minsamples",
    "minsources",
    "nocerttimecheck",
    "noclientlog",
    "ntpsigndsocket",
    "ntsaeads",
    "ntscachedir",
    "ntsdumpdir",
    "ntsntpserver",
    "ntsport",
    "ntsprocesses",
    "ntsrefresh",
    "ntsrotate",
    "ntsservercert",
    "ntsserverkey",
    "ntstrustedcerts",
    "opencommands",
    "peer",
    "pidfile",
    "port",
    "ptpdomain",
    "ptpport",
    "ratelimit",
    "refclock",
    "refresh",
    "reselectdist",
    "rtcautotrim",
    "rtcdevice",
    "rtcfile",
    "rtconutc",
    "sched_priority",
    "smoothtime",
    "stratumweight",
    "tempcomp",
    "user",
];

/// One directive line: a known name (owned ones point at their key), a value on one line.
fn check_directive(s: &str) -> Result<(), String> {
    check_line_value(s)?;
    let name = s
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let owned = match name.as_str() {
        "server" => Some("servers"),
        "pool" => Some("pools"),
        "allow" => Some("allow"),
        "makestep" => Some("makestep"),
        "rtcsync" => Some("rtcsync"),
        _ => None,
    };
    if let Some(k) = owned {
        return Err(format!("`{name}` has its own key: `[chrony] {k}`"));
    }
    if matches!(name.as_str(), "confdir" | "include" | "sourcedir") {
        return Err(format!(
            "`{name}` changes which files chrony reads: not a directive guestprep writes"
        ));
    }
    if !CHRONY_DIRECTIVES.contains(&name.as_str()) {
        let mut m = format!("`{name}` is not a chrony directive");
        if let Some(c) = closest(&name, CHRONY_DIRECTIVES) {
            m.push_str(&format!(" (did you mean `{c}`?)"));
        }
        return Err(m);
    }
    Ok(())
}

impl V {
    pub(super) fn chrony(&mut self, t: &Table) -> Chrony {
        let p = "chrony";
        self.known_keys(
            t,
            p,
            &[
                "servers",
                "pools",
                "source_options",
                "allow",
                "makestep",
                "rtcsync",
                "exclusive",
                "directives",
                "restart",
            ],
        );
        let servers = self.list(t, p, "servers", check_host);
        let pools = self.list(t, p, "pools", check_host);
        let source_options = match self.string(t, p, "source_options") {
            Some(s) => {
                if let Err(m) = check_line_value(&s) {
                    let e = t.get("source_options").expect("present");
                    self.err(&e.node.origin, "chrony.source_options", m);
                }
                s
            }
            None => "iburst".to_string(),
        };
        let allow = self.list(t, p, "allow", check_allow);
        let makestep = t.get("makestep").and_then(|e| self.makestep(e));
        let rtcsync = self.bool(t, p, "rtcsync").unwrap_or(false);
        let exclusive = self.bool(t, p, "exclusive").unwrap_or(false);
        let directives = self.list(t, p, "directives", check_directive);
        if exclusive
            && servers.is_empty()
            && pools.is_empty()
            && let Some(e) = t.get("exclusive")
            && matches!(e.node.value, Value::Bool(true))
        {
            self.err(
                &e.node.origin,
                "chrony.exclusive",
                "exclusive with no `servers` or `pools` leaves chrony without a time source",
            );
        }
        let restart = self.bool(t, p, "restart").unwrap_or(true);
        Chrony {
            servers,
            pools,
            source_options,
            allow,
            makestep,
            rtcsync,
            exclusive,
            directives,
            restart,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check_directive;

    #[test]
    fn directives() {
        assert!(check_directive("driftfile /var/lib/chrony/chrony.drift").is_ok());
        assert!(check_directive("log measurements statistics tracking").is_ok());
        assert!(check_directive("server x").unwrap_err().contains("servers"));
        assert!(check_directive("confdir /tmp").is_err());
        let e = check_directive("driftfil /x").unwrap_err();
        assert!(e.contains("did you mean `driftfile`?"), "{e}");
    }
}
