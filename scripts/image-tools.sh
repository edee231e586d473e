#!/usr/bin/env bash
# Installs what `ova-build` and its boot test need on a Debian 12 machine, and prints the path of
# qemu-system-x86_64 as the last line.
#
# QEMU: where Debian's qemu-system-x86 cannot be installed without removing the machine's newer
# qemu-utils (a backported qemu-utils "Breaks" qemu-system-common 7.2), apt is never allowed to
# remove it: the QEMU packages are unpacked into target/qemu-root instead and their libraries
# installed normally. Such a QEMU needs its firmware folders given with -L; ova-build does that.
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS=(mmdebstrap grub-pc-bin fdisk e2fsprogs qemu-utils genisoimage libxml2-utils curl binutils)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
QEMU=$(command -v qemu-system-x86_64 || true)
LOCAL=$PWD/target/qemu-root/usr/bin/qemu-system-x86_64
[ -n "$QEMU" ] || { [ -x "$LOCAL" ] && QEMU=$LOCAL; } || true
if [ ${#missing[@]} -gt 0 ] || [ -z "$QEMU" ]; then
  apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --no-remove "${missing[@]}" >&2
fi
if [ -z "$QEMU" ]; then
  if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --no-remove qemu-system-x86 >&2; then
    QEMU=$(command -v qemu-system-x86_64)
  else
    echo "qemu-system-x86 cannot be installed beside this qemu-utils; unpacking it into target/qemu-root" >&2
    deps=$(apt-cache depends qemu-system-x86 qemu-system-common |
      awk '/^ *Depends:/ {print $2}' | grep -v -e '^<' -e '^qemu-system-common$' | sort -u)
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --no-remove $deps >&2
    debs=$(mktemp -d) && chmod 755 "$debs"
    (cd "$debs" && apt-get download -q qemu-system-x86 qemu-system-common >&2)
    rm -rf target/qemu-root && mkdir -p target/qemu-root
    for d in "$debs"/*.deb; do dpkg-deb -x "$d" target/qemu-root; done
    rm -rf "$debs"
    QEMU=$LOCAL
  fi
fi
"$QEMU" --version | head -n1 >&2
echo "$QEMU"
