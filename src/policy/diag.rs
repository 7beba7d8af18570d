//! Policy diagnostics: one problem in one fragment, pointed at like a compiler does.

use std::fmt;

use super::tree::Origin;

/// One problem found in the policy: where, which key, what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    pub origin: Origin,
    /// Dotted key path (`chrony.servers[1]`); empty for syntax errors.
    pub key: String,
    pub message: String,
}

impl Diagnostic {
    pub fn new(origin: Origin, key: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            origin,
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A key or a quoted value may hold any character TOML allows in a string: NUL, ESC,
        // a newline. Printed escaped, so a terminal shows them instead of obeying them.
        use crate::text::escape;
        let origin = self.origin.to_string();
        if self.key.is_empty() {
            write!(f, "{}: {}", escape(&origin), escape(&self.message))
        } else {
            let key = escape(&self.key);
            write!(f, "{}: `{key}`: {}", escape(&origin), escape(&self.message))
        }
    }
}

/// Every problem of a policy, sorted by file and position. This is the error `policy check`,
/// `apply` and `verify` stop on (exit code 2) before touching anything.
#[derive(Debug, thiserror::Error)]
pub struct InvalidPolicy(pub Vec<Diagnostic>);

impl fmt::Display for InvalidPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "error: {d}")?;
        }
        let n = self.0.len();
        write!(
            f,
            "invalid policy: {n} error{}",
            if n == 1 { "" } else { "s" }
        )
    }
}
