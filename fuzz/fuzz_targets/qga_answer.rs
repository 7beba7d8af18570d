//! Fuzz target: what a guest agent (an untrusted guest) can send the host, and what a Proxmox
//! node's files say of a VM. An answer line, a report read from the guest (shown alone and in
//! `fleet`'s table and textfile), its /proc/uptime, a base64 payload, a file-read chunk, an exec
//! status, a VM configuration: never a panic, messages short, and whatever is printed for a
//! person carries no raw control character.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = guestprep::qga::parse_answer(data, "guest-file-read");
    // A file-read chunk (never more than its limit, never a claimed byte not sent) and an
    // exec status, each decoded from the line itself; every message a short excerpt.
    let mut file = Vec::new();
    match guestprep::qga::file_chunk(data, &mut file, 1 << 16) {
        Ok(_) => assert!(file.len() <= 1 << 16),
        Err(e) => assert!(e.to_string().len() < 4096, "a long message"),
    }
    if let Err(e) = guestprep::qga::exec_status(data) {
        assert!(e.to_string().len() < 4096, "a long message");
    }
    let _ = guestprep::clock::parse_uptime(data);
    let _ = guestprep::qga::decode(&String::from_utf8_lossy(data));
    if let Ok(r) = serde_json::from_slice::<guestprep::report::ComplianceReport>(data) {
        let mut out = Vec::new();
        guestprep::output::human(&mut out, &r, &guestprep::output::Style::plain()).unwrap();
        let text = String::from_utf8(out).expect("UTF-8");
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "a control character reaches the terminal: {text:?}"
        );
        let _ = guestprep::exit::ExitCode::from_code(r.exit_code);
        let _ = guestprep::report::parse_rfc3339(&r.generated_at);
        // As `guestprep fleet` shows it: the guest's seal id and version in the table.
        let vm = guestprep::fleet::VmResult {
            vmid: 100,
            name: r.host.hostname.clone(),
            compliant: r.compliant,
            state: guestprep::fleet::State::Drift,
            reason: None,
            message: None,
            running: true,
            agent: Some(true),
            up: true,
            report_age_seconds: Some(1.0),
            generated_at: Some(r.generated_at.clone()),
            exit_code: Some(r.exit_code),
            summary: Some(r.summary.clone()),
            seal_id: r.seal.as_ref().map(|s| s.seal_id.clone()),
            guestprep_version: Some(r.guestprep_version.clone()),
            duration_ms: 1,
            report: None,
        };
        let vms = [vm];
        let table = guestprep::fleet::render::table(&vms, std::time::Duration::from_millis(5));
        assert!(
            !table.chars().any(|c| c.is_control() && c != '\n'),
            "a control character reaches the terminal: {table:?}"
        );
        let _ = guestprep::fleet::render::prometheus(&vms, 0, std::time::Duration::ZERO);
        let _ = guestprep::fleet::render::json(&vms);
    }
    let _ = guestprep::guest_report::parse(data, "report.json");
    let _ = guestprep::fleet::pve::parse_config(&String::from_utf8_lossy(data));
});
