#!/usr/bin/env bash
# Builds guestprep's systemd-sysext image for Flatcar from the static binary: /usr/bin/guestprep,
# the daemon's and the apply unit, and the extension-release file systemd-sysext checks before it
# merges an image into /usr (ID=flatcar and SYSEXT_LEVEL=1.0, as Flatcar's own os-release says).
# The image is squashfs, as Flatcar's docs build theirs (`make sysext` calls this).
#
#   tests/testbed/sysext.sh STATIC_BINARY OUT.raw
set -euo pipefail
bin=${1:?usage: sysext.sh STATIC_BINARY OUT.raw}
out=${2:?usage: sysext.sh STATIC_BINARY OUT.raw}
here=$(cd "$(dirname "$0")/../.." && pwd)
command -v mksquashfs >/dev/null || { echo "sysext.sh: mksquashfs is not installed (Debian package squashfs-tools)" >&2; exit 1; }
! readelf -lW "$bin" | grep -q INTERP || { echo "sysext.sh: $bin is not a static binary (make static)" >&2; exit 1; }
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
install -D -m 0755 "$bin" "$stage/usr/bin/guestprep"
install -D -m 0644 "$here/units/guestprep.service" "$stage/usr/lib/systemd/system/guestprep.service"
install -D -m 0644 "$here/units/guestprep-apply.service" "$stage/usr/lib/systemd/system/guestprep-apply.service"
install -d "$stage/usr/lib/extension-release.d"
cat >"$stage/usr/lib/extension-release.d/extension-release.guestprep" <<REL
ID=flatcar
SYSEXT_LEVEL=1.0
ARCHITECTURE=x86-64
REL
rm -f "$out"
mksquashfs "$stage" "$out" -all-root -noappend -quiet >/dev/null
echo "$out: $(stat -c %s "$out") bytes"
