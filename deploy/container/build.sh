#!/bin/sh
# Build the node image without a container registry (`make image` runs this):
#   1. debootstrap a minimal Debian 12 root filesystem with python3 (cached in $WORK/rootfs.tar
#      until this script or the Debian suite changes);
#   2. build the project's wheel and every dependency's wheel on this host (pip, PyPI);
#   3. `buildah build` the Containerfile (both stages FROM scratch + the tarball).
# Prints the image's size and how long its node takes from start to listening.
# Usage: deploy/container/build.sh [IMAGE_NAME]   (default localhost/enclave-swarm:<version>)
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=${IMAGE_WORK:-$ROOT/build/image}
SUITE=${DEBIAN_SUITE:-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PY=${PY:-$ROOT/.venv/bin/python}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -n1)
IMAGE=${1:-localhost/enclave-swarm:$VERSION}
# chroot isolation: RUN steps work inside a container or VM guest that cannot create new
# namespaces for an OCI runtime (set BUILDAH_ISOLATION=oci where it can).
export BUILDAH_ISOLATION=${BUILDAH_ISOLATION:-chroot}

mkdir -p "$WORK"
stamp="$WORK/rootfs.$SUITE.$(sha256sum "$HERE/build.sh" | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "image: debootstrap $SUITE (minbase + python3) into $WORK/rootfs"
  rm -rf "$WORK/rootfs" "$WORK"/rootfs.*
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -n 20 "$WORK/debootstrap.log" >&2; exit 1; }
  # what a container never needs: apt lists and the downloaded .debs, docs, man pages, locales,
  # the debootstrap log
  rm -rf "$WORK/rootfs/var/lib/apt/lists"/* "$WORK/rootfs/var/cache/apt"/*.bin \
    "$WORK/rootfs/var/cache/apt/archives"/*.deb \
    "$WORK/rootfs/usr/share/doc" "$WORK/rootfs/usr/share/man" "$WORK/rootfs/usr/share/info" \
    "$WORK/rootfs/usr/share/locale" "$WORK/rootfs/debootstrap"
  tar -C "$WORK/rootfs" --numeric-owner -cf "$WORK/rootfs.tar" .
  rm -rf "$WORK/rootfs"
  touch "$stamp"
fi
echo "image: wheels for enclave-swarm[k8s] into $WORK/wheels"
rm -rf "$WORK/wheels"
"$PY" -m pip wheel -q --wheel-dir "$WORK/wheels" "$ROOT[k8s]"
cp "$HERE/Containerfile" "$HERE/entrypoint.sh" "$WORK/"
echo "image: buildah build -> $IMAGE"
buildah build --layers=false -f "$WORK/Containerfile" -t "$IMAGE" "$WORK"
buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$IMAGE"
