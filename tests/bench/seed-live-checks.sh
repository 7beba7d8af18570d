#!/usr/bin/env bash
# The seed template's live checks ("Verification: After Cloning a VM" in the Debian 13 template's
# README), done its way on the running system: one command per fact, its "Expected:" line as a
# grep. Two more for what its "Kubernetes Prerequisites" promise and the README leaves to the eye
# (IP forwarding, bridge netfilter: `sysctl -n`). 13 checks. benches/live.rs runs this inside a
# booted Debian 13 root (nsenter) next to `guestprep verify`. Exit status is ignored: the point is
# the cost of asking, not the answer (in a container there is no i915, no virtio port, and the
# host's kernel command line).
dkms status | grep -q i915-sriov
systemctl is-enabled dkms.service | grep -qx masked
lsmod | grep -q i915
systemctl status chrony | grep -q 'Active: active (running)'
chronyc tracking | grep -q 'Leap status     : Normal'
systemctl is-enabled systemd-timesyncd | grep -qx masked
systemctl status qemu-guest-agent | grep -q 'Active: active (running)'
ls -l /dev/virtio-ports/org.qemu.guest_agent.0 >/dev/null
systemctl status containerd | grep -q 'Active: active (running)'
lsmod | grep -qE 'overlay|br_netfilter'
grep -q intel_iommu /proc/cmdline
sysctl -n net.ipv4.ip_forward | grep -qx 1
sysctl -n net.bridge.bridge-nf-call-iptables | grep -qx 1
exit 0
