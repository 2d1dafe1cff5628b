#!/usr/bin/env bash
# A local stand-in for python:3.12-slim where no registry can be reached: Debian bookworm
# (debootstrap, minbase) with its Python 3.11, pip and this machine's CA certificates (HTTPS
# from inside a build goes through the same trust store), imported as one layer.
#
#   scripts/local-base-image.sh [TAG]      build it (default iris-base:bookworm); needs root,
#                                           debootstrap and a Docker engine
#   scripts/local-base-image.sh --mirror   print the Debian mirror it would use, and exit
#
# The mirror is the one this machine's apt uses for bookworm: the first `deb` source for that
# suite in the files apt reads (sources.list and sources.list.d/*.list one-line entries,
# sources.list.d/*.sources deb822 stanzas; located with apt-config, so APT_CONFIG is honoured).
# IRIS_BASE_MIRROR overrides it. apt's HTTP proxy, if it has one, is used too.
# Then: make images PYTHON_IMAGE=iris-base:bookworm
set -euo pipefail
suite=bookworm

# The URI of the first enabled `deb` source for $suite in the files apt reads.
apt_mirror() {
  local list parts
  eval "$(apt-config shell list Dir::Etc::sourcelist/f parts Dir::Etc::sourceparts/d)"
  local files=()
  [ -f "$list" ] && files+=("$list")
  for f in "$parts"*; do  # in name order, as apt reads them
    case "$f" in *.list | *.sources) [ -f "$f" ] && files+=("$f") ;; esac
  done
  [ ${#files[@]} -gt 0 ] || return 0
  awk -v suite="$suite" '
    function flush() {
      if (types ~ /(^| )deb( |$)/ && enabled != "no" && (" " suites " ") ~ (" " suite " ") && uris != "") {
        split(uris, u, " "); print u[1]; found = 1; exit
      }
      types = uris = suites = ""; enabled = "yes"
    }
    FNR == 1 { flush() }
    /^[ \t]*#/ { next }
    FILENAME ~ /\.sources$/ {
      if ($0 ~ /^[ \t]*$/) { flush(); next }
      field = tolower($1); sub(/:$/, "", field); value = $0; sub(/^[^:]*:[ \t]*/, "", value)
      if (field == "types") types = value
      else if (field == "uris") uris = value
      else if (field == "suites") suites = value
      else if (field == "enabled") enabled = tolower(value)
      next
    }
    $1 == "deb" {
      i = 2
      if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
      if ($(i + 1) == suite) { print $i; found = 1; exit }
    }
    END { if (!found) flush() }
  ' "${files[@]}" | sed 's:/*$::'
}

mirror="${IRIS_BASE_MIRROR:-$(apt_mirror)}"
if [ -z "$mirror" ]; then
  echo "local-base-image: no Debian $suite source in this machine's apt sources;" \
    "set IRIS_BASE_MIRROR (e.g. your Debian mirror's URL)" >&2
  exit 1
fi
if [ "${1:-}" = "--mirror" ]; then
  echo "$mirror"
  exit 0
fi

tag="${1:-iris-base:bookworm}"
proxy=""
eval "$(apt-config shell proxy Acquire::http::Proxy)"
if [ -n "$proxy" ] && [ -z "${http_proxy:-}" ]; then
  export http_proxy="$proxy"
fi
rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs"' EXIT
echo "local-base-image: Debian $suite from $mirror" >&2
debootstrap --variant=minbase --include=python3,python3-pip,ca-certificates \
  "$suite" "$rootfs" "$mirror" >&2
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
  chroot "$rootfs" update-ca-certificates >&2
fi
# What no base image carries: the packages debootstrap downloaded, apt's package lists (a
# build runs apt-get update first, as on python:3.12-slim), documentation.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
  "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
  "$rootfs"/usr/share/info/*
tar -C "$rootfs" -c . | "${DOCKER:-docker}" import \
  --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$tag" >/dev/null
echo "built $tag"
