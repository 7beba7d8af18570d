//! Fuzz target: what a guest agent (an untrusted guest) can send the host. An answer line, a
//! report read from the guest, its /proc/uptime, a base64 payload: never a panic, and whatever is
//! printed for a person carries no raw control character.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = guestprep::qga::parse_answer(data, "guest-file-read");
    let _ = guestprep::qga::parse_uptime(data);
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
    }
});
