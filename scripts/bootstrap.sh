#!/usr/bin/env bash
# Make the project runnable on a fresh machine: uv (from PyPI) and the locked environment.
# Sourced by the other scripts; safe to run again (fast when everything is there).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

UV_VERSION="${UV_VERSION:-0.13.9}"
if ! python3 -m uv --version >/dev/null 2>&1; then
    echo "bootstrap: installing uv ${UV_VERSION} from PyPI" >&2
    python3 -m pip install --quiet --disable-pip-version-check "uv==${UV_VERSION}" 2>&1 \
        | grep -v "Running pip as the 'root' user" >&2 || true
fi
UV=(python3 -m uv)
"${UV[@]}" sync --locked --quiet
