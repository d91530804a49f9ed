#!/usr/bin/env bash
# Make the project runnable on a fresh machine: uv (from PyPI) and the locked environment.
# Sourced by the other scripts (it sets UV, the command that runs uv); safe to run again
# (fast when everything is there).
#
# Works with whatever `python3` comes first on the PATH, including a distribution's own
# interpreter that refuses system-wide installs (PEP 668, Debian 12, Ubuntu 24.04): uv is
# installed into a virtual environment of its own under the cache directory, never into the
# system's Python. As root, Debian's python3-venv is installed when the venv module is missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

UV_VERSION="${UV_VERSION:-0.13.9}"
CACHE="${RYZE_CACHE_DIR:-${HOME:-/root}/.cache/ryze-bridge}"
UV_HOME="$CACHE/uv-$UV_VERSION"
export UV_PYTHON_DOWNLOADS=never  # the project's Python is the machine's python3

bootstrap_say() { echo "bootstrap: $*" >&2; }

ensure_venv_module() {
    python3 -c 'import ensurepip, venv' >/dev/null 2>&1 && return
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
        local minor
        minor="$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
        bootstrap_say "installing python3-venv (Debian's venv module for python$minor)"
        export DEBIAN_FRONTEND=noninteractive
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
            "python$minor-venv" || apt-get install -y -qq --no-install-recommends python3-venv; } \
            >&2
        return
    fi
    bootstrap_say "error: python3 has no venv module; install your distribution's python3-venv"
    return 1
}

install_uv() {
    ensure_venv_module
    bootstrap_say "installing uv $UV_VERSION from PyPI into $UV_HOME"
    rm -rf "$UV_HOME"
    python3 -m venv "$UV_HOME"
    "$UV_HOME/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION" >&2
}

if [[ -x "$UV_HOME/bin/uv" ]] && "$UV_HOME/bin/uv" --version >/dev/null 2>&1; then
    UV=("$UV_HOME/bin/uv")
elif [[ "$(python3 -m uv --version 2>/dev/null)" == "uv $UV_VERSION"* ]]; then
    UV=(python3 -m uv)  # already installed beside this python3, at the pinned version
else
    install_uv
    UV=("$UV_HOME/bin/uv")
fi
# BOOTSTRAP_NO_DEV=1 (the demo): what the bridge needs, without the development tools (about
# two thirds of the environment: mypy, ruff, kubernetes-validate…); --inexact keeps them when
# they are already there.
sync_args=()
if [[ -n "${BOOTSTRAP_NO_DEV:-}" ]]; then
    sync_args=(--no-dev --inexact)
fi
# Bytecode compiled at install, as the image does (UV_COMPILE_BYTECODE): where .pyc files are
# never written (PYTHONDONTWRITEBYTECODE, a read-only tree) every process would compile its
# imports from source at each start: slower, and what the compiler leaves behind stays in the
# heap (the shipper's RSS at 5,000 instances 77 → 69 MB). Done once per lock file, Python and
# sync options (a few seconds), noted in the environment's .ryze-bytecode.
ryze_sync() {
    local venv="${UV_PROJECT_ENVIRONMENT:-$ROOT/.venv}" lock version key
    local compile=()
    lock="$(python3 -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest()[:16])' uv.lock)"
    version="$(python3 -c 'import sys; print(sys.version.split()[0])')"
    key="$lock $version $*"
    grep -qxF -- "$key" "$venv/.ryze-bytecode" 2>/dev/null || compile=(--compile-bytecode)
    "${UV[@]}" sync --locked --quiet --python "$(command -v python3)" "$@" "${compile[@]}"
    if [[ ${#compile[@]} -gt 0 ]]; then
        echo "$key" >>"$venv/.ryze-bytecode" 2>/dev/null || true
    fi
}
ryze_sync "${sync_args[@]}"
