//! Every integration test of guestprep, one binary: one link step instead of one per area, and
//! the areas run side by side (`cargo test` runs the tests of a binary in parallel, the binaries
//! one after another). A module per area; `common` holds the shared test beds.

mod common;

mod agent_deadline;
mod apply;
mod bombs;
mod containerd;
mod daemon;
mod daemon_systemd;
mod docs;
mod download;
mod example;
mod files;
mod flatcar;
mod fleet;
mod floors;
mod grub;
mod hostile;
mod hostile_files;
mod i915;
mod initramfs_memo;
mod kernel;
mod kernel_config;
mod kubernetes;
mod nosubprocess;
mod output_paths;
mod packages;
mod policy;
mod qga;
mod seal;
mod seal_resume;
mod services;
mod sshd;
mod sshsock;
mod systemd;
mod ubuntu;
mod verdicts;
mod verify_ci;
