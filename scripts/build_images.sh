#!/usr/bin/env bash
# `make images`: build daskyard/runtime:dev and daskyard/runtime:<version>
# (with --gpu also daskyard/runtime-gpu:dev and :<version>; the two share
# every layer but their metadata).
#
# BASE_IMAGE overrides the base. Without it: the public python slim image
# when it is present, else the local Debian base when an earlier offline
# build made one, else the public image if it can be pulled, else (no
# registry reachable) a local Debian base built with debootstrap.
#
# An image whose build-context label matches the current tree (Dockerfile,
# .dockerignore, pins, package sources, base image, build arguments) is up to
# date and not rebuilt; --force rebuilds anyway (Docker's layer cache still
# applies).
set -euo pipefail
cd "$(dirname "$0")/.."

usage="usage: scripts/build_images.sh [--gpu] [--force]"
images=(runtime)
force=0
for arg in "$@"; do
  case "$arg" in
    --gpu) images+=(runtime-gpu) ;;
    --force) force=1 ;;
    -h | --help) echo "$usage"; exit 0 ;;
    *) echo "build_images: unknown argument $arg; $usage" >&2; exit 2 ;;
  esac
done

public_base="python:3.11-slim-bookworm"
local_base="daskyard/base:bookworm"
label="io.daskyard.build-context"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)"
[ -n "$version" ] || { echo "build_images: no version in pyproject.toml" >&2; exit 1; }

exists() { docker image inspect "$1" >/dev/null 2>&1; }

if [ -z "${BASE_IMAGE:-}" ]; then
  if exists "$public_base"; then
    BASE_IMAGE="$public_base"
  elif exists "$local_base"; then
    echo "build_images: using $local_base (docker rmi it to build on $public_base)"
    BASE_IMAGE="$local_base"
  elif timeout 120 docker pull -q "$public_base" >/dev/null 2>&1; then
    BASE_IMAGE="$public_base"
  else
    echo "build_images: $public_base cannot be pulled; building $local_base with debootstrap"
    bash scripts/build_base_image.sh "$local_base"
    BASE_IMAGE="$local_base"
  fi
fi
exists "$BASE_IMAGE" || docker pull -q "$BASE_IMAGE" >/dev/null

build_args=(--build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "VERSION=$version")
case "$BASE_IMAGE" in
  daskyard/base:*)
    # A local base carries this machine's CA bundle (see build_base_image.sh).
    build_args+=(--build-arg "PIP_CERT=/etc/ssl/certs/ca-certificates.crt") ;;
esac

# What the build reads: the files .dockerignore lets through, the Dockerfile,
# the base image's id and the build arguments.
context_hash() {
  {
    docker image inspect "$BASE_IMAGE" --format '{{.Id}}'
    printf '%s\n' "${build_args[@]}"
    find .dockerignore "$1" pyproject.toml README.md requirements src -type f \
      ! -path '*/__pycache__/*' ! -path '*.egg-info/*' -print0 \
      | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-32
}

for name in "${images[@]}"; do
  dockerfile="images/$name/Dockerfile"
  image="daskyard/$name"
  hash="$(context_hash "$dockerfile")"
  current="$(docker image inspect "$image:dev" --format "{{index .Config.Labels \"$label\"}}" \
    2>/dev/null || true)"
  if [ "$force" = 0 ] && [ "$current" = "$hash" ] && exists "$image:$version"; then
    echo "build_images: $image:dev is up to date (build context $hash)"
    continue
  fi
  echo "build_images: $image:$version on $BASE_IMAGE"
  start=$(date +%s)
  docker build --network host "${build_args[@]}" --label "$label=$hash" \
    -f "$dockerfile" -t "$image:dev" -t "$image:$version" .
  size=$(docker image inspect "$image:dev" --format '{{.Size}}')
  echo "build_images: $image:dev = $image:$version, $((size / 1000000)) MB," \
    "built in $(($(date +%s) - start)) s"
done
# Superseded images (untagged by a newer build) go; the builder stages, which
# are Docker's layer cache, stay.
docker image prune -f --filter "label=$label" >/dev/null
