//! guestprep: converge, verify and seal Proxmox VM templates from a declarative TOML policy.
//!
//! The library holds everything; `main.rs` only parses arguments and calls [`cli::run`]. `cli/`
//! sits on top: nothing else imports it.
//! Data flows one way: [`policy`] (fragments → validated `Policy`) → [`resources`] (the ordered
//! items of that policy) → [`engine`] (check/plan/apply over a [`root::Root`]) → [`report`].

pub mod agent;
pub mod boot;
pub mod cli;
pub mod clock;
pub mod cri;
pub mod engine;
pub mod exec;
pub mod exit;
pub mod export;
pub mod fleet;
pub mod fsutil;
pub mod guest_report;
pub mod inroot;
pub mod lock;
pub mod output;
pub mod packages;
pub mod paths;
pub mod platform;
pub mod policy;
pub mod qga;
pub mod report;
pub mod resources;
pub mod root;
pub mod saferead;
pub mod seal;
pub mod systemd;
pub mod text;
pub mod usecase;
pub mod waivers;

pub use usecase::{load_policy, open, open_root, report_of, sources_strings};
