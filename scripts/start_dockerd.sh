#!/usr/bin/env bash
# Make `docker` usable on a CI machine or a fresh VM: install docker.io and
# debootstrap (Debian) when missing, start dockerd when no daemon answers.
# Only `--network host` is used by daskyard's builds and tests, so the daemon
# runs without its own bridge or iptables rules.
set -euo pipefail

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "start_dockerd: docker.io and debootstrap are missing; install them (root, Debian)" >&2
    exit 1
  fi
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
nohup dockerd --iptables=false --bridge=none >/tmp/dockerd.log 2>&1 &
for _ in $(seq 60); do
  if docker info >/dev/null 2>&1; then
    echo "start_dockerd: dockerd is up ($(docker version --format '{{.Server.Version}}'))"
    exit 0
  fi
  sleep 1
done
echo "start_dockerd: dockerd did not answer within 60s; see /tmp/dockerd.log" >&2
tail -20 /tmp/dockerd.log >&2
exit 1
