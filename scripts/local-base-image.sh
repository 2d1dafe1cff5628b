#!/usr/bin/env bash
# Build a local stand-in for python:3.12-slim where Docker Hub cannot be reached: Debian
# bookworm (debootstrap) with Python 3.11, pip and this machine's CA certificates, imported as
# iris-base:bookworm. Then: docker build --build-arg PYTHON_IMAGE=iris-base:bookworm ...
# Needs root, debootstrap and a running Docker engine (apt-get install debootstrap docker.io).
set -euo pipefail
tag="${1:-iris-base:bookworm}"
rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
  bookworm "$rootfs" http://deb.debian.org/debian
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
  chroot "$rootfs" update-ca-certificates
fi
[ -f /etc/pip.conf ] && cp /etc/pip.conf "$rootfs/etc/pip.conf"
tar -C "$rootfs" -c . | docker import - "$tag"
echo "built $tag"
