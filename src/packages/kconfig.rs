//! A kernel's build configuration (`/boot/config-KVER`, and the same file in its headers,
//! `/usr/lib/modules/KVER/build/.config`): which `CONFIG_` options the kernel was built with, and
//! which of a driver's needs it lacks. A DKMS module compiles against that configuration: a
//! kernel built without `CONFIG_DRM` cannot carry a DRM driver such as i915, whatever its release.
//!
//! Text in, verdicts out: the caller reads the file through its root (or `System`).

use std::collections::BTreeMap;

/// Where Debian and Ubuntu install a kernel's configuration beside its image.
pub fn boot_path(kver: &str) -> String {
    format!("/boot/config-{kver}")
}

/// The configuration the kernel's headers carry (what DKMS compiles against).
pub fn headers_path(kver: &str) -> String {
    format!("/usr/lib/modules/{kver}/build/.config")
}

/// What a configuration says of one option.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Setting {
    /// `=y`: built in.
    Builtin,
    /// `=m`: a module.
    Module,
    /// `# CONFIG_X is not set`.
    NotSet,
    /// Another value (`=0x10`, `="string"`): not a yes/module option.
    Other(String),
    /// Not in the file at all: its dependencies are off, or no such option in this kernel.
    Absent,
}

impl Setting {
    /// `=y` or `=m`: the kernel has it.
    pub fn satisfies(&self) -> bool {
        matches!(self, Setting::Builtin | Setting::Module)
    }

    /// How the report says it: `=y`, `=m`, `is not set`, `absent`.
    pub fn describe(&self) -> String {
        match self {
            Setting::Builtin => "=y".into(),
            Setting::Module => "=m".into(),
            Setting::NotSet => "is not set".into(),
            Setting::Other(v) => format!("={v}"),
            Setting::Absent => "absent".into(),
        }
    }
}

/// A parsed configuration: option name to its setting.
#[derive(Clone, Debug, Default)]
pub struct KernelConfig {
    options: BTreeMap<String, Setting>,
}

/// Parses the text of a kernel configuration (`make oldconfig`'s format).
pub fn parse(text: &str) -> KernelConfig {
    let mut options = BTreeMap::new();
    for line in text.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("# ") {
            if let Some(name) = rest.strip_suffix(" is not set")
                && name.starts_with("CONFIG_")
            {
                options.insert(name.to_string(), Setting::NotSet);
            }
            continue;
        }
        let Some((name, value)) = l.split_once('=') else {
            continue;
        };
        if !name.starts_with("CONFIG_") {
            continue;
        }
        let s = match value {
            "y" => Setting::Builtin,
            "m" => Setting::Module,
            "n" => Setting::NotSet,
            v => Setting::Other(v.to_string()),
        };
        options.insert(name.to_string(), s);
    }
    KernelConfig { options }
}

impl KernelConfig {
    pub fn get(&self, name: &str) -> Setting {
        self.options.get(name).cloned().unwrap_or(Setting::Absent)
    }

    /// How many options it sets (a config file with none is not a kernel configuration).
    pub fn len(&self) -> usize {
        self.options.len()
    }

    pub fn is_empty(&self) -> bool {
        self.options.is_empty()
    }

    /// The needs this configuration lacks, in the order given, with what it says of each.
    pub fn lacks<'a>(&self, needs: &'a [Need]) -> Vec<(&'a Need, Setting)> {
        needs
            .iter()
            .map(|n| (n, self.get(&n.option)))
            .filter(|(_, s)| !s.satisfies())
            .collect()
    }
}

/// One option a driver needs: `CONFIG_DRM`, needed by `i915-sriov-dkms`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Need {
    pub option: String,
    /// The DKMS module that needs it.
    pub by: String,
}

impl Need {
    /// The needs of one module, one per option.
    pub fn of(module: &str, options: &[String]) -> Vec<Need> {
        options
            .iter()
            .map(|o| Need {
                option: o.clone(),
                by: module.to_string(),
            })
            .collect()
    }
}

/// `CONFIG_DRM (absent; needed by i915-sriov-dkms), CONFIG_PCI_IOV (is not set; ...)`.
pub fn describe_lacks(lacks: &[(&Need, Setting)]) -> String {
    lacks
        .iter()
        .map(|(n, s)| format!("{} ({}; needed by {})", n.option, s.describe(), n.by))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What to do about a kernel that lacks a driver's options. Debian's cloud flavour
/// (`*-cloud-amd64`, the kernel of the genericcloud images) is built without DRM and most of PCI
/// passthrough; its generic flavour (`linux-image-amd64`) has them.
pub fn fix_hint(kver: &str) -> String {
    match kver.strip_suffix("-cloud-amd64") {
        Some(base) => format!(
            "Debian's cloud kernel flavour (linux-image-cloud-amd64) is built without them and cannot \
             carry this driver: move to the generic flavour (linux-image-amd64) with `[kernel] version = \
             \"{base}-amd64\"` and `remove_others = true`: apply installs linux-image-{base}-amd64 and \
             its headers, makes GRUB boot it, and purges the cloud kernel (on a booted machine, once the generic one runs)"
        ),
        None => "install a kernel built with them (on Debian the generic flavour, linux-image-amd64), pin it \
             with `[kernel] version = \"KVER\"` and remove this one with `remove_others = true`"
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "#\n# Automatically generated file; DO NOT EDIT.\n#\nCONFIG_PCI=y\nCONFIG_VFIO_PCI=m\n# CONFIG_PCI_IOV is not set\nCONFIG_NR_CPUS=8192\nCONFIG_LOCALVERSION=\"\"\n# CONFIG_DRM\n";

    #[test]
    fn settings() {
        let c = parse(TEXT);
        assert_eq!(c.get("CONFIG_PCI"), Setting::Builtin);
        assert_eq!(c.get("CONFIG_VFIO_PCI"), Setting::Module);
        assert_eq!(c.get("CONFIG_PCI_IOV"), Setting::NotSet);
        assert_eq!(c.get("CONFIG_NR_CPUS"), Setting::Other("8192".into()));
        // A comment that only names the option is not a setting.
        assert_eq!(c.get("CONFIG_DRM"), Setting::Absent);
        assert_eq!(c.len(), 5);
    }

    #[test]
    fn lacks_names_what_and_who() {
        let c = parse(TEXT);
        let needs = Need::of(
            "i915-sriov-dkms",
            &[
                "CONFIG_DRM".into(),
                "CONFIG_PCI".into(),
                "CONFIG_VFIO_PCI".into(),
                "CONFIG_PCI_IOV".into(),
            ],
        );
        let l = c.lacks(&needs);
        assert_eq!(
            describe_lacks(&l),
            "CONFIG_DRM (absent; needed by i915-sriov-dkms), CONFIG_PCI_IOV (is not set; needed by i915-sriov-dkms)"
        );
    }

    #[test]
    fn the_fix_names_the_generic_kernel() {
        let h = fix_hint("6.12.117+deb13-cloud-amd64");
        assert!(h.contains("version = \"6.12.117+deb13-amd64\""), "{h}");
        assert!(h.contains("remove_others = true"), "{h}");
        assert!(fix_hint("6.8.0-45-generic").contains("[kernel] version"));
    }
}
