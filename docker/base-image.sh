#!/usr/bin/env bash
# Build Orchard's base image without any container registry.
#
# Air-gapped sites (and CI here) have a Debian mirror but no registry, so the
# base comes from debootstrap: a minimal bookworm root file system with
# Python 3.11 and the few shared libraries the components load at run time,
# imported as an image with `docker import`. Its python3 (3.11.2) has the
# same ABI as the host's 3.11, so wheels downloaded on the host fit.
#
#   docker/base-image.sh [IMAGE]        (default orchard/base:bookworm)
#   DEBIAN_MIRROR=http://mirror.local/debian docker/base-image.sh
#
# Packages, and why each is there:
#   python3, python3-venv   the interpreter and `python3 -m venv` for the build stage
#   libgomp1, libquadmath0  libmxnet.so links them (a minbase rootfs lacks both)
#   iptables                random packet loss for the link emulator (orchard.netsim)
#   util-linux (minbase)    setpriv: the client entrypoint drops root after iptables
set -euo pipefail

image=${1:-orchard/base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=${DEBIAN_SUITE:-bookworm}
packages=python3,python3-venv,libgomp1,libquadmath0,iptables,ca-certificates

for tool in debootstrap docker tar; do
  command -v "$tool" >/dev/null || {
    echo "base-image: '$tool' is missing (apt-get install -y debootstrap docker.io)" >&2
    exit 1
  }
done
if [ "$(id -u)" != 0 ]; then
  echo "base-image: debootstrap needs root (run with sudo)" >&2
  exit 1
fi

rootfs=$(mktemp -d /var/tmp/orchard-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT

echo "base-image: debootstrap $suite from $mirror"
debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
  tail -20 "$rootfs.log" >&2
  rm -f "$rootfs.log"
  echo "base-image: debootstrap failed (is $mirror reachable?)" >&2
  exit 1
}
rm -f "$rootfs.log"

# Nothing at run time needs package archives, indexes, docs or translations.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/* \
  "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log "$rootfs"/var/cache/debconf/*-old
# Point apt at the mirror the rootfs came from, for anyone extending the image.
echo "deb $mirror $suite main" >"$rootfs/etc/apt/sources.list"

echo "base-image: importing as $image"
tar -C "$rootfs" --numeric-owner -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' \
  --message "debootstrap --variant=minbase $suite + $packages" \
  - "$image" >/dev/null
docker image ls "$image" --format 'base-image: {{.Repository}}:{{.Tag}} {{.Size}}'
