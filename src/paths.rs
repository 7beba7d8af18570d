//! The well-known paths of the managed system that several parts share (the daemon's report and
//! apply's stamp, the apply lock, the seal manifest, the download cache), in one place low in the
//! tree, so no part imports another for a constant.

/// The daemon's compliance report (read by the host through the guest agent).
pub const REPORT: &str = "/run/guestprep/report.json";
/// Touched by `apply` after it changed something: the daemon watches it.
pub const APPLIED_STAMP: &str = "/run/guestprep/applied";
/// The apply lock on a running system (offline, the image's root directory is locked instead).
pub const APPLY_LOCK: &str = "/run/guestprep/apply.lock";
/// The seal manifest.
pub const SEAL_MANIFEST: &str = "/var/lib/guestprep/seal.json";
/// Records of DKMS builds that failed (`MODULE_VERSION_KERNEL.json`): not redone while nothing
/// they depend on changed.
pub const DKMS_FAILED_DIR: &str = "/var/lib/guestprep/dkms-failed";
/// What `[[packages.deb]]` installed: `NAME.json` with the version and sha256 of the .deb.
pub const DEB_RECEIPTS_DIR: &str = "/var/lib/guestprep/debs";
/// Downloaded release `.deb`s.
pub const CACHE_DIR: &str = "/var/cache/guestprep";
