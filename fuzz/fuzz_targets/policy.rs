//! Fuzz target: the policy parser and validator. Any input must give a policy or diagnostics, never
//! a panic; a policy that validates must serialize and give a stable digest; every diagnostic must
//! point inside the input.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // Two fragments: the input alone, and the input merged over itself (exercises the merge).
    for texts in [
        vec![(PathBuf::from("fuzz.toml"), text.to_string())],
        vec![(PathBuf::from("a.toml"), text.to_string()), (PathBuf::from("b.toml"), text.to_string())],
    ] {
        match guestprep::policy::load_texts(&texts) {
            Ok(loaded) => {
                assert_eq!(loaded.digest(), loaded.digest());
                let _ = serde_json::to_string(&loaded.policy).unwrap();
            }
            Err(guestprep::policy::LoadError::Invalid(inv)) => {
                assert!(!inv.0.is_empty());
                let lines = text.lines().count().max(1);
                for d in &inv.0 {
                    assert!(d.origin.line >= 1 && d.origin.line <= lines + 1, "{d}");
                }
            }
            Err(guestprep::policy::LoadError::Io(e)) => panic!("I/O error from in-memory text: {e}"),
        }
    }
});
