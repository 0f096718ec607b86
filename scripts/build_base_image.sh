#!/usr/bin/env bash
# A local Debian bookworm base image for machines that reach no container
# registry: debootstrap (minbase + python3, venv, tini, CA certificates),
# brought up to date from bookworm-updates and bookworm-security like the
# official images, piped into `docker import`. Debian's python3 is 3.11, the
# Python the pins are resolved for. Needs root, debootstrap and a Debian
# mirror (DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR).
# Usage: scripts/build_base_image.sh [IMAGE]   (default daskyard/base:bookworm)
set -euo pipefail

image="${1:-daskyard/base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"

if docker image inspect "$image" >/dev/null 2>&1; then
  echo "build_base_image: $image exists"
  exit 0
fi
start=$(date +%s)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
log="$work/log"
step() {  # quiet unless it fails
  if ! "$@" >>"$log" 2>&1; then
    echo "build_base_image: failed: $*" >&2
    tail -30 "$log" >&2
    exit 1
  fi
}
echo "build_base_image: debootstrap bookworm from $mirror"
step debootstrap --variant=minbase --include=ca-certificates,python3,python3-venv,tini \
  bookworm "$rootfs" "$mirror"
rm -f "$rootfs/etc/apt/sources.list"
cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
step env DEBIAN_FRONTEND=noninteractive chroot "$rootfs" sh -c \
  'apt-get -o APT::Sandbox::User=root update -qq &&
   apt-get -o APT::Sandbox::User=root upgrade -y -qq && apt-get clean'
# This machine's trust store: builds here may go through a TLS-inspecting
# proxy whose CA only the host knows.
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
# Docker provides these at run time; the rest is download cache.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
  "$rootfs"/etc/resolv.conf "$rootfs"/etc/hostname
tar -C "$rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' - "$image" >/dev/null
size="$(docker image inspect "$image" --format '{{.Size}}')"
echo "build_base_image: $image, $((size / 1000000)) MB, built in $(($(date +%s) - start)) s"
