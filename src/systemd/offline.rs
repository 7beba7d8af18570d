//! The offline backend: what `systemctl --root DIR` does to an image's files.
//!
//! Masking is a symlink `etc/systemd/system/NAME -> /dev/null`; enabling follows the unit's
//! `[Install]` section (`WantedBy=`, `RequiredBy=`, `UpheldBy=` symlinks in `.wants/`,
//! `.requires/`, `.upholds/`, `Alias=` symlinks, `Also=` units), linking to the unit file where
//! systemd finds it; the unit-file state is read back from those files. Every symlink is created
//! atomically (made under a temp name, then renamed). Starting and stopping need a running system
//! and are refused.

use std::path::Path;

use anyhow::{Result, bail};

use super::{FileChange, UnitManager, UnitState};
use crate::root::{Node, Root};

const ETC: &str = "/etc/systemd/system";

/// Unit search path, highest precedence first (as systemd's, without the runtime directories).
const SEARCH: &[&str] = &[
    ETC,
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

pub struct OfflineUnits {
    root: Root,
}

/// The `[Install]` section of a unit file.
#[derive(Debug, Default)]
struct Install {
    wanted_by: Vec<String>,
    required_by: Vec<String>,
    upheld_by: Vec<String>,
    alias: Vec<String>,
    also: Vec<String>,
    default_instance: Option<String>,
}

impl Install {
    fn is_empty(&self) -> bool {
        self.wanted_by.is_empty()
            && self.required_by.is_empty()
            && self.upheld_by.is_empty()
            && self.alias.is_empty()
            && self.also.is_empty()
    }

    /// The symlinks enabling creates: (path, which unit name it is).
    fn links(&self, name: &str) -> Vec<String> {
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

fn parse_install(text: &str) -> Install {
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
fn template_of(name: &str) -> Option<String> {
    let (stem, suffix) = name.rsplit_once('.')?;
    let (prefix, instance) = stem.split_once('@')?;
    (!instance.is_empty()).then(|| format!("{prefix}@.{suffix}"))
}

impl OfflineUnits {
    pub fn new(root: Root) -> Self {
        OfflineUnits { root }
    }

    fn is_masked_link(&self, abs: &str) -> Result<bool> {
        Ok(self
            .root
            .read_link(abs)?
            .is_some_and(|t| t == Path::new("/dev/null")))
    }

    fn is_link_to(&self, abs: &str, target: &str) -> Result<bool> {
        Ok(self
            .root
            .read_link(abs)?
            .is_some_and(|t| t == Path::new(target)))
    }

    /// Where systemd would find the unit file (the template for an instance), following an
    /// `/etc` symlink that points into another search directory; skips masks.
    fn find(&self, name: &str) -> Result<Option<String>> {
        let mut names = vec![name.to_string()];
        names.extend(template_of(name));
        for n in &names {
            for dir in SEARCH {
                // /lib is /usr/lib on a merged-/usr system: systemd reports the /usr path.
                if *dir == "/lib/systemd/system"
                    && matches!(self.root.lstat("/lib")?, Node::Symlink(_))
                {
                    continue;
                }
                let abs = format!("{dir}/{n}");
                if self.root.lstat(&abs)? == Node::Missing || self.is_masked_link(&abs)? {
                    continue;
                }
                match self.root.stat(&abs)? {
                    Node::File { .. } => return Ok(Some(abs)),
                    // systemd refuses a unit file that is not regular (stat_verify_regular): say
                    // what is there rather than "not found".
                    Node::Other(kind) => {
                        return Err(crate::saferead::NotRegular { path: abs, kind }.into());
                    }
                    _ => {}
                }
            }
        }
        Ok(None)
    }

    fn install_of(&self, unit_path: &str) -> Result<Install> {
        let text = self.root.read_string(unit_path)?.unwrap_or_default();
        Ok(parse_install(&text))
    }

    /// Creates `abs -> target` atomically; an existing identical link is left alone. Through the
    /// parent's descriptor inside the root: an image whose /etc/systemd is a symlink to a host
    /// path cannot make this write on the host.
    fn symlink(&self, abs: &str, target: &str) -> Result<Option<FileChange>> {
        if self.is_link_to(abs, target)? {
            return Ok(None);
        }
        for stale in crate::fsutil::clean_stale_temps(&self.root, abs)? {
            tracing::warn!(file = %stale.display(), "removed temp symlink left by an interrupted run");
        }
        if !crate::fsutil::symlink_atomic(&self.root, abs, target)? {
            return Ok(None);
        }
        Ok(Some(FileChange {
            kind: "symlink".into(),
            path: abs.to_string(),
            dest: target.to_string(),
        }))
    }

    fn unlink(&self, abs: &str) -> Result<Option<FileChange>> {
        if !matches!(self.root.lstat(abs)?, Node::Symlink(_)) {
            return Ok(None);
        }
        crate::fsutil::remove(&self.root, abs)?;
        Ok(Some(FileChange {
            kind: "unlink".into(),
            path: abs.to_string(),
            dest: String::new(),
        }))
    }

    /// Every symlink under /etc/systemd/system (one level of `.wants/` etc. directories) named
    /// `name`, or pointing at `target`.
    fn links_to(&self, name: &str, target: Option<&str>) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in self.root.list_dir(ETC)? {
            let abs = format!("{ETC}/{entry}");
            let node = self.root.lstat(&abs)?;
            if matches!(node, Node::Dir { .. })
                && (entry.ends_with(".wants")
                    || entry.ends_with(".requires")
                    || entry.ends_with(".upholds"))
            {
                for sub in self.root.list_dir(&abs)? {
                    if sub == name {
                        let p = format!("{abs}/{sub}");
                        if matches!(self.root.lstat(&p)?, Node::Symlink(_)) {
                            out.push(p);
                        }
                    }
                }
            } else if let Node::Symlink(t) = &node
                && entry != name
                && target.is_some_and(|tg| t == Path::new(tg))
            {
                out.push(abs);
            }
        }
        Ok(out)
    }

    fn enable_inner(&self, name: &str, depth: usize, changes: &mut Vec<FileChange>) -> Result<()> {
        let Some(path) = self.find(name)? else {
            bail!(
                "unit {name} not found in {} (is its package installed?)",
                SEARCH.join(", ")
            );
        };
        if self.is_masked_link(&format!("{ETC}/{name}"))? {
            bail!("unit {name} is masked: unmask it first");
        }
        let inst = self.install_of(&path)?;
        let link_name = match (template_of(name), name.contains("@.")) {
            (_, true) => match &inst.default_instance {
                Some(i) => name.replacen("@.", &format!("@{i}."), 1),
                None => bail!(
                    "template {name} has no DefaultInstance: enable an instance (like {})",
                    name.replacen("@.", "@NAME.", 1)
                ),
            },
            _ => name.to_string(),
        };
        for link in inst.links(&link_name) {
            changes.extend(self.symlink(&link, &path)?);
        }
        if depth < 4 {
            for also in &inst.also {
                self.enable_inner(also, depth + 1, changes)?;
            }
        }
        Ok(())
    }

    fn disable_inner(&self, name: &str, depth: usize, changes: &mut Vec<FileChange>) -> Result<()> {
        let path = self.find(name)?;
        for link in self.links_to(name, path.as_deref())? {
            changes.extend(self.unlink(&link)?);
        }
        if let Some(p) = &path {
            let inst = self.install_of(p)?;
            for a in &inst.alias {
                let abs = format!("{ETC}/{a}");
                if self.is_link_to(&abs, p)? {
                    changes.extend(self.unlink(&abs)?);
                }
            }
            if depth < 4 {
                for also in &inst.also {
                    self.disable_inner(also, depth + 1, changes)?;
                }
            }
        }
        Ok(())
    }
}

impl UnitManager for OfflineUnits {
    fn state(&self, name: &str) -> Result<UnitState> {
        let masked = self.is_masked_link(&format!("{ETC}/{name}"))?;
        let mut missing_links = Vec::new();
        let file_state = if masked {
            "masked".to_string()
        } else {
            match self.find(name)? {
                None => "not-found".to_string(),
                Some(path) => {
                    let inst = self.install_of(&path)?;
                    if path.starts_with(ETC)
                        && matches!(self.root.lstat(&path)?, Node::Symlink(_))
                        && !path.ends_with(&format!("/{name}"))
                    {
                        "alias".to_string()
                    } else if inst.is_empty() {
                        "static".to_string()
                    } else if !self.links_to(name, Some(&path))?.is_empty() {
                        for link in inst.links(name) {
                            if !self.is_link_to(&link, &path)? {
                                missing_links.push(link);
                            }
                        }
                        "enabled".to_string()
                    } else {
                        "disabled".to_string()
                    }
                }
            }
        };
        Ok(UnitState {
            unit_file_state: file_state,
            active_state: None,
            sub_state: None,
            condition_failed: None,
            missing_links,
        })
    }

    fn mask(&self, name: &str) -> Result<Vec<FileChange>> {
        Ok(self
            .symlink(&format!("{ETC}/{name}"), "/dev/null")?
            .into_iter()
            .collect())
    }

    fn unmask(&self, name: &str) -> Result<Vec<FileChange>> {
        let abs = format!("{ETC}/{name}");
        if self.is_masked_link(&abs)? {
            Ok(self.unlink(&abs)?.into_iter().collect())
        } else {
            Ok(Vec::new())
        }
    }

    fn enable(&self, name: &str) -> Result<Vec<FileChange>> {
        let mut changes = Vec::new();
        self.enable_inner(name, 0, &mut changes)?;
        Ok(changes)
    }

    fn disable(&self, name: &str) -> Result<Vec<FileChange>> {
        let mut changes = Vec::new();
        self.disable_inner(name, 0, &mut changes)?;
        Ok(changes)
    }

    fn reload(&self) -> Result<()> {
        Ok(()) // nothing runs offline
    }

    fn start(&self, name: &str) -> Result<String> {
        bail!("cannot start {name} on an {}", self.root.describe())
    }

    fn stop(&self, name: &str) -> Result<String> {
        bail!("cannot stop {name} on an {}", self.root.describe())
    }

    fn runtime(&self, name: &str) -> Result<super::UnitRuntime> {
        bail!(
            "no run-time state of {name} on an {}: nothing runs there",
            self.root.describe()
        )
    }

    fn reload_or_try_restart(&self, name: &str) -> Result<String> {
        bail!("cannot reload {name} on an {}", self.root.describe())
    }

    fn try_restart(&self, name: &str) -> Result<String> {
        bail!("cannot restart {name} on an {}", self.root.describe())
    }

    fn settle(&self) -> Result<(String, Vec<String>)> {
        bail!(
            "an {} is not running: nothing to wait for",
            self.root.describe()
        )
    }
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
