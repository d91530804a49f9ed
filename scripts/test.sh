#!/usr/bin/env bash
# Set everything up from nothing and run the whole suite: lint, types, unit tests, and
# integration tests against a real Kafka, a real Redis and the simulator.
# Extra arguments go to pytest (e.g. scripts/test.sh -k kafka -x).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
t0=$(date +%s)

# etcd and kube-apiserver for the chart's API-server test build from source (minutes the first
# time, cached by version after) in the background, niced, while the rest is set up and tested;
# the test waits for them (scripts/kube-tools.sh takes a lock).
KUBE_TOOLS_LOG="$(mktemp "${TMPDIR:-/tmp}/ryze-kube-tools.XXXXXX")"
setsid bash scripts/kube-tools.sh >"$KUBE_TOOLS_LOG" 2>&1 &
KUBE_TOOLS_PID=$!
stop_kube_tools() {
    kill -- "-$KUBE_TOOLS_PID" 2>/dev/null || true
    tail -n 4 "$KUBE_TOOLS_LOG" >&2
    rm -f "$KUBE_TOOLS_LOG"
}
trap stop_kube_tools EXIT

source scripts/bootstrap.sh
bash scripts/tools.sh
bash scripts/services.sh up
trap 'bash scripts/services.sh down; stop_kube_tools' EXIT
t1=$(date +%s)
echo "setup: $((t1 - t0)) s" >&2

"${UV[@]}" run ruff check .
"${UV[@]}" run ruff format --check .
"${UV[@]}" run mypy
export BRIDGE_REQUIRE_SERVICES=1
"${UV[@]}" run pytest "$@"
t2=$(date +%s)
echo "setup: $((t1 - t0)) s, checks and tests: $((t2 - t1)) s" >&2

# The short chaos soak (docs/soak.md): a fixed seed, 2 minutes of faults, its own three-node
# Kafka cluster and Redis (the test services are stopped first to leave it the CPU).
# SKIP_SOAK=1 leaves it out (e.g. when running a few tests by hand).
if [[ -z "${SKIP_SOAK:-}" ]]; then
    bash scripts/services.sh down
    SOAK_OUT="${SOAK_OUT:-${TMPDIR:-/tmp}/ryze-soak/ci-$(date -u +%Y%m%dT%H%M%SZ)}"
    if ! SEED="${CI_SOAK_SEED:-2703}" DURATION="${CI_SOAK_DURATION:-120}" SOAK_OUT="$SOAK_OUT" \
        bash scripts/soak.sh; then
        echo "test.sh: the short chaos soak FAILED: an invariant of the delivery contract does" \
            "not hold (the FAIL lines above; report and logs in $SOAK_OUT)." \
            "Replay: make soak SEED=${CI_SOAK_SEED:-2703} DURATION=${CI_SOAK_DURATION:-120}" >&2
        exit 1
    fi
    t3=$(date +%s)
    echo "short soak: $((t3 - t2)) s" >&2
fi
