//! What the boot loader and the kernel read, parsed without a subprocess: the initramfs (cpio
//! archives, compressed or not), a kernel module's `.modinfo`, and GRUB's generated menu. All of
//! it is untrusted input, read within the budgets of [`limits`].

pub mod cpio;
pub mod decode;
pub mod grubcfg;
pub mod initramfs;
pub mod kmod;
pub mod limits;
pub mod samples;
