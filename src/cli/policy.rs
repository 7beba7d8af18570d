//! `guestprep policy check|show`: validate the policy, or print the effective merged policy with
//! the file, line and column each value came from.

use std::fmt::Write as _;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::json;

use super::Target;
use crate::exit::ExitCode;
use crate::policy::tree::{Node, Table, Value};

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
            let (_, loaded) = crate::open(&a.target)?;
            for s in &loaded.sources {
                println!("ok: {}", s.display());
            }
            println!(
                "policy valid: {} fragment(s), {}",
                loaded.sources.len(),
                loaded.digest()
            );
            Ok(ExitCode::Ok)
        }
        PolicyCommand::Show(a) => {
            let (_, loaded) = crate::open(&a.target)?;
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
                print!("{}", render_table(&loaded.tree));
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
            _ => {
                out.insert(p, json!(e.node.origin.to_string()));
            }
        }
    }
}

fn key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        serde_json::to_string(k).expect("string")
    }
}

fn inline(n: &Node) -> String {
    match &n.value {
        Value::String(s) => {
            if s.contains('\n') {
                format!("'''\n{s}'''")
            } else {
                serde_json::to_string(s).expect("string")
            }
        }
        Value::Integer(i) => i.to_string(),
        Value::Float(f) => format!("{f:?}"),
        Value::Bool(b) => b.to_string(),
        Value::Datetime(d) => d.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(inline).collect::<Vec<_>>().join(", ")),
        Value::Table(t) => format!(
            "{{ {} }}",
            t.entries
                .iter()
                .map(|(k, e)| format!("{} = {}", key(k), inline(&e.node)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn render_table(root: &Table) -> String {
    let mut s = String::new();
    for (name, e) in &root.entries {
        match &e.node.value {
            Value::Table(t) => {
                let _ = writeln!(s, "\n[{}]", key(name));
                for (k, e) in &t.entries {
                    let _ = writeln!(s, "{} = {}  # {}", key(k), inline(&e.node), e.node.origin);
                }
            }
            Value::Array(a)
                if a.iter().all(|n| matches!(n.value, Value::Table(_))) && !a.is_empty() =>
            {
                for n in a {
                    let _ = writeln!(s, "\n[[{}]]  # {}", key(name), n.origin);
                    if let Value::Table(t) = &n.value {
                        for (k, e) in &t.entries {
                            let _ = writeln!(s, "{} = {}", key(k), inline(&e.node));
                        }
                    }
                }
            }
            _ => {
                let _ = writeln!(
                    s,
                    "{} = {}  # {}",
                    key(name),
                    inline(&e.node),
                    e.node.origin
                );
            }
        }
    }
    s
}
