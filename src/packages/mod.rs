//! Debian packages without asking dpkg: the status database, the inside of a `.deb`, `dkms.conf`,
//! DKMS's tree, a kernel's build configuration (what a DKMS module needs of it), and the verified download of a release `.deb`.
//!
//! Everything here reads files (through the root) or the network; nothing installs. Installing is
//! `apt-get`'s job, run by the packages resource as a planned change.

pub mod deb;
pub mod dkmsconf;
pub mod dkmstry;
pub mod download;
pub mod dpkg;
pub mod dpkglock;
pub mod kconfig;
pub mod makelog;
pub mod prefetch;
