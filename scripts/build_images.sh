#!/usr/bin/env bash
# `make images`: build daskyard/runtime:dev and daskyard/runtime:<version>.
# BASE_IMAGE overrides the base. Without it, the public python slim image is
# used when it is present or can be pulled; otherwise (no registry reachable)
# a local Debian base is built with debootstrap and used instead.
set -euo pipefail
cd "$(dirname "$0")/.."

public_base="python:3.11-slim-bookworm"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)"
build_args=()

if [ -z "${BASE_IMAGE:-}" ]; then
  if docker image inspect "$public_base" >/dev/null 2>&1 \
     || timeout 30 docker pull -q "$public_base" >/dev/null 2>&1; then
    BASE_IMAGE="$public_base"
  else
    echo "build_images: $public_base cannot be pulled; building a local base image"
    bash scripts/build_base_image.sh daskyard/base:bookworm
    BASE_IMAGE="daskyard/base:bookworm"
    # The local base carries this machine's CA bundle (see build_base_image.sh).
    build_args+=(--build-arg "PIP_CERT=/etc/ssl/certs/ca-certificates.crt")
  fi
fi

echo "build_images: daskyard/runtime:$version on $BASE_IMAGE"
start=$(date +%s)
docker build --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" "${build_args[@]}" \
  -f images/runtime/Dockerfile -t daskyard/runtime:dev -t "daskyard/runtime:$version" .
size=$(docker image inspect daskyard/runtime:dev --format '{{.Size}}')
echo "build_images: daskyard/runtime:dev = daskyard/runtime:$version," \
  "$((size / 1000000)) MB, built in $(($(date +%s) - start)) s"
