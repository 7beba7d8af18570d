#!/usr/bin/env bash
# Builds, or reuses from the cache, the real i915-sriov-dkms .debs the way upstream's CI builds
# them (tests/fixtures/i915-sriov-dkms/README.md): the release at each fixture tag, plus
# 2025.07.22 with the test-only compatibility patch (what a site builds and pins by its own
# sha256). Built with Debian 13's own dpkg-buildpackage and dh-dkms, in a chroot of the cached
# `dkms` test root. Prints the directory holding the .debs:
#
#   i915-sriov-dkms_2025.07.22_amd64.deb  i915-sriov-dkms_2026.03.05.2_amd64.deb
#   i915-sriov-dkms_2026.05.06_amd64.deb  i915-sriov-dkms_2025.07.22+compat_amd64.deb (patched)
#
# The cache key is this script, the tarballs, the patch and the build root, so any change rebuilds.
# Needs root; reaches nothing (the build root already has the tools).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
fix=$here/../fixtures/i915-sriov-dkms
cache=${GUESTPREP_TESTBED_CACHE:-$HOME/.cache/guestprep-testbed}
root_tar=$("$here/rootfs.sh" dkms)
key=$( (cat "$0" "$fix"/*.tar.gz "$fix"/*.patch; echo "$root_tar") | sha256sum | cut -c1-16)
out=$cache/i915-debs-$key
mkdir -p "$cache"
exec 9>"$cache/i915-debs.lock"
flock 9
if [ -d "$out" ]; then
  echo "$out"
  exit 0
fi
start=$(date +%s)
work=$(mktemp -d /var/tmp/guestprep-i915-build.XXXXXX)
trap 'umount "$work/root/proc" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir "$work/root" "$work/debs"
tar -xf "$root_tar" -C "$work/root"
mount -t proc proc "$work/root/proc"
build() { # TAG [patch]
  local tag=$1 patch=${2:-} dir=/build/$1${2:+-compat}
  mkdir -p "$work/root$dir"
  tar -xzf "$fix/i915-sriov-dkms-$tag.tar.gz" -C "$work/root$dir" --strip-components=1
  [ -z "$patch" ] || patch -s -d "$work/root$dir" -p1 <"$fix/$patch"
  # Upstream's CI substitutes the release's version for its placeholders before building.
  chroot "$work/root" sh -ec "cd $dir
    v=\$(sed -n 's/^PACKAGE_VERSION=\"\\(.*\\)\"/\\1/p' dkms.conf)
    sed -i \"s/###LATEST_VERSION###/\$v/g\" debian/control debian/changelog
    dpkg-buildpackage -b -us -uc >../build-$tag${patch:+-compat}.log 2>&1 ||
      { tail -30 ../build-$tag${patch:+-compat}.log >&2; exit 1; }"
  local deb
  deb=$(ls "$work/root/build"/i915-sriov-dkms_*_amd64.deb)
  mv "$deb" "$work/debs/i915-sriov-dkms_${tag}${patch:++compat}_amd64.deb"
  rm -f "$work/root/build"/*.buildinfo "$work/root/build"/*.changes
}
build 2025.07.22
build 2026.03.05.2
build 2026.05.06
build 2025.07.22 compat-2025.07.22-debian-6.12.117.patch
mv "$work/debs" "$out"
find "$cache" -maxdepth 1 -name 'i915-debs-*' ! -name "$(basename "$out")" -exec rm -rf {} +
echo "i915-debs.sh: built 4 .debs in $(( $(date +%s) - start ))s" >&2
echo "$out"
