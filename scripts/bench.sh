#!/usr/bin/env bash
# The benchmark, one command (also `make bench`): the locked environment with the bench
# group (matplotlib, py-spy, pyinstrument), the test services (Kafka, Redis), the Benthos-engine
# peer built with `go build` from the Go module proxy, then `python -m bench.run "$@"`.
# Writes bench/results/<date>.json and PNG plots; prints the table and the goals.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${RYZE_CACHE_DIR:-$HOME/.cache/ryze-bridge}"
BIN="$CACHE/bin"
mkdir -p "$BIN"

source scripts/bootstrap.sh
ryze_sync --group bench >&2

PEER="$BIN/ryze-bench-benthos"
# the peer's sources' digest (bench/throughput.py's peer_sum computes the same)
peer_sum() { sha256sum bench/peers/benthos/go.mod bench/peers/benthos/go.sum bench/peers/benthos/main.go | sha256sum | cut -c1-16; }
if [[ ! -x "$PEER" || ! -f "$BIN/.benthos-$(peer_sum)" ]]; then
    echo "bench: building the Benthos-engine peer with go build (a minute the first time)" >&2
    (cd bench/peers/benthos && GOFLAGS=-mod=mod go build -o "$PEER" .) >&2
    rm -f "$BIN"/.benthos-*
    touch "$BIN/.benthos-$(peer_sum)"  # after the build, which may have completed go.sum
fi

started_here=0
status="$(bash scripts/services.sh status 2>/dev/null || true)"
if ! grep -q '^kafka: running' <<<"$status" || ! grep -q '^redis: running' <<<"$status"; then
    bash scripts/services.sh up >&2
    started_here=1
fi
stop() { if [[ $started_here == 1 ]]; then bash scripts/services.sh down >&2; fi; }
trap stop EXIT

PATH="$BIN:$PATH" "${UV[@]}" run --locked --group bench python -m bench.run "$@"
