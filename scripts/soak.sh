#!/usr/bin/env bash
# The chaos soak: a seeded random fault schedule against a three-node Kafka cluster, Redis,
# the simulator and two real bridges; the invariants of the delivery contract checked at the
# end (docs/soak.md). Starts and stops every process it needs, and unmounts its tmpfs mounts,
# on success, on failure and on Ctrl-C. Needs root (tmpfs mounts), Java 17 and Maven.
#
#   SEED=N         replay a schedule (random when unset; always printed)
#   DURATION=S     seconds of faults, or minutes with an m suffix (default 20m)
#   SOAK_OUT=DIR   where report.json, table.txt and the logs go (default: a new folder under
#                  ${TMPDIR:-/tmp}/ryze-soak/)
#   SOAK_INSTANCES / SOAK_RATE   instances per bridge (6) and frames/s per instance (20)
#
# Exit: 0 every invariant held, 1 one failed (the table says which), 2 the soak could not run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { echo "soak.sh: $*" >&2; }
[[ "$(id -u)" == 0 ]] || { say "needs root (it mounts small tmpfs filesystems for the spools)"; exit 2; }

source scripts/bootstrap.sh
WORK="$(mktemp -d "${TMPDIR:-/tmp}/ryze-soak-work.XXXXXX")"
# Kafka's jars and redis-server, through the same fetch as the test services
KAFKA_LIBS="$(RYZE_SERVICES_DIR="$WORK/services" bash scripts/services.sh fetch | tail -n1)"

DURATION="${DURATION:-20m}"
if [[ "$DURATION" == *m ]]; then DURATION=$(( ${DURATION%m} * 60 )); fi
OUT="${SOAK_OUT:-${TMPDIR:-/tmp}/ryze-soak/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"

DRIVER=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n "$DRIVER" ]] && kill -0 "$DRIVER" 2>/dev/null; then
        kill -TERM "$DRIVER" 2>/dev/null || true      # the driver stops what it started
        for _ in $(seq 1 600); do kill -0 "$DRIVER" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$DRIVER" 2>/dev/null || true
    fi
    # whatever the driver could not stop (it was killed itself): by pid, as it wrote them
    if [[ -f "$WORK/pids" ]]; then
        while read -r pid; do
            [[ -n "$pid" ]] && kill -KILL "$pid" 2>/dev/null || true
        done <"$WORK/pids"
    fi
    if [[ -f "$WORK/mounts" ]]; then
        while read -r mount; do
            mountpoint -q "$mount" && umount -l "$mount" || true
        done <"$WORK/mounts"
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$ROOT/.venv/bin/python" -m soak --work "$WORK" --out "$OUT" --kafka-libs "$KAFKA_LIBS" \
    --duration "$DURATION" ${SEED:+--seed "$SEED"} \
    ${SOAK_INSTANCES:+--instances "$SOAK_INSTANCES"} ${SOAK_RATE:+--rate "$SOAK_RATE"} &
DRIVER=$!
set +e
wait "$DRIVER"
rc=$?
set -e
DRIVER=""
exit "$rc"
