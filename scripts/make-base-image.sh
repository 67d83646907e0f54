#!/usr/bin/env bash
# Build a Debian base image with debootstrap + `docker import`, for hosts where no container
# registry is reachable. Idempotent: does nothing when the tag already exists.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/make-base-image.sh [--tag TAG] [--suite SUITE] [--mirror URL] [--force]

Creates a minimal Debian image from the distribution mirror (no registry needed).
  --tag TAG       image tag to create        (env BASE_IMAGE_TAG, default labelstack/debian:bookworm)
  --suite SUITE   Debian suite               (env BASE_IMAGE_SUITE, default bookworm)
  --mirror URL    Debian mirror              (env BASE_IMAGE_MIRROR, default http://deb.debian.org/debian)
  --force         rebuild even if the tag exists
USAGE
}

tag=${BASE_IMAGE_TAG:-labelstack/debian:bookworm}
suite=${BASE_IMAGE_SUITE:-bookworm}
mirror=${BASE_IMAGE_MIRROR:-http://deb.debian.org/debian}
force=false
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tag) tag=$2; shift 2 ;;
    --suite) suite=$2; shift 2 ;;
    --mirror) mirror=$2; shift 2 ;;
    --force) force=true; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "FAIL: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

command -v debootstrap >/dev/null || { echo "FAIL: debootstrap not installed (apt-get install debootstrap)" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "FAIL: Docker engine not answering on its socket" >&2; exit 1; }

if ! $force && docker image inspect "$tag" >/dev/null 2>&1; then
  echo "Base image $tag already present"
  exit 0
fi

rootfs=$(mktemp -d /var/tmp/labelstack-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "Bootstrapping Debian $suite from $mirror ..."
debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
  || { tail -20 "$rootfs.log" >&2; echo "FAIL: debootstrap of '$suite' from '$mirror' failed" >&2; exit 1; }
rm -f "$rootfs.log"
# Keep images small and reproducible: no apt caches, no docs, no recommends.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
  >"$rootfs/etc/apt/apt.conf.d/90labelstack-norecommends"
tar --numeric-owner -C "$rootfs" -c . \
  | docker import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' \
      --message "debootstrap $suite from $mirror" - "$tag" >/dev/null
echo "Created base image $tag"
