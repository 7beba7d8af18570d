#!/usr/bin/env bash
# Builds, or reuses from the cache, a Debian 13 root filesystem tarball for the tests, and prints
# its path. The cache key is this script's content plus the set name, so changing a package list
# rebuilds. Cache: $GUESTPREP_TESTBED_CACHE (default ~/.cache/guestprep-testbed).
#
#   tests/testbed/rootfs.sh systemd   # systemd, dbus, systemd-timesyncd, cron, chrony's files
#
# Needs root and mmdebstrap; reaches only the Debian mirror.
set -euo pipefail
name=${1:?usage: rootfs.sh SET}
here=$(cd "$(dirname "$0")" && pwd)

common=systemd,systemd-sysv,dbus,udev,kmod,iproute2,passwd,procps,ca-certificates
hooks=()
case "$name" in
  systemd)
    # systemd-timesyncd: a real unit to mask and stop. cron: a unit that really runs in a
    # container. chrony conflicts with systemd-timesyncd (both provide time-daemon), so its package
    # files are unpacked without registering it: a real chrony.service (with Alias=chronyd.service)
    # for systemd to enable.
    include=$common,systemd-timesyncd,cron
    hooks+=(--customize-hook='chroot "$1" sh -c "cd /tmp && apt-get download -q chrony >/dev/null" && dpkg-deb -x "$1"/tmp/chrony_*.deb "$1" && rm -f "$1"/tmp/chrony_*.deb')
    ;;
  *)
    echo "rootfs.sh: unknown set $name" >&2
    exit 2
    ;;
esac

cache=${GUESTPREP_TESTBED_CACHE:-$HOME/.cache/guestprep-testbed}
key=$( { cat "$0"; echo "$name"; } | sha256sum | cut -c1-16)
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
mmdebstrap --quiet --variant=minbase --components=main --format=tar \
  --include="$include" \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
  "${hooks[@]}" \
  trixie "$out.tmp" >&2
mv "$out.tmp" "$out"
# Keep only the newest build of each set.
find "$cache" -name "$name-*.tar" ! -name "$(basename "$out")" -delete
echo "rootfs.sh: built $out in $(( $(date +%s) - start ))s" >&2
echo "$out"
