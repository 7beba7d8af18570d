//! `apt:NAME` installs and `[packages] remove`/`purge`: apt-get runs, judged by dpkg's status.

#[allow(unused_imports)]
use super::*;

pub struct AptInstall {
    pub name: String,
    /// The whole `install` list: the first missing package installs every missing one, in one call.
    pub all: Vec<String>,
}

impl Resource for AptInstall {
    fn id(&self) -> String {
        format!("package:{}", self.name)
    }

    fn kind(&self) -> &'static str {
        "packages"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let db = super::dpkg_status(sys)?;
        let st = db.get(&self.name);
        let actual = json!({"installed": st.is_some_and(|s| s.installed()), "version": st.and_then(|s| s.version.clone())});
        let expected = json!({"installed": true});
        if st.is_some_and(|s| s.installed()) {
            return Ok(Observation::new(Status::Compliant, expected, actual, ""));
        }
        let missing: Vec<String> = self
            .all
            .iter()
            .filter(|n| !db.get(*n).is_some_and(|s| s.installed()))
            .cloned()
            .collect();
        let msg = with_offline_note(sys, "not installed".to_string());
        let mut obs = Observation::new(Status::Drift, expected, actual, msg);
        obs.data = json!({"missing": missing, "haveLists": have_apt_lists(sys)?});
        Ok(obs)
    }

    fn plan(&self, sys: &System, obs: &Observation) -> Vec<Change> {
        if sys.cannot_change().is_some() {
            return Vec::new();
        }
        let missing: Vec<String> =
            serde_json::from_value(obs.data["missing"].clone()).unwrap_or_default();
        let mut plan = Vec::new();
        if obs.data["haveLists"] == json!(false) {
            plan.push(Change::Run {
                argv: apt_get(&["update"]),
            });
        }
        // `--`: nothing from the policy is read as an option (names are validated too).
        let mut args = vec!["install", "--"];
        args.extend(missing.iter().map(String::as_str));
        plan.push(Change::Run {
            argv: apt_get(&args),
        });
        plan
    }
}

/// `package-absent:NAME`: not installed (`remove`), or not even its configuration files left
/// (`purge`: dpkg's `config-files` state counts as present). The first one present removes every
/// present one of its list in one `apt-get` call.
pub struct AptRemove {
    pub name: String,
    pub purge: bool,
    pub all: Vec<String>,
}

impl AptRemove {
    fn present(&self, st: Option<&dpkg::PkgStatus>) -> bool {
        st.is_some_and(|s| {
            s.installed()
                || s.state == "half-installed"
                || s.state == "unpacked"
                || s.state == "half-configured"
                || (self.purge && s.state == "config-files")
        })
    }
}

impl Resource for AptRemove {
    fn id(&self) -> String {
        format!("package-absent:{}", self.name)
    }

    fn kind(&self) -> &'static str {
        "packages"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let db = super::dpkg_status(sys)?;
        let st = db.get(&self.name);
        let verb = if self.purge { "purged" } else { "removed" };
        let expected = json!({verb: true});
        let actual = json!({"state": st.map(|s| s.state.clone()), "version": st.and_then(|s| s.version.clone())});
        if !self.present(st) {
            return Ok(Observation::new(Status::Compliant, expected, actual, ""));
        }
        let what = match st.map(|s| s.state.as_str()) {
            Some("config-files") => "removed, but its configuration files are left".to_string(),
            Some(state) => format!(
                "{state} ({})",
                st.and_then(|s| s.version.as_deref()).unwrap_or("?")
            ),
            None => String::new(),
        };
        let present: Vec<String> = self
            .all
            .iter()
            .filter(|n| self.present(db.get(*n)))
            .cloned()
            .collect();
        let mut obs = Observation::new(
            Status::Drift,
            expected,
            actual,
            with_offline_note(sys, what),
        );
        obs.data = json!({"present": present});
        Ok(obs)
    }

    fn plan(&self, sys: &System, obs: &Observation) -> Vec<Change> {
        if sys.cannot_change().is_some() {
            return Vec::new();
        }
        let present: Vec<String> =
            serde_json::from_value(obs.data["present"].clone()).unwrap_or_default();
        let mut args = vec![if self.purge { "purge" } else { "remove" }, "--"];
        args.extend(present.iter().map(String::as_str));
        vec![Change::Run {
            argv: apt_get(&args),
        }]
    }
}
