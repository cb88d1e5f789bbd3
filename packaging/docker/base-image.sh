#!/usr/bin/env bash
# Build the base image the Dockerfile names (debian:bookworm-slim) from Debian's
# packages, for machines that reach no container registry (this project's CI):
# debootstrap --variant=minbase bookworm, then docker import. About 30-40 s.
# No ca-certificates in it, like the official slim image.
#   packaging/docker/base-image.sh [TAG]      (DEBIAN_MIRROR picks the mirror)
set -euo pipefail
tag=${1:-debian:bookworm-slim}
docker=${DOCKER:-docker}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase bookworm "$root" ${DEBIAN_MIRROR:+"$DEBIAN_MIRROR"} >"$root.log" 2>&1 \
    || { tail -20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | "$docker" import -c 'CMD ["bash"]' - "$tag" >/dev/null
echo "built $tag from debootstrap (minbase, bookworm)"
