#!/usr/bin/env bash
# The checks of the seed template's README ("Verification: After Cloning a VM"), done its way:
# one shell command per fact, pipes of grep/lsmod/sysctl, adapted to read the same files guestprep
# reads in ROOT. The benchmark times this next to `guestprep verify`. Exit status is ignored: the
# point is the cost of asking, not the answer. On an offline root the live lines (lsmod, sysctl,
# /proc) ask the host, where guestprep skips them, and grub.cfg is not regenerated: those lines
# may fail; every file line holds on a converged root.
R=${1:?usage: seed-checks.sh ROOT}
grep -q '^server time.cloudflare.com' "$R/etc/chrony/conf.d/50-guestprep.conf"
grep -q '^pool time.google.com' "$R/etc/chrony/conf.d/50-guestprep.conf"
grep -q '^allow 10.0.0.0/8' "$R/etc/chrony/conf.d/50-guestprep.conf"
grep -q '^confdir /etc/chrony/conf.d' "$R/etc/chrony/chrony.conf"
cat "$R"/etc/sysctl.d/*.conf | grep -v '^#' | grep -q 'net.ipv4.ip_forward = 1'
cat "$R"/etc/sysctl.d/*.conf | grep -v '^#' | grep -q 'net.bridge.bridge-nf-call-iptables = 1'
cat "$R"/etc/sysctl.d/*.conf | grep -v '^#' | grep -q 'net.bridge.bridge-nf-call-ip6tables = 1'
sysctl -n net.ipv4.ip_forward >/dev/null 2>&1
lsmod | grep -qE 'overlay|br_netfilter'
lsmod | grep -q i915
grep -qx overlay "$R/etc/modules-load.d/guestprep.conf"
grep -qx br_netfilter "$R/etc/modules-load.d/guestprep.conf"
grep -qx i915 "$R/etc/modules-load.d/guestprep.conf"
grep -q '^blacklist xe' "$R"/etc/modprobe.d/*.conf
grep -q intel_iommu "$R/etc/default/grub.d/99-guestprep.cfg"
grep -q intel_iommu "$R/boot/grub/grub.cfg"
grep -q intel_iommu /proc/cmdline
grep -q '^Ciphers chacha20-poly1305@openssh.com,aes256-gcm@openssh.com' "$R"/etc/ssh/sshd_config.d/*.conf
grep -q '^MACs hmac-sha2-512-etm@openssh.com' "$R"/etc/ssh/sshd_config.d/*.conf
! grep -v '^#' "$R/etc/fstab" | awk '$3 == "swap"' | grep -q .
! tail -n +2 /proc/swaps | grep -q .
grep -q 'SystemdCgroup = true' "$R/etc/containerd/config.toml"
stat -c %a "$R/etc/containerd/config.toml" | grep -qx 644
# The README's unit checks ("systemctl is-enabled dkms.service  # Expected: masked", …), on the root.
systemctl --root="$R" is-enabled dkms.service | grep -qx masked
systemctl --root="$R" is-enabled systemd-timesyncd.service | grep -qx masked
systemctl --root="$R" is-enabled chrony.service | grep -qx enabled
systemctl --root="$R" is-enabled containerd.service | grep -qx enabled
systemctl --root="$R" is-enabled qemu-guest-agent.service | grep -qx static
systemctl --root="$R" is-enabled prometheus-node-exporter.service | grep -qx enabled
exit 0
