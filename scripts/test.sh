#!/usr/bin/env bash
# Set everything up from nothing and run the whole suite: lint, types, unit tests, and
# integration tests against a real Kafka, a real Redis and the simulator.
# Extra arguments go to pytest (e.g. scripts/test.sh -k kafka -x).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
t0=$(date +%s)

# etcd and kube-apiserver for the chart's API-server tests build from source (minutes the first
# time, cached by version after) in the background, niced, overlapping the whole setup and main suite;
# those tests run last, in their own pytest run, once the build has finished (and failed CI if it
# failed). The build is its own process group (setsid), ended on every exit of this script, and by
# itself when this script is gone, SIGKILL included (RYZE_KUBE_TOOLS_PARENT). SKIP_KUBE_API=1 leaves
# build and tests out (e.g. when running a few tests by hand).
KUBE_API_TESTS=tests/deploy/test_kube_api.py
KUBE_TOOLS_PID=""
KUBE_TOOLS_LOG=""
if [[ -z "${SKIP_KUBE_API:-}" ]]; then
    KUBE_TOOLS_LOG="$(mktemp "${TMPDIR:-/tmp}/ryze-kube-tools.XXXXXX")"
    RYZE_KUBE_TOOLS_PARENT=$$ setsid bash scripts/kube-tools.sh >"$KUBE_TOOLS_LOG" 2>&1 &
    KUBE_TOOLS_PID=$!
fi
stop_kube_tools() {
    [[ -z "$KUBE_TOOLS_PID" ]] || kill -- "-$KUBE_TOOLS_PID" 2>/dev/null || true
    KUBE_TOOLS_PID=""
    if [[ -n "$KUBE_TOOLS_LOG" ]]; then
        tail -n 4 "$KUBE_TOOLS_LOG" >&2 || true
        rm -f "$KUBE_TOOLS_LOG"
    fi
}
# wait_kube_tools: wait for the background build; fail with its log when it failed.
wait_kube_tools() {
    local code=0 waited=$SECONDS
    echo "test.sh: waiting for the kube-apiserver/etcd build (scripts/kube-tools.sh)" >&2
    wait "$KUBE_TOOLS_PID" || code=$?
    KUBE_TOOLS_PID=""
    echo "test.sh: waited $((SECONDS - waited)) s for the build" >&2
    if [[ $code -ne 0 ]]; then
        tail -n 40 "$KUBE_TOOLS_LOG" >&2 || true
        echo "test.sh: building kube-apiserver and etcd FAILED (scripts/kube-tools.sh exit $code," \
            "its log above); the chart's API-server tests cannot run." >&2
        return 1
    fi
}
cleanup() {
    if [[ -n "${SERVICES_UP:-}" ]]; then
        bash scripts/services.sh down || echo "test.sh: services.sh down failed" >&2
    fi
    stop_kube_tools
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

source scripts/bootstrap.sh
bash scripts/tools.sh
SERVICES_UP=1
bash scripts/services.sh up
t1=$(date +%s)
echo "setup: $((t1 - t0)) s" >&2

"${UV[@]}" run ruff check .
"${UV[@]}" run ruff format --check .
"${UV[@]}" run mypy
export BRIDGE_REQUIRE_SERVICES=1
# The token grep (tests/tokengrep.py) at the end searches every output of this run for every
# token the tests used: the simulators write each token they are given to the ledger, pytest
# keeps its temporary files (spools, sinks, DLQs, the bridges' stdout/stderr) under GREP_DIR
# and every test's captured output and logs in JUnit XML, what the tests' teardowns delete
# from Kafka and Redis is kept in GREP_DIR/deleted first (tests/brokerdump.py), and what the
# brokers still hold (every topic; every Redis key of every type and database) is read back
# into GREP_DIR before the services stop.
GREP_DIR="$(mktemp -d "${TMPDIR:-/tmp}/ryze-token-grep.XXXXXX")"
export RYZE_TOKEN_LEDGER="$GREP_DIR/tokens.ledger"
keep_outputs() {  # pytest arguments that keep a stage's outputs for the grep
    echo "--basetemp=$GREP_DIR/$1" "--junitxml=$GREP_DIR/junit-$1.xml" -o junit_logging=all \
        -o junit_family=xunit1  # xunit1: record_property (tests/consumers) without a warning
}
# The API-server tests are not collected here: they run below, after the build.
# shellcheck disable=SC2046  # keep_outputs' words are meant to split
"${UV[@]}" run pytest --ignore="$KUBE_API_TESTS" $(keep_outputs main) "$@"
"${UV[@]}" run python -m tests.tokengrep dump-brokers "$GREP_DIR/brokers"
t2=$(date +%s)
echo "setup: $((t1 - t0)) s, checks and tests: $((t2 - t1)) s" >&2

if [[ -z "${SKIP_KUBE_API:-}" ]]; then
    wait_kube_tools
    # shellcheck disable=SC2046
    "${UV[@]}" run pytest "$KUBE_API_TESTS" $(keep_outputs kube)
    t2k=$(date +%s)
    echo "chart against a real API server: $((t2k - t2)) s (the build's wait included)" >&2
    t2=$t2k
fi

# The short chaos soak (docs/soak.md): a fixed seed, 2 minutes of faults, its own three-node
# Kafka cluster and Redis (the test services are stopped first to leave it the CPU).
# SKIP_SOAK=1 leaves it out (e.g. when running a few tests by hand).
if [[ -z "${SKIP_SOAK:-}" ]]; then
    bash scripts/services.sh down
    SERVICES_UP=""
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

# Zero hits or CI fails: each hit is named by file and byte offset, never by the token.
if ! "${UV[@]}" run python -m tests.tokengrep scan --ledger "$RYZE_TOKEN_LEDGER" --sources tests \
    "$GREP_DIR" ${SOAK_OUT:+"$SOAK_OUT"}; then
    echo "test.sh: a token the tests used appears in an output of the run (the HIT lines above;" \
        "outputs kept in $GREP_DIR)." >&2
    exit 1
fi
rm -rf "$GREP_DIR"
