//! A unit file's `[Install]` section as `systemctl enable` reads it, and template names.

use super::offline::ETC;

/// The `[Install]` section of a unit file.
#[derive(Debug, Default)]
pub(super) struct Install {
    pub(super) wanted_by: Vec<String>,
    pub(super) required_by: Vec<String>,
    pub(super) upheld_by: Vec<String>,
    pub(super) alias: Vec<String>,
    pub(super) also: Vec<String>,
    pub(super) default_instance: Option<String>,
}

impl Install {
    pub(super) fn is_empty(&self) -> bool {
        self.wanted_by.is_empty()
            && self.required_by.is_empty()
            && self.upheld_by.is_empty()
            && self.alias.is_empty()
            && self.also.is_empty()
    }

    /// The symlinks enabling creates: (path, which unit name it is).
    pub(super) fn links(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (targets, dir) in [
            (&self.wanted_by, "wants"),
            (&self.required_by, "requires"),
            (&self.upheld_by, "upholds"),
        ] {
            for t in targets {
                out.push(format!("{ETC}/{t}.{dir}/{name}"));
            }
        }
        for a in &self.alias {
            out.push(format!("{ETC}/{a}"));
        }
        out
    }
}

pub(super) fn parse_install(text: &str) -> Install {
    let mut inst = Install::default();
    let mut in_install = false;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            in_install = l == "[Install]";
            continue;
        }
        if !in_install || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        let Some((k, v)) = l.split_once('=') else {
            continue;
        };
        let words = || v.split_whitespace().map(str::to_string);
        match k.trim() {
            "WantedBy" => inst.wanted_by.extend(words()),
            "RequiredBy" => inst.required_by.extend(words()),
            "UpheldBy" => inst.upheld_by.extend(words()),
            "Alias" => inst.alias.extend(words()),
            "Also" => inst.also.extend(words()),
            "DefaultInstance" => inst.default_instance = Some(v.trim().to_string()),
            _ => {}
        }
    }
    inst
}

/// For `foo@bar.service`, the template `foo@.service`.
pub(super) fn template_of(name: &str) -> Option<String> {
    let (stem, suffix) = name.rsplit_once('.')?;
    let (prefix, instance) = stem.split_once('@')?;
    (!instance.is_empty()).then(|| format!("{prefix}@.{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_install() {
        let i = parse_install(
            "[Unit]\nWantedBy=nope\n[Install]\nWantedBy=multi-user.target\nAlias=chronyd.service\nAlso=a.socket b.socket\n",
        );
        assert_eq!(i.wanted_by, ["multi-user.target"]);
        assert_eq!(i.alias, ["chronyd.service"]);
        assert_eq!(i.also, ["a.socket", "b.socket"]);
        assert_eq!(
            template_of("getty@tty1.service").as_deref(),
            Some("getty@.service")
        );
        assert_eq!(template_of("getty@.service"), None);
    }
}
