//! GRUB's generated menu (`/boot/grub/grub.cfg`) as GRUB reads it at boot: the entries and
//! submenus with their titles, ids and `linux` lines, the `default` it is set to (an index, an id
//! or a title, or a `>`-separated path of them into submenus; `saved` from grubenv), and the
//! entry that default selects.

/// One `menuentry` or `submenu`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub title: String,
    /// `$menuentry_id_option 'ID'` (or `--id ID`).
    pub id: Option<String>,
    /// The kernel path of the first `linux` line (menu entries only).
    pub linux: Option<String>,
    /// The arguments that follow it.
    pub args: Vec<String>,
    /// Entries of a submenu; empty for a menu entry.
    pub children: Vec<Entry>,
    pub submenu: bool,
}

impl Entry {
    /// The kernel version the entry boots: `/boot/vmlinuz-VER` → VER.
    pub fn kernel(&self) -> Option<&str> {
        let l = self.linux.as_deref()?;
        l.rsplit('/').next()?.strip_prefix("vmlinuz-")
    }

    /// A recovery entry (Debian's and Ubuntu's: `single` or `recovery` among the arguments, or
    /// an id ending in `-recovery-…`).
    pub fn recovery(&self) -> bool {
        self.args.iter().any(|a| a == "single" || a == "recovery")
            || self.id.as_deref().is_some_and(|i| i.contains("-recovery-"))
    }
}

/// The words of a line, with GRUB's quoting: '…' literal, "…" and bare words with `\` escapes.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut has = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                has = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    cur.push(c);
                }
            }
            '"' => {
                has = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => cur.extend(chars.next()),
                        c => cur.push(c),
                    }
                }
            }
            '\\' => {
                has = true;
                cur.extend(chars.next());
            }
            c if c.is_whitespace() => {
                if has {
                    out.push(std::mem::take(&mut cur));
                    has = false;
                }
            }
            c => {
                has = true;
                cur.push(c);
            }
        }
    }
    if has {
        out.push(cur);
    }
    out
}

fn header(w: &[String]) -> Entry {
    let title = w.get(1).cloned().unwrap_or_default();
    let id = w
        .iter()
        .position(|x| x == "$menuentry_id_option" || x == "--id")
        .and_then(|i| w.get(i + 1))
        .cloned();
    Entry {
        title,
        id,
        linux: None,
        args: Vec::new(),
        children: Vec::new(),
        submenu: w[0] == "submenu",
    }
}

/// The top-level entries, in order (GRUB numbers them from 0, submenus included).
pub fn parse(cfg: &str) -> Vec<Entry> {
    // A stack of open blocks: Some(entry) for menus, None for other braces (functions).
    let mut stack: Vec<Option<Entry>> = Vec::new();
    let mut top = Vec::new();
    for line in cfg.lines() {
        let t = line.trim();
        if t.starts_with('#') || t.is_empty() {
            continue;
        }
        let w = words(t);
        let Some(first) = w.first() else { continue };
        if (first == "menuentry" || first == "submenu") && t.ends_with('{') {
            stack.push(Some(header(&w)));
        } else if t.ends_with('{') {
            stack.push(None);
        } else if t == "}" {
            if let Some(Some(done)) = stack.pop() {
                match stack.iter_mut().rev().find_map(|b| b.as_mut()) {
                    Some(parent) => parent.children.push(done),
                    None => top.push(done),
                }
            }
        } else if (first == "linux" || first == "linuxefi" || first == "linux16")
            && let Some(Some(e)) = stack.last_mut()
            && !e.submenu
            && e.linux.is_none()
        {
            e.linux = w.get(1).cloned();
            e.args = w.iter().skip(2).cloned().collect();
        }
    }
    top
}

/// The value `default` is set to when no one-time `next_entry` is pending (the last
/// `set default=` that is not `${next_entry}`).
pub fn default_setting(cfg: &str) -> Option<String> {
    cfg.lines()
        .filter_map(|l| {
            let w = words(l.trim());
            (w.len() == 2 && w[0] == "set")
                .then(|| w[1].strip_prefix("default=").map(str::to_string))
                .flatten()
        })
        .rfind(|v| v != "${next_entry}")
}

/// `saved_entry` from a grubenv file.
pub fn saved_entry(grubenv: &str) -> Option<String> {
    grubenv
        .lines()
        .find_map(|l| l.strip_prefix("saved_entry="))
        .map(str::to_string)
}

/// The entry a default selects: each `>`-separated part is an index, an id or a title, looked up
/// among the entries of the submenu the previous part chose. `${saved_entry}` is `saved`.
pub fn resolve<'a>(entries: &'a [Entry], default: &str, saved: Option<&str>) -> Option<&'a Entry> {
    let default = if default == "${saved_entry}" || default == "saved" {
        saved.unwrap_or("0")
    } else {
        default
    };
    let mut level = entries;
    let mut found = None;
    for part in default.split('>') {
        let e = match part.parse::<usize>() {
            Ok(i) => level.get(i)?,
            Err(_) => level
                .iter()
                .find(|e| e.id.as_deref() == Some(part))
                .or_else(|| level.iter().find(|e| e.title == part))?,
        };
        found = Some(e);
        level = &e.children;
    }
    let e = found?;
    // A submenu as the default boots its first entry.
    if e.submenu {
        e.children.first()
    } else {
        Some(e)
    }
}

/// The `>`-path of ids (titles where an entry has no id) to the first non-recovery entry that
/// boots kernel `version`: what `GRUB_DEFAULT` is set to.
pub fn path_to_kernel(entries: &[Entry], version: &str) -> Option<String> {
    let name = |e: &Entry| e.id.clone().unwrap_or_else(|| e.title.clone());
    for e in entries {
        if e.submenu {
            if let Some(p) = path_to_kernel(&e.children, version) {
                return Some(format!("{}>{p}", name(e)));
            }
        } else if e.kernel() == Some(version) && !e.recovery() {
            return Some(name(e));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of Debian 13's grub.cfg with two kernels (abridged).
    const CFG: &str = r#"
if [ -s $prefix/grubenv ]; then
  load_env
fi
if [ "${next_entry}" ] ; then
   set default="${next_entry}"
   set next_entry=
   save_env next_entry
   set boot_once=true
else
   set default="0"
fi
function load_video {
  if [ x$feature_all_video_module = xy ]; then
    insmod all_video
  fi
}
menuentry 'Debian GNU/Linux' --class debian --class gnu-linux $menuentry_id_option 'gnulinux-simple-1234' {
	load_video
	linux	/boot/vmlinuz-7.3.1+bpo-amd64 root=UUID=1234 ro  quiet
	initrd	/boot/initrd.img-7.3.1+bpo-amd64
}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-1234' {
	menuentry 'Debian GNU/Linux, with Linux 7.3.1+bpo-amd64' --class debian $menuentry_id_option 'gnulinux-7.3.1+bpo-amd64-advanced-1234' {
		linux	/boot/vmlinuz-7.3.1+bpo-amd64 root=UUID=1234 ro  quiet
	}
	menuentry 'Debian GNU/Linux, with Linux 6.12.117+deb13-amd64 (recovery mode)' $menuentry_id_option 'gnulinux-6.12.117+deb13-amd64-recovery-1234' {
		linux	/boot/vmlinuz-6.12.117+deb13-amd64 root=UUID=1234 ro single
	}
	menuentry 'Debian GNU/Linux, with Linux 6.12.117+deb13-amd64' --class debian $menuentry_id_option 'gnulinux-6.12.117+deb13-amd64-advanced-1234' {
		linux	/boot/vmlinuz-6.12.117+deb13-amd64 root=UUID=1234 ro  quiet
	}
}
menuentry 'UEFI Firmware Settings' $menuentry_id_option 'uefi-firmware' {
	fwsetup
}
"#;

    #[test]
    fn finds_the_default_and_the_path_to_a_kernel() {
        let e = parse(CFG);
        assert_eq!(e.len(), 3);
        assert_eq!(e[1].children.len(), 3);
        assert_eq!(default_setting(CFG).as_deref(), Some("0"));
        assert_eq!(
            resolve(&e, "0", None).unwrap().kernel(),
            Some("7.3.1+bpo-amd64")
        );
        let p = path_to_kernel(&e, "6.12.117+deb13-amd64").unwrap();
        assert_eq!(
            p,
            "gnulinux-advanced-1234>gnulinux-6.12.117+deb13-amd64-advanced-1234"
        );
        let chosen = resolve(&e, &p, None).unwrap();
        assert_eq!(chosen.kernel(), Some("6.12.117+deb13-amd64"));
        assert!(!chosen.recovery());
        // Titles and indexes work as GRUB reads them; `saved` reads grubenv.
        let by_title = "Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux 6.12.117+deb13-amd64";
        assert_eq!(resolve(&e, by_title, None), Some(chosen));
        assert_eq!(resolve(&e, "1>2", None), Some(chosen));
        assert!(resolve(&e, "1>1", None).unwrap().recovery());
        assert_eq!(resolve(&e, "${saved_entry}", Some(&p)), Some(chosen));
        assert_eq!(resolve(&e, "9", None), None);
        assert_eq!(path_to_kernel(&e, "5.10.0-amd64"), None);
        assert_eq!(
            saved_entry("# GRUB Environment Block\nsaved_entry=1>2\n####").as_deref(),
            Some("1>2")
        );
    }

    #[test]
    fn quoting_and_garbage() {
        assert_eq!(
            words(r#"menuentry 'It'\''s' "a \"b\"" c\ d"#),
            ["menuentry", "It's", "a \"b\"", "c d"]
        );
        for junk in [
            "}",
            "}}}\nmenuentry 'x' {\n",
            "submenu {\n linux\n",
            "\u{0}\u{1}{",
        ] {
            let _ = parse(junk);
            let _ = default_setting(junk);
        }
    }
}
