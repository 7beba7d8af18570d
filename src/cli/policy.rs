//! `guestprep policy check|show`: validate the policy, or print the effective merged policy with
//! the file, line and column each value came from.

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::json;

use super::Target;
use crate::exit::ExitCode;
use crate::policy::tree::{Table, Value};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate the policy; print every error (file:line:column: key: message); exit 2 if any.
    Check(CheckArgs),
    /// Print the effective merged policy, each value with the file it came from.
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub target: Target,
    /// JSON: the typed policy, its digest, the fragments and each key's origin.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: &PolicyCommand) -> Result<ExitCode> {
    match cmd {
        PolicyCommand::Check(a) => {
            let (sys, loaded) = a.target.open()?;
            for s in &loaded.sources {
                println!("ok: {}", s.display());
            }
            // Which OpenSSH release sshd's keywords and algorithms were checked against.
            if loaded.policy.ssh.is_some() {
                println!("{}", loaded.context.describe());
            }
            // What a fragment dropped of another's (a list replaced), or a removal of nothing.
            for w in &loaded.warnings {
                eprintln!("warning: {w}");
            }
            // A waiver that matches none of the items this policy makes on this root is a
            // warning: a typo, or an item that is gone.
            if !loaded.policy.waivers.is_empty() {
                let ids: Vec<String> = crate::resources::build(&loaded.policy, sys.root())
                    .iter()
                    .map(|r| r.id())
                    .collect();
                for (w, p) in crate::waivers::unused(&loaded.policy.waivers, &ids) {
                    let at = w
                        .origin
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    eprintln!("warning: {at}: waiver `{p}` matches no item of this policy");
                }
            }
            println!(
                "policy valid: {} fragment(s), {}",
                loaded.sources.len(),
                loaded.digest()
            );
            Ok(ExitCode::Ok)
        }
        PolicyCommand::Show(a) => {
            let (_, loaded) = a.target.open()?;
            if a.json {
                let mut origins = serde_json::Map::new();
                collect_origins(&loaded.tree, "", &mut origins);
                let v = json!({
                    "policy": loaded.policy,
                    "policyDigest": loaded.digest(),
                    "sources": crate::sources_strings(&loaded),
                    "origins": origins,
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("# effective policy {}", loaded.digest());
                for s in &loaded.sources {
                    println!("# from {}", s.display());
                }
                print!("{}", loaded.tree.render());
            }
            Ok(ExitCode::Ok)
        }
    }
}

fn collect_origins(t: &Table, path: &str, out: &mut serde_json::Map<String, serde_json::Value>) {
    for (k, e) in &t.entries {
        let p = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        match &e.node.value {
            Value::Table(sub) => collect_origins(sub, &p, out),
            Value::Array(items) => {
                out.insert(p.clone(), json!(e.node.origin.to_string()));
                // Each entry of a list of tables comes from its own fragment (`files[1]`).
                for (i, n) in items.iter().enumerate() {
                    if matches!(n.value, Value::Table(_)) {
                        out.insert(format!("{p}[{i}]"), json!(n.origin.to_string()));
                    }
                }
            }
            _ => {
                out.insert(p, json!(e.node.origin.to_string()));
            }
        }
    }
}
