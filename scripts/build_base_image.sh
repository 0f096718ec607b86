#!/usr/bin/env bash
# A local Debian bookworm base image for machines that reach no container
# registry: debootstrap (minbase + python3, venv, tini, CA certificates)
# piped into `docker import`. Debian's python3 is 3.11, the Python the pins
# are resolved for. Usage: scripts/build_base_image.sh [IMAGE]
set -euo pipefail

image="${1:-daskyard/base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if docker image inspect "$image" >/dev/null 2>&1; then
  echo "build_base_image: $image exists"
  exit 0
fi
rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs"' EXIT
echo "build_base_image: debootstrap bookworm from $mirror"
debootstrap --variant=minbase --include=ca-certificates,python3,python3-venv,tini \
  bookworm "$rootfs" "$mirror" >/dev/null
# This machine's trust store: builds here may go through a TLS-inspecting
# proxy whose CA only the host knows.
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' - "$image" >/dev/null
echo "build_base_image: $image ($(docker image inspect "$image" --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}'))"
