#!/usr/bin/env bash
# Make `docker` usable on a CI machine or a fresh VM: install docker.io and
# debootstrap (Debian) when missing, start dockerd when no daemon answers.
# Idempotent: a second run finds the daemon and exits at once.
# Only `--network host` is used by daskyard's builds and tests, so the daemon
# runs without its own bridge or iptables rules (neither may be available
# inside a VM or container). The storage driver is dockerd's choice (overlay2
# where the filesystem allows it); DOCKERD_ARGS adds flags, for instance
# DOCKERD_ARGS=--storage-driver=vfs where overlayfs cannot be mounted.
set -euo pipefail

log="${DOCKERD_LOG:-/tmp/dockerd.log}"
wait_s="${DOCKERD_WAIT_S:-60}"

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "start_dockerd: docker.io and debootstrap are missing; install them (root, Debian)" >&2
    exit 1
  fi
  echo "start_dockerd: installing docker.io and debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
fi

if docker info >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "start_dockerd: no Docker daemon answers and only root can start one" >&2
  exit 1
fi
# shellcheck disable=SC2086  # DOCKERD_ARGS is a list of flags
nohup dockerd --iptables=false --bridge=none ${DOCKERD_ARGS:-} >"$log" 2>&1 &
pid=$!
for _ in $(seq "$wait_s"); do
  if docker info >/dev/null 2>&1; then
    echo "start_dockerd: dockerd $(docker version --format '{{.Server.Version}}')" \
      "is up (pid $pid, storage driver $(docker info --format '{{.Driver}}'), log $log)"
    exit 0
  fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 1
done
echo "start_dockerd: dockerd did not come up within ${wait_s}s; the end of $log:" >&2
tail -20 "$log" >&2
exit 1
