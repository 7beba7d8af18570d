#!/usr/bin/env bash
# Builds, or reuses from the cache, a Debian 13 root filesystem tarball for the tests, and prints
# its path. The cache key is the set's recipe (packages, hooks, options), so changing a package
# list rebuilds that set. Cache: $GUESTPREP_TESTBED_CACHE (default ~/.cache/guestprep-testbed).
#
#   tests/testbed/rootfs.sh systemd   # systemd, dbus, systemd-timesyncd, cron, qemu-guest-agent, chrony's files
#   tests/testbed/rootfs.sh dkms      # systemd, dkms, build-essential, a kernel and its headers
#   tests/testbed/rootfs.sh vm        # a bootable Debian 13 guest: kernel, GRUB, qemu-guest-agent,
#                                     # chrony, sshd, dkms and headers, containerd, node-exporter,
#                                     # cloud-init, and a second (trixie-backports) kernel
#   tests/testbed/rootfs.sh flatcar   # systemd, sshd, ssh, qemu-ga: Flatcar's arrangement is made from it
#   tests/testbed/rootfs.sh ubuntu    # needrestart and unattended-upgrades: Ubuntu's arrangement
#   tests/testbed/rootfs.sh cloudinit # cloud-init, to check the documented user-data (tests/it/docs.rs)
#   tests/testbed/rootfs.sh cloudkernel # Debian's cloud kernel flavour and its headers, as the
#                                     # genericcloud image has it (tests/it/kernel_config.rs)
#
# Needs root and mmdebstrap; reaches only the Debian mirror.
set -euo pipefail
name=${1:?usage: rootfs.sh SET}
here=$(cd "$(dirname "$0")" && pwd)

common=systemd,systemd-sysv,dbus,udev,kmod,iproute2,passwd,procps,ca-certificates
hooks=()
mirrors=("deb http://deb.debian.org/debian trixie main")
case "$name" in
  systemd)
    # systemd-timesyncd: a real unit to mask and stop. cron: a unit that really runs in a
    # container. chrony conflicts with systemd-timesyncd (both provide time-daemon), so its package
    # files are unpacked without registering it: a real chrony.service (with Alias=chronyd.service)
    # for systemd to enable. qemu-guest-agent: a real agent in the booted root, for `guestprep qga`.
    # locales: locale-gen and the locale archive for `[locale]`.
    include=$common,systemd-timesyncd,cron,qemu-guest-agent,locales
    hooks+=(--customize-hook='chroot "$1" sh -c "cd /tmp && apt-get download -q chrony >/dev/null" && dpkg-deb -x "$1"/tmp/chrony_*.deb "$1" && rm -f "$1"/tmp/chrony_*.deb')
    ;;
  dkms)
    # Real dkms, a compiler and the headers of the image's kernel: the packages tests build and
    # install a DKMS module for the root's installed kernel (not the host's).
    # dh-dkms, debhelper: tests/testbed/i915-debs.sh builds the real i915-sriov-dkms .debs in it.
    include=$common,apt,dkms,dh-dkms,debhelper,build-essential,linux-image-amd64,linux-headers-amd64,initramfs-tools
    ;;
  vm)
    # The template a Proxmox user starts from (tests/vm/e2e.sh boots it under QEMU): every package
    # the shipped policies install is already there, since the VM has no network but loopback
    # forwards. grub-pc: the disk boots through its own GRUB, so a cmdline change shows after a
    # reboot. e2fsprogs: fsck and resize for the root. apt: guestprep installs and holds with it.
    # A second, newer kernel from trixie-backports (its meta package too, as a site that tried it
    # would have): GRUB boots it by default until `[kernel] version` pins trixie's own.
    # cloud-init: the guest boots as a Proxmox clone does, from a NoCloud seed whose user-data runs
    # `guestprep apply` (docs/integrations.md).
    include=$common,apt,e2fsprogs,linux-image-amd64,initramfs-tools,grub-pc,qemu-guest-agent,chrony,openssh-server,dkms,build-essential,linux-headers-amd64,containerd,prometheus-node-exporter,locales,cloud-init
    mirrors+=("deb http://deb.debian.org/debian trixie-backports main")
    hooks+=(--customize-hook='chroot "$1" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q -t trixie-backports linux-image-amd64 >/dev/null')
    ;;
  flatcar)
    # Flatcar's arrangement is made from this (tests/it/flatcar.rs): the real systemd, sshd and
    # ssh, and qemu-ga; the test then removes dpkg's database, writes Flatcar's os-release and
    # sshd units, and boots it with /usr read-only.
    include=$common,openssh-server,openssh-client,qemu-guest-agent
    ;;
  ubuntu)
    # What Ubuntu 24.04 runs after apt (tests/it/ubuntu.rs): the real needrestart and
    # unattended-upgrades; the test writes Noble's os-release.
    include=$common,apt,needrestart,unattended-upgrades
    ;;
  cloudkernel)
    # The kernel of debian-13-genericcloud-amd64.qcow2 (linux-image-cloud-amd64), installed by
    # apt from the mirror, and its headers: the real /boot/config-*-cloud-amd64 that
    # kernel:config reads, and headers for `dkms try` to find.
    include=linux-image-cloud-amd64,linux-headers-cloud-amd64
    ;;
  cloudinit)
    # Only its `cloud-init schema` runs (in a chroot): the docs' user-data against the schema of
    # the cloud-init Debian 13 ships.
    include=cloud-init
    ;;
  *)
    echo "rootfs.sh: unknown set $name" >&2
    exit 2
    ;;
esac

cache=${GUESTPREP_TESTBED_CACHE:-$HOME/.cache/guestprep-testbed}
opts=(--variant=minbase --components=main --format=tar
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*')
# The key is the set's own recipe: changing one set does not rebuild the others.
key=$(printf '%s\n' "$name" "$include" "${hooks[@]}" "${opts[@]}" trixie "${mirrors[@]:1}" | sha256sum | cut -c1-16)
out=$cache/$name-$key.tar
mkdir -p "$cache"
# Tests run in parallel: one builds, the others wait for it.
exec 9>"$cache/$name.lock"
flock 9
if [ -s "$out" ]; then
  echo "$out"
  exit 0
fi
command -v mmdebstrap >/dev/null || { echo "rootfs.sh: mmdebstrap is not installed" >&2; exit 1; }
start=$(date +%s)
mmdebstrap --quiet "${opts[@]}" --include="$include" "${hooks[@]}" trixie "$out.tmp" "${mirrors[@]}" >&2
mv "$out.tmp" "$out"
# Keep only the newest build of each set.
find "$cache" -name "$name-*.tar" ! -name "$(basename "$out")" -delete
echo "rootfs.sh: built $out in $(( $(date +%s) - start ))s" >&2
echo "$out"
