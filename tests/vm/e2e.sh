#!/usr/bin/env bash
# End-to-end test: the freshly built guestprep .deb in a real Debian 13 VM that boots through its
# own GRUB and is set up by cloud-init from a NoCloud seed, as a Proxmox clone is; checked from the
# host only through the QEMU guest agent (`guestprep qga`, and `qm guest exec`'s answer).
#
#   tests/vm/e2e.sh [guestprep_VERSION_amd64.deb]     # default: build it with dpkg-buildpackage
#
# 1. image: a Debian 13 root (tests/testbed/rootfs.sh vm: kernel, GRUB, qemu-guest-agent, chrony,
#    sshd, dkms, compiler, headers, cloud-init; cached by package list) on an MBR-partitioned disk
#    with GRUB installed in it (cached by that root and this script's recipe), SSH host keys
#    removed as `guestprep seal` will leave them, no network configuration (cloud-init writes it);
# 2. a copy of that disk with the .deb installed (dpkg -i in a chroot, as `virt-customize` bakes
#    it) and one baked fragment: the test DKMS package (tests/fixtures/hello-dkms) by URL and
#    sha256, listed for the initramfs, and `[kernel]` pinning trixie's kernel (GRUB boots the
#    newer trixie-backports one by default);
# 3. a cloud-init seed per identity: a `cidata` ISO made with genisoimage as Proxmox makes its
#    cloud-init drive, holding the exact user-data of docs/integrations.md (extracted from the
#    doc), a meta-data with an instance-id and hostname, and Proxmox's network-config; attached
#    as an IDE CD-ROM like Proxmox's;
# 4. boot 1 under TCG (the agent on a unix socket, `restrict=on` user networking whose only way
#    out is a guestfwd to a python HTTP server on the host's loopback): cloud-init's runcmd runs
#    `guestprep apply` (downloads and builds the DKMS package, pins the kernel, sets the GRUB
#    arguments), and its power_state reboots because apply left a reboot pending;
# 5. boot 2 (QEMU runs with -no-reboot: the same disk is booted again): `cloud-init status
#    --wait` is done without errors; apply ran exactly once and its output is in
#    /var/log/cloud-init-output.log without escape codes; the site fragment from the user-data
#    is in force; GRUB booted the pinned kernel with the arguments; the initramfs carries the DKMS
#    build; `verify --wait` and the daemon's report (file-read) are compliant; apply again changes
#    nothing; docs/integrations.md's jq pipeline gets the report out of a `qm guest exec` answer;
# 6. seals it through the agent after `cloud-init status --wait`, powers off, and boots two
#    copies of the sealed disk: clone a with a new seed (new instance-id and hostname) takes that
#    hostname; clone b with the template's own seed (same instance-id) still runs cloud-init as a
#    first boot, which only the seal's `cloud-init` operation makes happen; each has its own
#    machine-id and SSH host keys, ran apply once, and is compliant with the seal in its report;
# 7. prints how long each phase took.
#
# Needs root (loop devices, mount, chroot), mmdebstrap, qemu-system-x86, fdisk, netcat-openbsd,
# jq, python3, genisoimage, dpkg-dev/debhelper for the build (tests/run installs them). It never
# skips: if a step cannot run here, the test fails and says why. The disk stays in target/vm-e2e.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
work=$repo/target/vm-e2e
cache=${GUESTPREP_TESTBED_CACHE:-$HOME/.cache/guestprep-testbed}
mem=${GUESTPREP_VM_MEMORY:-2048}
boot_timeout=${GUESTPREP_VM_BOOT_TIMEOUT:-300}

# ---- reporting ---------------------------------------------------------------------------------
t_start=$(date +%s.%N)
phases=()
phase_name=""
phase_t=""
now() { date +%s.%N; }
secs_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
phase() {
  end_phase
  phase_name=$1
  phase_t=$(now)
  echo "== $1" >&2
}
end_phase() {
  if [ -n "$phase_name" ]; then
    phases+=("$(printf '%-44s %7ss' "$phase_name" "$(secs_since "$phase_t")")")
    phase_name=""
  fi
}
print_phases() {
  echo "-- tests/vm/e2e.sh phases" >&2
  printf '%s\n' "${phases[@]}" >&2
  printf '%-44s %7ss\n' "total" "$(secs_since "$t_start")" >&2
}
fail() {
  echo "e2e: FAIL: $*" >&2
  exit 1
}
log() { echo "e2e: $*" >&2; }

# ---- clean-up ----------------------------------------------------------------------------------
mnt=""
loop=""
qemu_pid=""
http_pid=""
cleanup() {
  local rc=$?
  set +e
  end_phase
  if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
    kill "$qemu_pid"
    wait "$qemu_pid" 2>/dev/null
  fi
  [ -z "$http_pid" ] || kill "$http_pid" 2>/dev/null
  unmount_disk
  if [ "$rc" -ne 0 ]; then
    for f in "$work"/serial-*.log; do
      [ -e "$f" ] || continue
      echo "-- last lines of $f" >&2
      tail -n 40 "$f" >&2
    done
  fi
  print_phases
  exit "$rc"
}
trap cleanup EXIT

# Attaches a disk image to a loop device ($loop) with its partition 1 at ${loop}p1. Some kernels
# (this CI's) read no partition tables: partx adds the partition from userspace then.
attach() {
  loop=$(losetup --find --show --partscan "$1") || fail "losetup: no loop device (needs root)"
  local i
  [ -b "${loop}p1" ] || partx --add "$loop" 2>/dev/null || true
  for i in $(seq 50); do [ -b "${loop}p1" ] && return; sleep 0.1; done
  fail "the partition ${loop}p1 of $1 did not appear"
}
# Mounts partition 1 of a disk image at $mnt, with /proc, /sys and a private /dev for chroot.
mount_disk() {
  attach "$1"
  mount_root
  mount_api
}
mount_root() {
  mnt=$(mktemp -d)
  mount "${loop}p1" "$mnt"
}
# /proc, /sys, and a private /dev holding the loop devices (nothing is created in the host's /dev).
mount_api() {
  local part=${loop}p1
  mount -t proc proc "$mnt/proc"
  mount -t sysfs sysfs "$mnt/sys"
  mount -t tmpfs -o mode=0755 dev "$mnt/dev"
  cp -a /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty "$loop" "$part" "$mnt/dev/"
  mkdir -p "$mnt/dev/disk/by-uuid" "$mnt/dev/pts" "$mnt/dev/shm"
  ln -s "../../$(basename "$part")" "$mnt/dev/disk/by-uuid/$(blkid -s UUID -o value "$part")"
}
unmount_disk() {
  if [ -n "$mnt" ]; then
    umount "$mnt/dev" "$mnt/sys" "$mnt/proc" 2>/dev/null
    umount "$mnt" && rmdir "$mnt"
    mnt=""
  fi
  if [ -n "$loop" ]; then
    partx --delete "$loop" 2>/dev/null
    losetup -d "$loop"
    loop=""
  fi
}

# ---- 1. the image ------------------------------------------------------------------------------
# The template disk: one bootable MBR partition with the root, GRUB in the MBR gap, kernel output
# on the serial console, no menu wait, systemd-networkd for the configuration cloud-init writes
# from the seed's network-config, and no SSH host keys (a sealed template's state).
make_base_disk() {
  local tar=$1 out=$2 uuid
  uuid=$(cat /proc/sys/kernel/random/uuid)
  rm -f "$out.tmp"
  truncate -s 8G "$out.tmp"
  printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk --quiet "$out.tmp"
  attach "$out.tmp"
  mkfs.ext4 -q -F -U "$uuid" -L guestroot "${loop}p1"
  mount_root
  tar -C "$mnt" -xf "$tar"
  mount_api
  echo "UUID=$uuid / ext4 errors=remount-ro 0 1" >"$mnt/etc/fstab"
  echo guestprep-e2e >"$mnt/etc/hostname"
  mkdir -p "$mnt/etc/default/grub.d"
  cat >"$mnt/etc/default/grub.d/10-e2e.cfg" <<'EOF'
GRUB_TIMEOUT=0
GRUB_CMDLINE_LINUX_DEFAULT="console=ttyS0"
GRUB_TERMINAL=serial
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_DISABLE_OS_PROBER=true
EOF
  chroot "$mnt" systemctl enable --quiet systemd-networkd.service
  rm -f "$mnt"/etc/ssh/ssh_host_*
  chroot "$mnt" grub-install --target=i386-pc "$loop" 2>&1 | grep -v '^Installing for\|^Installation finished' >&2 || true
  [ -e "$mnt/boot/grub/i386-pc/core.img" ] || fail "grub-install did not install GRUB in the image"
  chroot "$mnt" update-grub 2>/dev/null
  grep -q "root=UUID=$uuid" "$mnt/boot/grub/grub.cfg" || fail "update-grub did not boot the root by UUID"
  unmount_disk
  mv "$out.tmp" "$out"
}
phase "image: Debian 13 root (mmdebstrap, cached)"
for tool in mmdebstrap qemu-system-x86_64 sfdisk losetup partx nc jq python3 dpkg-buildpackage lintian genisoimage; do
  command -v "$tool" >/dev/null || fail "$tool is not installed (tests/run installs what this needs)"
done
[ "$(id -u)" -eq 0 ] || fail "needs root: loop devices, mount and chroot"
rm -rf "$work"
mkdir -p "$work" "$cache"
tar=$(tests/testbed/rootfs.sh vm)

phase "image: partitioned disk with GRUB (cached)"
key=$( (basename "$tar"; declare -f make_base_disk attach mount_root mount_api) | sha256sum | cut -c1-16)
base=$cache/vm-disk-$key.raw
exec 8>"$cache/vm-disk.lock"
flock 8
if [ ! -s "$base" ]; then
  make_base_disk "$tar" "$base"
  find "$cache" -name 'vm-disk-*.raw' ! -name "$(basename "$base")" -delete
  log "built $base"
fi
flock -u 8

# ---- 2. the package ----------------------------------------------------------------------------
phase "package: dpkg-buildpackage"
deb=${1:-}
if [ -z "$deb" ]; then
  dpkg-buildpackage -us -uc -b >"$work/dpkg-buildpackage.log" 2>&1 ||
    { tail -n 30 "$work/dpkg-buildpackage.log" >&2; fail "dpkg-buildpackage failed (log: $work/dpkg-buildpackage.log)"; }
  version=$(dpkg-parsechangelog -S Version)
  deb=$(cd .. && pwd)/guestprep_${version}_amd64.deb
fi
[ -s "$deb" ] || fail "no package at $deb"

phase "package: lintian"
# Errors fail the test; the warnings kept are explained in docs/packaging.md.
# The node's package (guestprep-host) is built alongside: checked too, and it must carry no unit
# or policy that runs in a guest.
host_deb=$(dirname "$deb")/$(basename "$deb" | sed 's/^guestprep_/guestprep-host_/')
[ -s "$host_deb" ] || fail "no guestprep-host package next to $deb"
lint=0
lintian --fail-on error "$deb" "$host_deb" >"$work/lintian.log" 2>&1 || lint=$?
grep -v '^running with root privileges' "$work/lintian.log" >&2 || true
[ "$lint" -eq 0 ] || fail "lintian found errors in $deb or $host_deb (exit $lint)"
dpkg-deb -c "$host_deb" >"$work/host-deb.list"
grep -q '/usr/bin/guestprep$' "$work/host-deb.list" || fail "guestprep-host lacks the binary"
grep -q 'guestprep-fleet.timer$' "$work/host-deb.list" || fail "guestprep-host lacks the fleet timer"
! grep -qE 'guestprep(-apply|-ssh-keygen)?\.service$|policy\.d/' "$work/host-deb.list" ||
  fail "guestprep-host carries guest units or policy: $(grep -E 'guestprep(-apply|-ssh-keygen)?\.service$|policy\.d/' "$work/host-deb.list")"
dpkg-deb -c "$deb" >"$work/deb.list"
grep -q 'guestprep-fleet.timer$' "$work/deb.list" || fail "guestprep lacks the fleet timer"
# The host side talks to the agent with the packaged binary too.
dpkg-deb -x "$deb" "$work/host"
gp=$work/host/usr/bin/guestprep

phase "disk: install the .deb and the test fragment"
www=$work/www
mkdir -p "$www"
test_deb=$(tests/fixtures/hello-dkms/mkdeb.sh "$www" guestprep-hello-dkms guestprep-hello 1.0)
test_sha=$(sha256sum "$test_deb" | cut -d' ' -f1)
disk=$work/disk.raw
cp --sparse=always "$base" "$disk"
mount_disk "$disk"
cp "$deb" "$mnt/tmp/guestprep.deb"
chroot "$mnt" dpkg -i /tmp/guestprep.deb >"$work/dpkg-i.log" 2>&1 ||
  { cat "$work/dpkg-i.log" >&2; fail "dpkg -i of the package failed in the image"; }
rm "$mnt/tmp/guestprep.deb"
[ -L "$mnt/etc/systemd/system/multi-user.target.wants/guestprep.service" ] ||
  fail "installing the package did not enable guestprep.service"
[ ! -e "$mnt/etc/systemd/system/multi-user.target.wants/guestprep-apply.service" ] ||
  fail "installing the package enabled guestprep-apply.service (the template builder chooses)"
[ ! -e "$mnt/etc/default/grub.d/99-guestprep.cfg" ] || fail "installing the package changed GRUB's config"
[ ! -e "$mnt/etc/systemd/system/timers.target.wants/guestprep-fleet.timer" ] ||
  fail "installing the package enabled the fleet's timer (it is for a Proxmox node, enabled by its admin)"
# Two kernels: trixie's (pinned below) and a newer one from trixie-backports, which GRUB boots by
# default until guestprep pins the other.
mapfile -t kernels < <(ls "$mnt/usr/lib/modules" | sort -V)
[ "${#kernels[@]}" -eq 2 ] || fail "the image should have two kernels, has: ${kernels[*]}"
pin=${kernels[0]} newer=${kernels[1]}
# The DKMS module is listed for the initramfs (as sites list i915 for early KMS): the initramfs
# must carry the DKMS build, not an older copy.
echo guestprep_hello >>"$mnt/etc/initramfs-tools/modules"
cat >"$mnt/etc/guestprep/policy.d/99-e2e.toml" <<EOF
# tests/vm/e2e.sh: boot trixie's kernel; the test DKMS package, served by the host through the
# guestfwd at 10.0.2.100.
[kernel]
version = "$pin"

[[packages.deb]]
name = "guestprep-hello-dkms"
version = "1.0"
url = "http://10.0.2.100/$(basename "$test_deb")"
sha256 = "$test_sha"
hold = true
dkms = { module = "guestprep-hello", version = "1.0" }
EOF
unmount_disk

# ---- 3. the cloud-init seeds --------------------------------------------------------------------
phase "seeds: user-data from docs/integrations.md, cidata ISOs"
# The first #cloud-config block of the doc, byte for byte: the doc cannot drift from what runs.
awk '/^```yaml$/ { inblock = 1; next } inblock && /^```$/ { exit } inblock { print }' \
  docs/integrations.md >"$work/user-data"
head -n1 "$work/user-data" | grep -qx '#cloud-config' || fail "docs/integrations.md's first yaml block is not the user-data"
grep -q 'guestprep apply' "$work/user-data" || fail "the documented user-data does not run guestprep apply"
mac=52:54:00:12:34:56
# Makes a NoCloud seed as Proxmox's qemu-server makes its cloud-init drive
# (src/PVE/QemuServer/Cloudinit.pm: user-data, meta-data, network-config and vendor-data in an
# ISO labelled cidata, `genisoimage -quiet -iso-level 3 -J -R -V cidata`), with its version 1
# network-config for `ipconfig0 ip=10.0.2.15/24,gw=10.0.2.2`.
make_seed() {
  local iso=$1 iid=$2 host=$3 dir=$work/seed-$2
  mkdir -p "$dir"
  cp "$work/user-data" "$dir/user-data"
  printf 'instance-id: %s\nlocal-hostname: %s\n' "$iid" "$host" >"$dir/meta-data"
  cat >"$dir/network-config" <<NET
version: 1
config:
    - type: physical
      name: eth0
      mac_address: '$mac'
      subnets:
      - type: static
        address: '10.0.2.15'
        netmask: '255.255.255.0'
        gateway: '10.0.2.2'
NET
  : >"$dir/vendor-data"
  genisoimage -quiet -iso-level 3 -J -R -V cidata -o "$iso" "$dir"
}
make_seed "$work/seed-template.iso" iid-template guestprep-template
make_seed "$work/seed-clone-a.iso" iid-clone-a k8s-clone-a

# ---- 4. boot -----------------------------------------------------------------------------------
python3 -u -m http.server --bind 127.0.0.1 --directory "$www" 0 >"$work/http.log" 2>&1 &
http_pid=$!
port=""
for _ in $(seq 100); do
  port=$(sed -n 's/.*port \([0-9]*\).*/\1/p' "$work/http.log" | head -n1)
  [ -n "$port" ] && break
  sleep 0.05
done
[ -n "$port" ] || fail "the HTTP server did not start: $(cat "$work/http.log")"

sock=$work/qga.sock
boots=0
# boot SEED [nowait]: starts QEMU with the disk and the seed as an IDE CD-ROM, waits for the
# agent and (unless nowait) for systemd's start jobs, cloud-init's included.
boot() {
  local seed=$1 wait=${2:-wait} tries=${3:-1}
  boots=$((boots + 1))
  rm -f "$sock"
  qemu-system-x86_64 -accel tcg,thread=multi -cpu max -m "$mem" -smp 2 -nodefaults \
    -display none -no-reboot \
    -drive "file=$disk,format=raw,if=virtio,cache=unsafe" \
    -drive "file=$seed,format=raw,if=ide,index=2,media=cdrom,readonly=on" \
    -nic "user,restrict=on,model=virtio-net-pci,mac=$mac,guestfwd=tcp:10.0.2.100:80-cmd:nc 127.0.0.1 $port" \
    -serial "file:$work/serial-$boots.log" \
    -chardev "socket,path=$sock,server=on,wait=off,id=qga0" \
    -device virtio-serial -device "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0" \
    >"$work/qemu-$boots.log" 2>&1 &
  qemu_pid=$!
  local deadline=$((SECONDS + boot_timeout))
  until [ -S "$sock" ] && "$gp" qga --socket "$sock" --timeout 2 ping >/dev/null 2>&1; do
    kill -0 "$qemu_pid" 2>/dev/null ||
      fail "QEMU exited during boot $boots: $(cat "$work/qemu-$boots.log")"
    # Debian's kernel sometimes dies in early boot under multi-threaded TCG (an int3 Oops while
    # patching static keys, before any of guestprep runs): boot once more, and say so.
    if [ "$tries" -lt 2 ] && grep -q 'Kernel panic - not syncing' "$work/serial-$boots.log" 2>/dev/null; then
      log "boot $boots: the guest kernel panicked in early boot under TCG ($(grep -m1 -o 'RIP: [^ ]*' "$work/serial-$boots.log")); booting again"
      kill "$qemu_pid"
      wait "$qemu_pid" 2>/dev/null || true
      qemu_pid=""
      boot "$seed" "$wait" $((tries + 1))
      return
    fi
    [ "$SECONDS" -lt "$deadline" ] ||
      fail "the guest agent did not answer within ${boot_timeout}s of boot $boots (serial log below)"
    sleep 1
  done
  [ "$wait" = wait ] || return 0
  # The agent answers before the boot is done: wait for systemd's start jobs (cloud-init's
  # stages, containerd…).
  local state
  state=$("$gp" qga --socket "$sock" exec --exec-timeout 600 -- systemctl is-system-running --wait || true)
  log "boot $boots: system $state after $((SECONDS + boot_timeout - deadline))s"
}
# Waits up to $1 seconds (default 120) for QEMU to exit after the guest rebooted or powered off
# (-no-reboot).
wait_qemu_exit() {
  local limit=${1:-120}
  local deadline=$((SECONDS + limit)) next_note=$((SECONDS + 120))
  while kill -0 "$qemu_pid" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || fail "the guest did not go down within ${limit}s"
    if [ "$SECONDS" -ge "$next_note" ]; then
      log "still up after $((SECONDS + limit - deadline))s: cloud-init $(qga exec -- cloud-init status 2>/dev/null | tr '\n' ' ')"
      next_note=$((SECONDS + 120))
    fi
    sleep 1
  done
  wait "$qemu_pid" || true
  qemu_pid=""
}

qga() { "$gp" qga --socket "$sock" "$@"; }
# Runs a command in the guest, prints its output; fails the test if it fails.
gx() { qga exec -- "$@" || fail "in the guest: $* exited $?"; }
# Runs a guestprep qga command and checks its exit code; its stdout goes to $work/out.
expect() {
  local want=$1 code=0
  shift
  qga "$@" >"$work/out" 2>"$work/err" || code=$?
  [ "$code" -eq "$want" ] ||
    fail "guestprep qga $* exited $code, wanted $want: $(cat "$work/err")
$(jq -c '.items[] | select(.status != "compliant" and .status != "skipped") | {id, status, message}' "$work/out" 2>/dev/null ||
      head -c 3000 "$work/out")"
}
# Waits up to $2 seconds for the daemon's report (file-read) to have exit code $1; leaves it in $work/out.
wait_report() {
  local want=$1 limit=$2 code deadline=$((SECONDS + $2))
  shift 2
  while :; do
    code=0
    qga --json report "$@" >"$work/out" 2>"$work/err" || code=$?
    [ "$code" -ne "$want" ] || return 0
    [ "$SECONDS" -lt "$deadline" ] ||
      fail "the daemon's report has exit code $code, not $want, after ${limit}s: $(cat "$work/err")
$(jq -c '.items[] | select(.status != "compliant" and .status != "skipped") | {id, status, message}' "$work/out" 2>/dev/null)"
    sleep 1
  done
}
# The status of one item of the JSON report in $work/out.
status_of() { jq -r --arg id "$1" '.items[] | select(.id == $id) | .status' "$work/out"; }
expect_status() {
  local got
  got=$(status_of "$1")
  [ "$got" = "$2" ] || fail "item $1 is '${got:-absent}', wanted $2: $(jq -c --arg id "$1" '.items[] | select(.id == $id)' "$work/out")"
}
# cloud-init finished in the guest without errors (`cloud-init status --wait`, its JSON).
cloud_init_done() {
  local code=0
  qga exec --exec-timeout 900 -- cloud-init status --wait --format json >"$work/ci-status.json" 2>"$work/err" || code=$?
  jq -e '.status == "done" and (.errors | length == 0)' "$work/ci-status.json" >/dev/null ||
    fail "cloud-init status (exit $code): $(cat "$work/ci-status.json" "$work/err")"
  [ "$code" -eq 0 ] || fail "cloud-init status --wait exited $code (recoverable errors): $(jq -c .recoverable_errors "$work/ci-status.json")"
}
# guestprep apply ran exactly once in this instance's cloud-init, and its output is plain text.
applied_once_by_cloud_init() {
  qga cat /var/log/cloud-init-output.log >"$work/cloud-init-output-$1.log"
  local n
  n=$(grep -cE '^(compliant|NOT compliant): [0-9]+ items: .*live system' "$work/cloud-init-output-$1.log" || true)
  [ "$n" -eq 1 ] || fail "$1: guestprep apply's verdict is in cloud-init-output.log $n times, not once (log: $work/cloud-init-output-$1.log)"
  ! grep -q $'\x1b' "$work/cloud-init-output-$1.log" || fail "$1: cloud-init-output.log has escape codes"
  ! grep -q $'\r' "$work/cloud-init-output-$1.log" || fail "$1: cloud-init-output.log has carriage returns"
  log "$1: apply in cloud-init-output.log: $(grep -E '^(compliant|NOT compliant): ' "$work/cloud-init-output-$1.log")"
}

phase "boot 1: cloud-init runs guestprep apply, power_state reboots"
boot "$work/seed-template.iso" nowait
log "guest agent: $(qga ping)"
kver=$(gx uname -r)
log "boot 1 kernel $kver (pinned: $pin)"
[ "$kver" = "$newer" ] || fail "GRUB booted $kver first, not the newest kernel $newer"
# Apply downloads and builds the DKMS module under TCG: minutes. The user-data's power_state
# reboots the guest when apply leaves a reboot pending (the GRUB arguments, the pinned kernel).
wait_qemu_exit 1800
log "boot 1: the guest rebooted itself"

phase "boot 2: cloud-init done, apply ran once"
boot "$work/seed-template.iso"
cloud_init_done
applied_once_by_cloud_init template
grep -q '^changed ' "$work/cloud-init-output-template.log" || fail "the first apply changed nothing"
[ "$(gx hostname)" = guestprep-template ] || fail "cloud-init did not set the seed's hostname: $(gx hostname)"
# The site fragment written by the user-data's write_files is in force.
[ "$(qga cat /proc/sys/fs/inotify/max_user_instances)" = 8192 ] || fail "the user-data's site fragment is not applied"

phase "checks after boot 2"
# GRUB booted the pinned kernel, not the newest.
[ "$(gx uname -r)" = "$pin" ] || fail "boot 2 runs $(gx uname -r), not the pinned $pin"
cmdline=$(qga cat /proc/cmdline)
log "cmdline: $cmdline"
for arg in intel_iommu=on i915.enable_guc=3 i915.max_vfs=7; do
  grep -qw -- "$arg" <<<"$cmdline" || fail "the kernel command line lacks $arg: $cmdline"
done
for unit in dkms.service systemd-timesyncd.service; do
  [ "$(qga exec -- systemctl is-enabled "$unit")" = masked ] || fail "$unit is not masked"
  ! qga exec -- systemctl is-active --quiet "$unit" || fail "$unit still runs"
done
for unit in chrony.service containerd.service ssh.service guestprep.service; do
  gx systemctl is-active --quiet "$unit"
done
gx grep -q '^server' /etc/chrony/conf.d/50-guestprep.conf
for key in net/ipv4/ip_forward net/bridge/bridge-nf-call-iptables net/bridge/bridge-nf-call-ip6tables; do
  [ "$(qga cat "/proc/sys/$key")" = 1 ] || fail "/proc/sys/$key is not 1"
done
qga cat /proc/modules >"$work/modules"
for m in overlay br_netfilter i915; do
  grep -q "^$m " "$work/modules" || fail "module $m is not loaded"
done
dkms=$(gx dkms status -m guestprep-hello -v 1.0 -k "$pin")
grep -q 'installed' <<<"$dkms" || fail "DKMS did not install guestprep-hello for $pin: $dkms"
gx sh -c "ls /lib/modules/$pin/updates/dkms/guestprep_hello.ko*" >/dev/null
# The initramfs of the pinned kernel carries the DKMS build and guestprep's modprobe.d file, as
# initramfs-tools' own lsinitramfs lists it.
lsinitramfs=$(gx lsinitramfs "/boot/initrd.img-$pin")
grep -q "updates/dkms/guestprep_hello.ko" <<<"$lsinitramfs" || fail "the initramfs of $pin lacks the DKMS module"
grep -q "etc/modprobe.d/guestprep.conf" <<<"$lsinitramfs" || fail "the initramfs of $pin lacks guestprep's modprobe.d file"
holds=$(gx apt-mark showhold)
for p in "linux-image-$pin" "linux-headers-$pin" linux-image-amd64 guestprep-hello-dkms containerd; do
  grep -qx "$p" <<<"$holds" || fail "$p is not held: $holds"
done
grep -q 'intel_iommu=on i915.enable_guc=3 i915.max_vfs=7' <<<"$(qga cat /boot/grub/grub.cfg)" ||
  fail "grub.cfg does not carry the policy's arguments"
grep -qx 'ciphers chacha20-poly1305@openssh.com,aes256-gcm@openssh.com' <<<"$(gx sshd -T)" ||
  fail "sshd's effective ciphers are not the policy's"
expect 0 --json verify -- --wait=2min
jq -e '.compliant and .summary.drift == 0 and .summary.pendingReboot == 0' "$work/out" >/dev/null ||
  fail "verify --wait after reboot: $(jq -c '{summary, waited}' "$work/out")"
for id in grub:cmdline kernel:running kernel:grub-default "deb:guestprep-hello-dkms" "dkms:guestprep-hello/1.0/$pin" "initramfs:$pin"; do
  expect_status "$id" compliant
done
# The daemon's report of this boot, by file-read only (what a Proxmox FileRead user gets).
wait_report 0 60 --max-age 5min
jq -e '.compliant' "$work/out" >/dev/null || fail "the daemon's report is not compliant"
gx modprobe guestprep_hello
gx grep -q '^guestprep_hello ' /proc/modules

phase "apply again: changes nothing"
expect 0 apply -- --json
jq -e '.apply.changes | length == 0' "$work/out" >/dev/null ||
  fail "the second apply changed: $(jq -c '.apply.changes' "$work/out")"

phase "qm guest exec: the documented jq on a real answer"
# What `qm guest exec VMID -- guestprep verify --json` prints, from this VM's agent
# (tests/vm/qm-guest-exec.py speaks the protocol itself and shapes the answer as qm does).
python3 tests/vm/qm-guest-exec.py "$sock" guestprep verify --json >"$work/qm-answer.json" ||
  fail "guest-exec of guestprep verify through the agent failed"
jq -e '.exited == 1 and .exitcode == 0 and (."out-data" | type == "string")' "$work/qm-answer.json" >/dev/null ||
  fail "the answer is not shaped as qm guest exec's: $(head -c 400 "$work/qm-answer.json")"
# The pipeline after `qm guest exec 9000 -- guestprep verify --json |` in docs/integrations.md.
doc_jq=$(grep -m1 '^qm guest exec 9000 -- guestprep verify --json |' docs/integrations.md | sed 's/^[^|]*| //; s/ *#.*$//')
[ -n "$doc_jq" ] || fail "docs/integrations.md has no 'qm guest exec 9000 -- guestprep verify --json | …' line"
log "documented pipeline: $doc_jq"
bash -o pipefail -c "$doc_jq" <"$work/qm-answer.json" >"$work/qm-jq.out" || fail "the documented jq failed on a real answer"
jq -e '.compliant == true and .exitcode == 0 and .summary.total > 0' "$work/qm-jq.out" >/dev/null ||
  fail "the documented jq did not get the report out: $(head -c 400 "$work/qm-jq.out")"

# ---- 6. seal, and two clones of the sealed disk -------------------------------------------------
phase "seal over the agent (after cloud-init is done), power off"
cloud_init_done
template_id=$(qga cat /etc/machine-id)
template_key=$(qga cat /etc/ssh/ssh_host_ed25519_key.pub)
expect 0 exec -- guestprep seal --yes --json
seal_id=$(jq -r .sealId "$work/out")
jq -e '.operations | index("cloud-init")' "$work/out" >/dev/null || fail "the seal did not run its cloud-init operation"
jq -e '[.removed[] | tostring | select(test("/var/lib/cloud"))] | length > 0' "$work/out" >/dev/null ||
  fail "the seal removed nothing of cloud-init's state: $(jq -c .removed "$work/out" | head -c 600)"
# The manifest carries guestprep's app-specific ID of the machine-id (an independent HMAC here),
# never the machine-id itself.
app_id=$(python3 -c 'import hmac,hashlib,sys
d=bytearray(hmac.new(bytes.fromhex(sys.argv[1]),bytes.fromhex("6f4c2a1e9b7d4e3f8a5c0d2b1e7f9a43"),hashlib.sha256).digest()[:16])
d[6]=(d[6]&0x0f)|0x40; d[8]=(d[8]&0x3f)|0x80; print(d.hex())' "$template_id")
[ "$(jq -r .templateMachineId "$work/out")" = "$app_id" ] || fail "the manifest names another machine-id"
[ -n "$template_id" ] || fail "the template has no machine-id"
if grep -q "$template_id" "$work/out"; then fail "the manifest exposes the machine-id"; fi
log "sealed: seal $seal_id, $(jq '.removed | length' "$work/out") paths"
gx sh -c '! ls /etc/ssh/ssh_host_* 2>/dev/null'
gx sh -c '[ -z "$(ls -A /var/lib/cloud)" ]'
[ -z "$(qga cat /etc/machine-id)" ] || fail "/etc/machine-id is not empty after seal"
qga exec -- systemctl poweroff --no-block >/dev/null 2>&1 || true
wait_qemu_exit
sealed=$disk

ids=()
keys=()
# clone a: a new seed (Proxmox regenerates a clone's drive: new instance-id, its own name).
# clone b: the template's own seed, same instance-id: cloud-init runs as on a first boot only
# because the seal emptied /var/lib/cloud (without it cloud-init finds the template's instance
# and skips every per-instance module, runcmd included).
for clone in a b; do
  phase "clone $clone: boot a copy of the sealed disk, check"
  disk=$work/clone-$clone.raw
  cp --sparse=always "$sealed" "$disk"
  if [ "$clone" = a ]; then
    seed=$work/seed-clone-a.iso iid=iid-clone-a host=k8s-clone-a
  else
    seed=$work/seed-template.iso iid=iid-template host=guestprep-template
  fi
  boot "$seed"
  cloud_init_done
  [ "$(qga cat /var/lib/cloud/data/instance-id)" = "$iid" ] || fail "clone $clone: cloud-init's instance is not $iid"
  # cloud-init found no earlier instance (its own log says so): the template's was sealed away;
  # its state holds this instance only.
  qga cat /var/log/cloud-init.log >"$work/cloud-init-$clone.log"
  grep -q 'previous iid found to be NO_PREVIOUS_INSTANCE_ID' "$work/cloud-init-$clone.log" ||
    fail "clone $clone: cloud-init found an earlier instance: $(grep 'previous iid found' "$work/cloud-init-$clone.log" | head -n3)"
  [ "$(gx ls /var/lib/cloud/instances)" = "$iid" ] || fail "clone $clone: cloud-init instances: $(gx ls /var/lib/cloud/instances)"
  applied_once_by_cloud_init "clone-$clone"
  [ "$(gx hostname)" = "$host" ] || fail "clone $clone is named $(gx hostname), not $host"
  id=$(qga cat /etc/machine-id)
  [[ "$id" =~ ^[0-9a-f]{32}$ ]] || fail "clone $clone has machine-id '$id'"
  [ "$id" != "$template_id" ] || fail "clone $clone kept the template's machine-id"
  gx systemctl is-active --quiet ssh.service
  key=$(qga cat /etc/ssh/ssh_host_ed25519_key.pub)
  [ "$key" != "$template_key" ] || fail "clone $clone kept the template's SSH host key"
  ids+=("$id")
  keys+=("$key")
  expect 0 --json verify -- --wait=2min
  [ "$(jq -r .seal.sealId "$work/out")" = "$seal_id" ] || fail "clone $clone's report lacks the seal manifest"
  # The daemon's report on the clone, by file-read: compliant, from this boot, sealed.
  wait_report 0 60 --max-age 5min
  [ "$(jq -r .seal.sealId "$work/out")" = "$seal_id" ] || fail "clone $clone's daemon report lacks the seal"
  qga exec -- systemctl poweroff --no-block >/dev/null 2>&1 || true
  wait_qemu_exit
done
[ "${ids[0]}" != "${ids[1]}" ] || fail "the two clones have the same machine-id ${ids[0]}"
[ "${keys[0]}" != "${keys[1]}" ] || fail "the two clones have the same SSH host key"
log "clones: machine-ids ${ids[0]} ${ids[1]}; host keys differ"
end_phase
log "PASS"
