//! `[locale]`: locales generated, and the system's `LANG`.
//!
//! `locale:generate` checks what glibc reads: the locale archive (`/usr/lib/locale/locale-archive`,
//! parsed without a subprocess: its name hash table) or a locale directory, and that
//! `/etc/locale.gen` lists the locale (so the next `locale-gen` keeps it). Apply enables the lines
//! in locale.gen and runs `locale-gen` (live, or `--chroot`). `locale:lang` checks
//! the file that holds LANG (`/etc/locale.conf`, to which Debian 13 links `/etc/default/locale`;
//! else `/etc/default/locale`) and writes it as `update-locale` does, live and offline (Debian's
//! systemd-localed is read-only on the bus: its `SetLocale` is denied).

use anyhow::{Result, bail};
use serde_json::json;

use crate::engine::{Change, Observation, Resource, System};
use crate::policy::Locale;
use crate::report::Status;

const LOCALE_GEN: &str = "/etc/locale.gen";
const ARCHIVE: &str = "/usr/lib/locale/locale-archive";
const LOCALE_DIR: &str = "/usr/lib/locale";
const DEFAULT: &str = "/etc/default/locale";
const LOCALE_CONF: &str = "/etc/locale.conf";

/// The file that holds LANG: Debian 13 makes /etc/default/locale a link to systemd's
/// /etc/locale.conf (measured); older images have /etc/default/locale itself. guestprep never
/// writes through the link: it writes the file the link names.
fn lang_file(sys: &System) -> Result<&'static str> {
    Ok(match sys.lstat(DEFAULT)? {
        crate::root::Node::Symlink(t)
            if t == std::path::Path::new("../locale.conf")
                || t == std::path::Path::new(LOCALE_CONF) =>
        {
            LOCALE_CONF
        }
        crate::root::Node::Missing if sys.exists(LOCALE_CONF) => LOCALE_CONF,
        _ => DEFAULT,
    })
}

pub fn resources(l: &Locale) -> Vec<Box<dyn Resource>> {
    let mut out: Vec<Box<dyn Resource>> = Vec::new();
    if !l.generate.is_empty() {
        out.push(Box::new(Generate {
            names: l.generate.clone(),
        }));
    }
    if let Some(lang) = &l.lang {
        out.push(Box::new(Lang { lang: lang.clone() }));
    }
    out
}

/// glibc's normalised name: the codeset lowercased without punctuation (`en_US.UTF-8` →
/// `en_US.utf8`), as the archive and `locale -a` list it.
pub fn normalized(name: &str) -> String {
    let (base, modifier) = match name.split_once('@') {
        Some((b, m)) => (b, Some(m)),
        None => (name, None),
    };
    let mut out = match base.split_once('.') {
        Some((l, cs)) => format!(
            "{l}.{}",
            cs.chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_ascii_lowercase()
        ),
        None => base.to_string(),
    };
    if let Some(m) = modifier {
        out.push('@');
        out.push_str(m);
    }
    out
}

/// The locale names a glibc locale archive holds (its `namehashent` table; locarchive.h).
pub fn archive_names(b: &[u8]) -> Result<Vec<String>> {
    let u32_at = |at: usize| -> Option<u32> {
        b.get(at..at + 4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    };
    if u32_at(0) != Some(0xde02_0109) {
        bail!("not a glibc locale archive (bad magic)");
    }
    let (Some(off), Some(size)) = (u32_at(8), u32_at(16)) else {
        bail!("truncated locale archive");
    };
    let mut out = Vec::new();
    for i in 0..size as usize {
        let at = off as usize + i * 12;
        let Some(name_off) = u32_at(at + 4) else {
            bail!("truncated locale archive");
        };
        if name_off == 0 {
            continue;
        }
        let Some(rest) = b.get(name_off as usize..) else {
            bail!("a locale name outside the archive");
        };
        let end = rest.iter().take(256).position(|c| *c == 0).unwrap_or(0);
        out.push(String::from_utf8_lossy(&rest[..end]).into_owned());
    }
    Ok(out)
}

/// locale.gen with the lines for `names` enabled (uncommented, or added): (content, changed).
pub fn enable_in_locale_gen(text: &str, names: &[String]) -> (String, bool) {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut changed = false;
    for name in names {
        let charset = name
            .split_once('.')
            .map_or("UTF-8", |(_, c)| c.split('@').next().unwrap_or(c));
        let first = |l: &str| l.split_whitespace().next().map(str::to_string);
        if lines
            .iter()
            .any(|l| first(l).as_deref() == Some(name.as_str()))
        {
            continue;
        }
        changed = true;
        match lines.iter().position(|l| {
            let t = l.trim_start_matches('#').trim_start();
            t.split_whitespace().next() == Some(name.as_str())
        }) {
            Some(i) => lines[i] = lines[i].trim_start_matches('#').trim_start().to_string(),
            None => lines.push(format!("{name} {charset}")),
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    (out, changed)
}

pub struct Generate {
    pub names: Vec<String>,
}

impl Generate {
    fn generated(&self, sys: &System) -> Result<Vec<String>> {
        let mut have = match sys.read(ARCHIVE)? {
            Some(b) => archive_names(&b)?,
            None => Vec::new(),
        };
        have.extend(sys.list_dir(LOCALE_DIR)?);
        Ok(have)
    }
}

impl Resource for Generate {
    fn id(&self) -> String {
        "locale:generate".to_string()
    }

    fn kind(&self) -> &'static str {
        "locale"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let expected = json!({"generated": self.names});
        let Some(gen_text) = sys.read_string(LOCALE_GEN)? else {
            return Ok(Observation::new(
                Status::Drift,
                expected,
                json!(null),
                format!("no {LOCALE_GEN}: install the `locales` package"),
            ));
        };
        let have = self.generated(sys)?;
        let missing: Vec<&String> = self
            .names
            .iter()
            .filter(|n| !have.contains(&normalized(n)))
            .collect();
        let (new_gen, gen_changed) = enable_in_locale_gen(&gen_text, &self.names);
        let actual = json!({"missing": missing, "listedInLocaleGen": !gen_changed});
        let mut problems = Vec::new();
        if !missing.is_empty() {
            problems.push(format!(
                "not generated: {}",
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if gen_changed {
            problems.push(format!("{LOCALE_GEN} does not list all of them"));
        }
        let mut obs = Observation::judged(expected, actual, &problems, "");
        if obs.status == Status::Drift {
            if let Some(why) = sys.cannot_change() {
                obs.message = format!(
                    "{}; locale-gen runs live or with `apply --chroot` ({why})",
                    obs.message
                );
            }
            obs.data = json!({"localeGen": gen_changed.then_some(new_gen)});
            obs.current = Some(gen_text.into_bytes());
        }
        Ok(obs)
    }

    fn plan(&self, sys: &System, obs: &Observation) -> Vec<Change> {
        if obs.status != Status::Drift {
            return Vec::new();
        }
        let mut plan = Vec::new();
        if let Some(text) = obs.data["localeGen"].as_str() {
            plan.push(Change::Write {
                path: LOCALE_GEN.into(),
                content: text.as_bytes().to_vec(),
                mode: None,
                old: obs.current.clone(),
            });
        }
        if sys.cannot_change().is_none() {
            plan.push(Change::Run {
                argv: vec!["locale-gen".into()],
            });
        }
        plan
    }
}

/// `LANG` in /etc/default/locale (quotes removed).
fn lang_of(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        l.trim()
            .strip_prefix("LANG=")
            .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_string())
    })
}

pub struct Lang {
    pub lang: String,
}

impl Resource for Lang {
    fn id(&self) -> String {
        "locale:lang".to_string()
    }

    fn kind(&self) -> &'static str {
        "locale"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let expected = json!({"LANG": self.lang});
        let file = lang_file(sys)?;
        let text = sys.read_string(file)?;
        let have = text.as_deref().and_then(lang_of);
        let actual = json!({"LANG": have, "file": file});
        let problems: Vec<String> = match &have {
            Some(h) if *h == self.lang => Vec::new(),
            Some(h) => vec![format!("{file} sets LANG={h}")],
            None => vec![format!("{file} sets no LANG")],
        };
        let mut obs = Observation::judged(expected, actual, &problems, "");
        obs.current = text.map(String::into_bytes);
        obs.data = json!({"file": file});
        Ok(obs)
    }

    fn plan(&self, _sys: &System, obs: &Observation) -> Vec<Change> {
        if obs.status != Status::Drift {
            return Vec::new();
        }
        // The file update-locale writes, other variables kept. Debian 13 ships systemd-localed
        // read-only on the bus (systemd-localed-read-only.conf: `SetLocale` is denied, measured),
        // because the locales package owns this file; localed reads it when asked.
        let old = String::from_utf8_lossy(obs.current.as_deref().unwrap_or_default()).into_owned();
        let mut lines: Vec<String> = old
            .lines()
            .filter(|l| !l.trim().starts_with("LANG="))
            .map(str::to_string)
            .collect();
        lines.insert(0, format!("LANG={}", self.lang));
        vec![Change::Write {
            path: obs.data["file"].as_str().unwrap_or(DEFAULT).into(),
            content: format!("{}\n", lines.join("\n")).into_bytes(),
            mode: Some(0o644),
            old: obs.current.clone(),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_locale_gen() {
        assert_eq!(normalized("en_US.UTF-8"), "en_US.utf8");
        assert_eq!(normalized("de_DE.ISO-8859-15@euro"), "de_DE.iso885915@euro");
        let gen_text = "# en_GB.UTF-8 UTF-8\n# en_US.UTF-8 UTF-8\nde_DE.UTF-8 UTF-8\n";
        let (out, changed) = enable_in_locale_gen(
            gen_text,
            &[
                "en_US.UTF-8".into(),
                "de_DE.UTF-8".into(),
                "fr_FR.UTF-8".into(),
            ],
        );
        assert!(changed);
        assert_eq!(
            out,
            "# en_GB.UTF-8 UTF-8\nen_US.UTF-8 UTF-8\nde_DE.UTF-8 UTF-8\nfr_FR.UTF-8 UTF-8\n"
        );
        assert_eq!(
            enable_in_locale_gen(&out, &["en_US.UTF-8".into()]),
            (out.clone(), false)
        );
        assert_eq!(
            lang_of("LANG=\"en_US.UTF-8\"\nLC_TIME=C\n").as_deref(),
            Some("en_US.UTF-8")
        );
    }

    #[test]
    fn archive_garbage_is_an_error() {
        assert!(archive_names(b"nope").is_err());
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(&0xde02_0109u32.to_le_bytes());
        b[8..12].copy_from_slice(&1000u32.to_le_bytes());
        b[16..20].copy_from_slice(&5u32.to_le_bytes());
        assert!(archive_names(&b).is_err());
    }
}
