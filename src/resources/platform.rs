//! `platform:os-release`, only when the root's os-release cannot be read (a FIFO, a device, a
//! giant): an error naming it, since the fragments written for a platform (`[platform] os`) were
//! left out and the checks that differ by platform took it for an unknown one.

use anyhow::Result;
use serde_json::json;

use crate::engine::{Change, Observation, Resource, System};
use crate::report::Status;

pub struct Unknown;

impl Resource for Unknown {
    fn id(&self) -> String {
        "platform:os-release".to_string()
    }

    fn kind(&self) -> &'static str {
        "platform"
    }

    fn check(&self, sys: &System) -> Result<Observation> {
        let p = sys.platform();
        let expected = json!({"readable": true});
        Ok(match &p.problem {
            Some(why) => Observation::new(
                Status::Error,
                expected,
                json!({"readable": false}),
                format!(
                    "cannot tell which system this is: {why}; fragments written for a platform ([platform] os) were left out"
                ),
            ),
            None => Observation::new(
                Status::Compliant,
                expected,
                json!({"readable": true, "platform": p.describe()}),
                "",
            ),
        })
    }

    fn plan(&self, _sys: &System, _obs: &Observation) -> Vec<Change> {
        Vec::new()
    }
}
