#!/usr/bin/env bash
# Builds tug's container image without pulling a base image from a registry: a Debian bookworm
# root file system made by mmdebstrap from Debian's packages, plus the tug binary, packed by umoci
# as an OCI image layout. It has what the Dockerfile's image has: the same packages, user
# (tug, 10001:10001, home /var/lib/tug), paths, environment, volume, working directory,
# entrypoint, command and exposed ports (crates/tug/tests/image.rs compares the two).
#
#   deploy/image/build.sh --binary target/release/tug --out tug-image [--tag 0.1.0] [--archive tug-image.tar]
#
# OUT is an OCI image layout (index.json, blobs/) with the image tagged TAG (default: latest);
# --archive also writes it as one tar (an "oci-archive", as `podman load -i` and
# `skopeo copy oci-archive:…` read it). Two layers: the Debian root file system, then
# /usr/local/bin/tug. Sizes are printed at the end.
#
# Needs root (mmdebstrap's root mode and file owners in the layers), mmdebstrap, umoci and tar
# (`apt-get install mmdebstrap umoci`), and Debian's package mirror: MIRROR (default: mmdebstrap's,
# deb.debian.org). Everything is built in a temporary directory that is removed at the end;
# nothing is cached.
set -euo pipefail

# What tug needs at run time (README.md, "One binary"; the Dockerfile installs the same):
# git does every clone, fetch and push; openssh-client for ssh:// remotes; ca-certificates for
# git over https:// (tug's own HTTPS calls carry their root certificates).
PACKAGES=(git openssh-client ca-certificates)
SUITE=bookworm
TUG_UID=10001
TUG_HOME=/var/lib/tug

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit "${1:-2}"; }

binary= out= tag=latest archive=
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    --tag) tag=${2:?}; shift 2 ;;
    --archive) archive=${2:?}; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "build.sh: unknown argument $1" >&2; usage ;;
  esac
done
[ -n "$binary" ] && [ -n "$out" ] || usage
[ -x "$binary" ] || { echo "build.sh: $binary is not an executable" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "build.sh: run as root (mmdebstrap's root mode, file owners)" >&2; exit 2; }
for tool in mmdebstrap umoci tar; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool is missing (apt-get install mmdebstrap umoci)" >&2; exit 2; }
done
[ ! -e "$out" ] || { echo "build.sh: $out exists" >&2; exit 2; }
binary=$(realpath "$binary")

work=$(mktemp -d "${TMPDIR:-/tmp}/tug-image.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Layer 1: Debian with the packages, without documentation, manuals and translations (as
# Debian's slim images), and the Dockerfile's user and directories.
mirror=()
[ -z "${MIRROR:-}" ] || mirror=("$MIRROR")
mmdebstrap --variant=essential --mode=root --format=directory \
  --include="$(IFS=,; echo "${PACKAGES[*]}")" \
  --aptopt='Acquire::Languages "none"' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/lintian/*' \
  --customize-hook="chroot \"\$1\" groupadd --gid $TUG_UID tug" \
  --customize-hook="chroot \"\$1\" useradd --uid $TUG_UID --gid $TUG_UID --home-dir $TUG_HOME --no-create-home --shell /usr/sbin/nologin tug" \
  --customize-hook="mkdir -p \"\$1$TUG_HOME\" \"\$1/etc/tug\" && chown $TUG_UID:$TUG_UID \"\$1$TUG_HOME\"" \
  --customize-hook='rm -rf "$1"/var/cache/debconf/*-old "$1"/var/lib/dpkg/*-old "$1"/var/log/*' \
  "$SUITE" "$work/rootfs" "${mirror[@]}"

# The runtime mounts /dev, /proc and /sys: the layer has them as empty directories.
tar_layer() {
  tar --create --file "$1" --directory "$2" --numeric-owner --sort=name --xattrs \
    --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' .
}
tar_layer "$work/debian.tar" "$work/rootfs"

# Layer 2: the binary.
install -d -m 0755 "$work/bin-layer/usr/local/bin"
install -m 0755 "$binary" "$work/bin-layer/usr/local/bin/tug"
tar --create --file "$work/tug.tar" --directory "$work/bin-layer" --numeric-owner --owner=0 \
  --group=0 --sort=name usr

umoci init --layout "$out"
umoci new --image "$out:$tag"
umoci raw add-layer --image "$out:$tag" "$work/debian.tar" \
  --history.created_by "mmdebstrap --variant=essential --include=$(IFS=,; echo "${PACKAGES[*]}") $SUITE; user tug $TUG_UID:$TUG_UID"
umoci raw add-layer --image "$out:$tag" "$work/tug.tar" \
  --history.created_by "install -m 0755 tug /usr/local/bin/tug"
# The Dockerfile's ENV (PATH as the Debian base image sets it), VOLUME, WORKDIR, USER, EXPOSE,
# ENTRYPOINT and CMD.
umoci config --image "$out:$tag" \
  --config.env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.env=TUG_DATA_DIR=$TUG_HOME \
  --config.volume=$TUG_HOME \
  --config.workingdir=$TUG_HOME \
  --config.user=$TUG_UID:$TUG_UID \
  --config.exposedports=12010/tcp --config.exposedports=12011/tcp \
  --config.entrypoint=tug \
  --config.cmd=server --config.cmd=--config --config.cmd=/etc/tug/tug.yaml \
  --history.created_by "config: user, env, volume, workdir, ports, entrypoint, cmd"
umoci gc --layout "$out"

if [ -n "$archive" ]; then
  tar --create --file "$archive" --directory "$out" --numeric-owner --owner=0 --group=0 \
    --sort=name .
fi

compressed=$(find "$out/blobs" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
unpacked=$(du -sb --apparent-size "$work/rootfs" | cut -f1)
tug_size=$(stat -c %s "$binary")
echo "image $out:$tag: $((compressed / 1024 / 1024)) MiB compressed (all blobs)," \
  "$(((unpacked + tug_size) / 1024 / 1024)) MiB unpacked" \
  "(Debian $((unpacked / 1024 / 1024)) MiB, tug $((tug_size / 1024 / 1024)) MiB)"
