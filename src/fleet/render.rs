//! The fleet's answers as a table for a person, JSON for a program, and the Prometheus text
//! exposition format for node-exporter's textfile collector (`guestprep_vm_*`, one series per
//! VM with `vmid` and `name` labels).

use std::fmt::Write as _;

use super::{State, VmResult};
use crate::output::escape_controls;

/// One line per VM and a summary line.
pub fn table(results: &[VmResult], elapsed: std::time::Duration) -> String {
    let rows: Vec<[String; 8]> = results
        .iter()
        .map(|r| {
            let (drift, error) = r.summary.as_ref().map_or(("-".into(), "-".into()), |s| {
                (s.drift.to_string(), s.error.to_string())
            });
            [
                r.vmid.to_string(),
                r.name
                    .as_deref()
                    .map_or("-".into(), |n| escape_controls(n, false)),
                r.state.as_str().to_string(),
                drift,
                error,
                r.report_age_seconds.map_or("-".into(), age),
                r.seal_id.as_deref().map_or("-".into(), |s| {
                    escape_controls(&s.chars().take(12).collect::<String>(), false)
                }),
                r.guestprep_version
                    .as_deref()
                    .map_or("-".into(), |v| escape_controls(v, false)),
            ]
        })
        .collect();
    let head = [
        "VMID", "NAME", "STATE", "DRIFT", "ERROR", "AGE", "SEAL", "VERSION",
    ];
    let mut width = head.map(str::len);
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut o = String::new();
    let line = |o: &mut String, cells: &[&str]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(width).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            // Counts right-aligned, text left.
            if (3..=4).contains(&i) {
                let _ = write!(l, "{cell:>w$}");
            } else {
                let _ = write!(l, "{cell:<w$}");
            }
        }
        let _ = writeln!(o, "{}", l.trim_end());
    };
    line(&mut o, &head);
    for row in &rows {
        line(&mut o, &row.each_ref().map(String::as_str));
    }
    // Why a VM has no fresh report, under the table.
    for r in results {
        if let Some(m) = &r.message
            && r.state != State::Stopped
        {
            let _ = writeln!(o, "{}: {m}", r.vmid);
        }
    }
    let _ = writeln!(o, "{}", summary_line(results, elapsed));
    o
}

/// `50 VMs: 40 compliant, 3 drift, …, in 5.1 s`.
pub fn summary_line(results: &[VmResult], elapsed: std::time::Duration) -> String {
    let counts: Vec<String> = State::ALL
        .iter()
        .filter_map(|s| {
            let n = results.iter().filter(|r| r.state == *s).count();
            (n > 0).then(|| format!("{n} {}", s.as_str()))
        })
        .collect();
    format!(
        "{} VM{}: {} ({:.1} s)",
        results.len(),
        if results.len() == 1 { "" } else { "s" },
        if counts.is_empty() {
            "none".to_string()
        } else {
            counts.join(", ")
        },
        elapsed.as_secs_f64()
    )
}

fn age(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// The list, one object per VM.
pub fn json(results: &[VmResult]) -> String {
    let mut s = serde_json::to_string_pretty(results).expect("JSON of the fleet");
    s.push('\n');
    s
}

/// The Prometheus text exposition format (0.0.4). VMs expected to answer (running, agent on) get
/// `guestprep_vm_up` and `guestprep_vm_compliant` (0 when there is no fresh compliant report, so
/// `guestprep_vm_compliant == 0` also catches a VM that stopped answering); those with a report
/// its item counts and age; every VM one `guestprep_vm_state` series per state (1 for its own).
/// An `unmanaged` VM (a system guestprep does not manage) has no `guestprep_vm_compliant`.
pub fn prometheus(results: &[VmResult], now_unix: i64, elapsed: std::time::Duration) -> String {
    let mut o = String::new();
    let vm_labels = |r: &VmResult, extra: &[(&str, &str)]| {
        let id = r.vmid.to_string();
        let mut pairs = vec![
            ("vmid", id.as_str()),
            ("name", r.name.as_deref().unwrap_or("")),
        ];
        pairs.extend_from_slice(extra);
        crate::export::labels(&pairs)
    };
    let mut metric = |name: &str, help: &str, samples: Vec<(String, String)>| {
        crate::export::gauge(&mut o, name, help, samples)
    };
    let expected: Vec<&VmResult> = results.iter().filter(|r| r.state.expects_agent()).collect();
    metric(
        "guestprep_vm_up",
        "1 when the VM's guest agent answered.",
        expected
            .iter()
            .map(|r| (vm_labels(r, &[]), u8::from(r.up).to_string()))
            .collect(),
    );
    // An unmanaged system (Talos…) has no compliance to speak of: no series, so the alert on
    // `guestprep_vm_compliant == 0` stays quiet; its `guestprep_vm_state` says `unmanaged`.
    metric(
        "guestprep_vm_compliant",
        "1 for a fresh compliant report (a pending reboot allowed), 0 for anything else.",
        expected
            .iter()
            .filter(|r| r.state != State::Unmanaged)
            .map(|r| (vm_labels(r, &[]), u8::from(r.compliant).to_string()))
            .collect(),
    );
    let mut items = Vec::new();
    for r in results {
        if let Some(s) = &r.summary {
            for (status, n) in s.by_status() {
                items.push((vm_labels(r, &[("status", status.as_str())]), n.to_string()));
            }
        }
    }
    metric(
        "guestprep_vm_items",
        "Items of the VM's last report, by status.",
        items,
    );
    metric(
        "guestprep_vm_report_age_seconds",
        "Age of the VM's report by the guest's clock.",
        results
            .iter()
            .filter_map(|r| {
                r.report_age_seconds
                    .map(|a| (vm_labels(r, &[]), format!("{a}")))
            })
            .collect(),
    );
    let mut states = Vec::new();
    for r in results {
        for s in State::ALL {
            states.push((
                vm_labels(r, &[("state", s.as_str())]),
                u8::from(r.state == s).to_string(),
            ));
        }
    }
    metric(
        "guestprep_vm_state",
        "1 for the VM's state (compliant, drift, stale, no-answer, agent-off, stopped…), 0 for the others.",
        states,
    );
    metric(
        "guestprep_vm_info",
        "The guestprep version and seal id of the VM's report.",
        results
            .iter()
            .filter(|r| r.guestprep_version.is_some())
            .map(|r| {
                (
                    vm_labels(
                        r,
                        &[
                            ("version", r.guestprep_version.as_deref().unwrap_or("")),
                            ("seal_id", r.seal_id.as_deref().unwrap_or("")),
                        ],
                    ),
                    "1".to_string(),
                )
            })
            .collect(),
    );
    metric(
        "guestprep_fleet_last_run_timestamp_seconds",
        "When guestprep fleet last ran, in seconds since the epoch.",
        vec![(String::new(), now_unix.to_string())],
    );
    metric(
        "guestprep_fleet_duration_seconds",
        "How long guestprep fleet took to ask every VM.",
        vec![(String::new(), format!("{:.3}", elapsed.as_secs_f64()))],
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Vm;

    fn r(vmid: u32, name: &str, state: State) -> VmResult {
        let vm = Vm {
            vmid,
            name: Some(name.into()),
            agent: Some(true),
            running: state != State::Stopped,
            socket: None,
            problem: None,
        };
        let mut r = VmResult::new(&vm, state, None);
        r.up = state.has_fresh_report();
        r
    }

    #[test]
    fn textfile_series() {
        let rs = [
            r(100, "k8s \"a\"\n", State::Compliant),
            r(101, "b", State::NoAnswer),
            r(102, "c", State::AgentOff),
        ];
        let t = prometheus(&rs, 1_800_000_000, std::time::Duration::from_millis(1500));
        assert!(
            t.contains("guestprep_vm_compliant{vmid=\"100\",name=\"k8s \\\"a\\\"\\n\"} 1\n"),
            "{t}"
        );
        assert!(
            t.contains("guestprep_vm_compliant{vmid=\"101\",name=\"b\"} 0\n"),
            "{t}"
        );
        assert!(
            t.contains("guestprep_vm_up{vmid=\"101\",name=\"b\"} 0\n"),
            "{t}"
        );
        // The VM with its agent off is neither up nor down, only in its state.
        assert!(!t.contains("guestprep_vm_up{vmid=\"102\""), "{t}");
        assert!(
            t.contains("guestprep_vm_state{vmid=\"102\",name=\"c\",state=\"agent-off\"} 1\n"),
            "{t}"
        );
        assert!(
            t.contains("guestprep_vm_state{vmid=\"102\",name=\"c\",state=\"compliant\"} 0\n"),
            "{t}"
        );
        assert!(
            t.contains("guestprep_fleet_duration_seconds 1.500\n"),
            "{t}"
        );
    }

    #[test]
    fn table_has_a_row_per_vm_and_the_reasons() {
        let mut a = r(100, "k8s-a", State::NoAnswer);
        a.message = Some("did not answer".into());
        let t = table(
            &[a, r(101, "k8s-b", State::Compliant)],
            std::time::Duration::from_secs(2),
        );
        let lines: Vec<_> = t.lines().collect();
        assert!(lines[0].starts_with("VMID  NAME"), "{t}");
        assert!(lines[1].starts_with("100   k8s-a  no-answer"), "{t}");
        assert!(t.contains("100: did not answer"), "{t}");
        assert!(
            t.ends_with("2 VMs: 1 compliant, 1 no-answer (2.0 s)\n"),
            "{t}"
        );
    }

    #[test]
    fn ages() {
        assert_eq!(age(0.4), "0s");
        assert_eq!(age(59.0), "59s");
        assert_eq!(age(61.0), "1m");
        assert_eq!(age(7200.0), "2h");
        assert_eq!(age(1e9), "11574d");
    }
}
