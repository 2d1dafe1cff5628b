#!/usr/bin/env bash
# Run uv, installing a pinned uv first when none is on PATH (into .tools/, from PyPI: no
# download script, so it works where only the package registries are reachable).
set -euo pipefail
UV_VERSION="${UV_VERSION:-0.13.9}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$here/.tools"

if command -v uv >/dev/null 2>&1; then
  exec uv "$@"
fi
if [ ! -x "$tools/uv/bin/uv" ]; then
  python="$(command -v python3 || command -v python || true)"
  if [ -z "$python" ]; then
    echo "scripts/uv.sh: no python3 on PATH; install Python >= 3.11 first" >&2
    exit 1
  fi
  echo "scripts/uv.sh: installing uv $UV_VERSION into $tools/uv" >&2
  "$python" -m pip install --quiet --disable-pip-version-check --target "$tools/uv" "uv==$UV_VERSION" >&2
fi
PYTHONPATH="$tools/uv${PYTHONPATH:+:$PYTHONPATH}" exec "$tools/uv/bin/uv" "$@"
