//! Fuzz target: the policy parser and validator. Properties, for any input:
//! - it gives a policy or diagnostics, never a panic, and every diagnostic points inside the input;
//! - a valid policy shown as TOML (`policy show`'s rendering of the merged tree) parses again to
//!   the same policy: the same digest;
//! - merging a fragment over itself changes nothing: the same digest as the fragment alone.
#![no_main]

use std::path::PathBuf;

use guestprep::policy::{LoadError, load_texts};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let one = vec![(PathBuf::from("fuzz.toml"), text.to_string())];
    let twice = vec![
        (PathBuf::from("a.toml"), text.to_string()),
        (PathBuf::from("b.toml"), text.to_string()),
    ];
    let (first, second) = (load_texts(&one), load_texts(&twice));
    match (&first, &second) {
        (Ok(a), Ok(b)) => assert_eq!(a.digest(), b.digest(), "a fragment merged over itself"),
        (Err(_), Err(_)) => {}
        _ => panic!("the fragment alone and merged over itself disagree on validity"),
    }
    match first {
        Ok(loaded) => {
            let shown = loaded.tree.render();
            let again = load_texts(&[(PathBuf::from("shown.toml"), shown.clone())])
                .unwrap_or_else(|e| panic!("the shown policy does not parse: {e}\n{shown}"));
            assert_eq!(loaded.digest(), again.digest(), "shown and parsed again:\n{shown}");
        }
        Err(LoadError::Invalid(inv)) => {
            assert!(!inv.0.is_empty());
            let lines = text.lines().count().max(1);
            for d in &inv.0 {
                assert!(d.origin.line >= 1 && d.origin.line <= lines + 1, "{d}");
            }
        }
        Err(e) => panic!("not a diagnostic from in-memory text: {e}"),
    }
});
