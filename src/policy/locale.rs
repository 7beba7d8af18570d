//! `[locale]`: locales generated and the system's default, its keys, validation and typed value
//! (the items are `resources/locale.rs`).
//!
//! ```toml
//! [locale]
//! generate = ["en_US.UTF-8", "de_DE.UTF-8"]
//! lang = "en_US.UTF-8"
//! ```

use serde::Serialize;

use super::tree::{Origin, Table};
use super::validate::V;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Locale {
    /// Locales to generate (`NAME.CHARSET`, as /etc/locale.gen lists them).
    pub generate: Vec<String>,
    /// The system's `LANG` (/etc/default/locale; systemd-localed live).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
}

/// The locales every glibc has without generating them.
pub fn builtin(name: &str) -> bool {
    matches!(name, "C" | "POSIX" | "C.UTF-8" | "C.utf8")
}

/// A locale as /etc/locale.gen names it: `ll_CC.CHARSET[@modifier]`.
fn check_locale(s: &str) -> Result<(), String> {
    let ok = s.contains('.')
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
        && s.starts_with(|c: char| c.is_ascii_alphabetic());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not a locale like \"en_US.UTF-8\" (language_TERRITORY.CHARSET, as in /etc/locale.gen)"
        ))
    }
}

impl V {
    pub(super) fn locale(&mut self, t: &Table, origin: &Origin) -> Locale {
        self.known_keys(t, "locale", &["generate", "lang"]);
        let generate = self.list(t, "locale", "generate", check_locale);
        let lang = self.string(t, "locale", "lang");
        if let Some(l) = &lang {
            let o = &t.entries["lang"].node.origin;
            if let Err(m) = check_locale(l).or_else(|e| if builtin(l) { Ok(()) } else { Err(e) }) {
                self.err(o, "locale.lang", m);
            } else if !builtin(l) && !generate.contains(l) {
                self.err(
                    o,
                    "locale.lang",
                    format!("`{l}` is not generated: add it to `generate` (or use C.UTF-8)"),
                );
            }
        }
        if generate.is_empty() && lang.is_none() {
            self.err(
                origin,
                "locale",
                "an empty [locale]: give `generate`, `lang` or both",
            );
        }
        Locale { generate, lang }
    }
}
