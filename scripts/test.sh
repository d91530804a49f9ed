#!/usr/bin/env bash
# Set everything up from nothing and run the whole suite: lint, types, unit tests, and
# integration tests against a real Kafka, a real Redis and the simulator.
# Extra arguments go to pytest (e.g. scripts/test.sh -k kafka -x).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
t0=$(date +%s)

source scripts/bootstrap.sh
bash scripts/tools.sh
bash scripts/services.sh up
trap 'bash scripts/services.sh down' EXIT
t1=$(date +%s)
echo "setup: $((t1 - t0)) s" >&2

"${UV[@]}" run ruff check .
"${UV[@]}" run ruff format --check .
"${UV[@]}" run mypy
export BRIDGE_REQUIRE_SERVICES=1
"${UV[@]}" run pytest "$@"
t2=$(date +%s)
echo "setup: $((t1 - t0)) s, checks and tests: $((t2 - t1)) s" >&2
