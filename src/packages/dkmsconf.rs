//! `dkms.conf`: the few shell-style assignments guestprep needs (module name and version, the
//! modules it builds, and `BUILD_EXCLUSIVE_KERNEL`), parsed without running a shell.

use std::collections::BTreeMap;

/// What a dkms.conf says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DkmsConf {
    pub package_name: Option<String>,
    pub package_version: Option<String>,
    /// `BUILT_MODULE_NAME[i]` (or `DEST_MODULE_NAME[i]` when set): the `.ko` files it installs.
    pub modules: Vec<String>,
    /// A regular expression the kernel version must match, or the module is not built.
    pub build_exclusive_kernel: Option<String>,
    pub build_exclusive_arch: Option<String>,
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    let v = v.split(" #").next().unwrap_or(v).trim();
    if v.len() >= 2
        && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')))
    {
        v[1..v.len() - 1].to_string()
    } else {
        v.to_string()
    }
}

pub fn parse(text: &str) -> DkmsConf {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = l.split_once('=')
            && !k.contains(' ')
        {
            vars.insert(k.to_string(), unquote(v));
        }
    }
    let mut modules = Vec::new();
    for i in 0..64 {
        let built = vars.get(&format!("BUILT_MODULE_NAME[{i}]"));
        let dest = vars.get(&format!("DEST_MODULE_NAME[{i}]"));
        match dest.or(built) {
            Some(m) => modules.push(m.clone()),
            None if i > 0 => break,
            None => {}
        }
    }
    let subst = |v: &String| -> String {
        let mut s = v.clone();
        if let Some(name) = vars.get("PACKAGE_NAME") {
            s = s
                .replace("${PACKAGE_NAME}", name)
                .replace("$PACKAGE_NAME", name);
        }
        s
    };
    DkmsConf {
        package_name: vars.get("PACKAGE_NAME").cloned(),
        package_version: vars.get("PACKAGE_VERSION").cloned(),
        modules: modules.iter().map(subst).collect(),
        build_exclusive_kernel: vars.get("BUILD_EXCLUSIVE_KERNEL").cloned(),
        build_exclusive_arch: vars.get("BUILD_EXCLUSIVE_ARCH").cloned(),
    }
}

/// Whether a kernel version satisfies `BUILD_EXCLUSIVE_KERNEL` (a bash `=~` regular expression).
pub fn kernel_allowed(conf: &DkmsConf, kernel: &str) -> Result<bool, String> {
    match &conf.build_exclusive_kernel {
        None => Ok(true),
        Some(re) => regex::Regex::new(re)
            .map(|r| r.is_match(kernel))
            .map_err(|e| {
                format!("BUILD_EXCLUSIVE_KERNEL {re:?} is not a valid regular expression: {e}")
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_i915_style_conf() {
        let c = parse(
            "PACKAGE_NAME=\"i915-sriov-dkms\"\nPACKAGE_VERSION=\"2026.03.05.1\"\nBUILT_MODULE_NAME[0]=\"i915\"\nDEST_MODULE_LOCATION[0]=/updates\nBUILT_MODULE_NAME[1]=\"xe\"\nBUILD_EXCLUSIVE_KERNEL=\"^(6\\.(1[7-9]|[2-9][0-9]))\"\nAUTOINSTALL=yes\n",
        );
        assert_eq!(c.package_name.as_deref(), Some("i915-sriov-dkms"));
        assert_eq!(c.modules, ["i915", "xe"]);
        assert_eq!(kernel_allowed(&c, "6.12.57+deb13-amd64"), Ok(false));
        assert_eq!(kernel_allowed(&c, "6.17.1-amd64"), Ok(true));
        assert_eq!(
            kernel_allowed(&parse("PACKAGE_NAME=x\n"), "6.12.0"),
            Ok(true)
        );
    }
}
