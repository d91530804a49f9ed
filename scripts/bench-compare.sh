#!/usr/bin/env bash
# Two builds in one benchmark run (also `make bench-compare BASE=<commit>`): the base commit is
# checked out in a temporary git worktree with its own locked environment, then
# `python -m bench.compare` measures it and this checkout back to back, round after round,
# against the same simulator and the same test services. Prints medians and ratios and
# writes bench/results/<date>-compare.json. Extra arguments go to bench.compare.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE="${1:?usage: scripts/bench-compare.sh <commit> [--rounds N] [--seconds S] [--rate R]}"
shift
REV="$(git rev-parse --verify --quiet "$BASE^{commit}")" || { echo "no such commit: $BASE" >&2; exit 2; }

source scripts/bootstrap.sh
ryze_sync --group bench >&2

WORK="$(mktemp -d -t ryze-bench-base.XXXXXX)"
started_here=0
cleanup() {
    if [[ $started_here == 1 ]]; then bash scripts/services.sh down >&2 || true; fi
    git worktree remove --force "$WORK/src" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
git worktree add --detach --quiet "$WORK/src" "$REV"
(cd "$WORK/src" && UV_PROJECT_ENVIRONMENT="$WORK/venv" ryze_sync --no-dev) >&2  # as HEAD: bytecode compiled

status="$(bash scripts/services.sh status 2>/dev/null || true)"
if ! grep -q '^kafka: running' <<<"$status" || ! grep -q '^redis: running' <<<"$status"; then
    bash scripts/services.sh up >&2
    started_here=1
fi
"${UV[@]}" run --locked --group bench python -m bench.compare \
    --base-python "$WORK/venv/bin/python" --base-dir "$WORK/src" \
    --base-label "$(git rev-parse --short "$REV")" "$@"
