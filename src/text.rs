//! Text for messages: control characters escaped, and short excerpts of untrusted bytes.
//!
//! Anything guestprep quotes from outside (a policy key, a path in an image, a guest agent's
//! answer) goes through [`escape`] or [`excerpt`] before it reaches a terminal: a NUL, ESC, BEL or
//! newline in a quoted key would otherwise be printed raw.

use std::borrow::Cow;
use std::fmt::Write;

/// `s` with every control character (C0, DEL, C1) written as `\n`, `\t`, `\e` or `\u{..}`.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{1b}' => out.push_str("\\e"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A multi-line message for a terminal: every control character but the newline escaped (the
/// lines are guestprep's own; what they quote is escaped again where it is quoted).
pub fn escape_lines(s: &str) -> String {
    s.split('\n')
        .map(|l| escape(l).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// At most `max` characters of `bytes` (lossy UTF-8), escaped, with the total length when cut.
pub fn excerpt(bytes: &[u8], max: usize) -> String {
    let head = &bytes[..bytes.len().min(max.saturating_mul(4))];
    let text = String::from_utf8_lossy(head);
    let cut: String = text.chars().take(max).collect();
    let shown = escape(&cut).into_owned();
    if cut.len() < bytes.len() {
        format!("{shown}… ({} bytes in all)", bytes.len())
    } else {
        shown
    }
}

/// At most `max` characters of what `d` displays, escaped, `…` when cut. The text is never
/// formatted whole: a parser's message that quotes a 40 MiB string costs `max` characters.
pub fn excerpt_of(d: &impl std::fmt::Display, max: usize) -> String {
    struct Capped {
        text: String,
        room: usize,
        cut: bool,
    }
    impl Write for Capped {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            for c in s.chars() {
                if self.room == 0 {
                    self.cut = true;
                    return Err(std::fmt::Error);
                }
                self.text.push(c);
                self.room -= 1;
            }
            Ok(())
        }
    }
    let mut w = Capped {
        text: String::new(),
        room: max,
        cut: false,
    };
    let _ = write!(w, "{d}");
    let shown = escape(&w.text).into_owned();
    if w.cut { format!("{shown}…") } else { shown }
}

/// Glob matching with `*` (any run of characters) and `?` (one character); anything else is
/// literal.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The allowed value closest to a misspelt one, for "did you mean": a missing `@openssh.com`
/// suffix first, then the nearest by edit distance (`strsim`), if it is near enough.
pub fn closest<'a>(s: &str, allowed: &[&'a str]) -> Option<&'a str> {
    // `aes256-gcm` for `aes256-gcm@openssh.com`: a missing suffix is the commonest slip.
    if let Some(p) = allowed
        .iter()
        .find(|a| a.len() > s.len() && a.starts_with(s) && a[s.len()..].starts_with('@'))
    {
        return Some(p);
    }
    allowed
        .iter()
        .map(|a| (strsim::levenshtein(s, a), *a))
        .filter(|(d, a)| *d <= 2.max(a.len() / 4))
        .min()
        .map(|(_, a)| a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape("a\u{0}b\u{1b}[2J\u{7}\n"), "a\\u{0}b\\e[2J\\u{7}\\n");
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
        assert_eq!(escape_lines("one\u{1b}\ntwo\u{7}"), "one\\e\ntwo\\u{7}");
    }

    #[test]
    fn excerpts_are_short_and_say_the_length() {
        let long = vec![b'x'; 31 << 20];
        let e = excerpt(&long, 80);
        assert!(e.len() < 120, "{e}");
        assert!(e.ends_with(&format!("({} bytes in all)", long.len())));
        assert_eq!(excerpt(b"ok", 80), "ok");
    }

    #[test]
    fn excerpts_of_a_display_stop_formatting_at_the_limit() {
        let long = "y".repeat(1 << 20);
        let e = excerpt_of(&format_args!("bad \u{1b} {long}"), 10);
        assert_eq!(e, "bad \\e yyyy…");
        assert_eq!(excerpt_of(&7, 10), "7");
    }

    #[test]
    fn typo_suggestions() {
        assert_eq!(
            closest("sever", &["servers", "pools"]),
            None.or(Some("servers"))
        );
        assert_eq!(closest("xyzzy", &["servers", "pools"]), None);
    }
}
