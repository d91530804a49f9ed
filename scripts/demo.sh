#!/usr/bin/env bash
# Set up (uv, the locked environment) and run the bridge end to end on the embedded default:
# the built-in RyzeAPI simulator as upstream, the file sink (ryze-demo/events.jsonl), and a
# live summary. It first prints where to look: the admin address (metrics, health, status),
# the config it runs with (ryze-demo/ryze-demo.yaml), the output file and commands to try; then
# the first event record as it lands. Without options it runs 30 s; options replace that
# default (`bash scripts/demo.sh --rate 50` runs until Ctrl-C; add --duration S to bound it).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BOOTSTRAP_NO_DEV=1 source scripts/bootstrap.sh  # the bridge's dependencies only
if [[ $# -eq 0 ]]; then
    set -- --duration 30
fi
exec "${UV[@]}" run --locked --no-dev ryze-bridge demo "$@"
