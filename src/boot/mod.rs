//! What the boot loader and the kernel read, parsed without a subprocess: the initramfs (cpio
//! archives, compressed or not), a kernel module's `.modinfo`, and GRUB's generated menu.

pub mod cpio;
pub mod grubcfg;

pub mod initramfs;
pub mod kmod;
