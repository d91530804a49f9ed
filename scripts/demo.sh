#!/usr/bin/env bash
# Set up (uv, the locked environment) and run the bridge end to end on the embedded default:
# the built-in RyzeAPI simulator as upstream, the file sink (ryze-demo/events.jsonl), and a
# live summary. Runs 30 s by default; pass options to change that (e.g. --duration 0 is not
# needed: without --duration it runs until Ctrl-C when you call `ryze-bridge demo` directly).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/bootstrap.sh
if [[ $# -eq 0 ]]; then
    set -- --duration 30
fi
exec "${UV[@]}" run ryze-bridge demo "$@"
