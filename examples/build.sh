#!/usr/bin/env bash
# Build the consumer examples of other languages (what the README's commands run), with their
# dependencies cached so a second build is fast:
#
#   examples/build.sh java|go|node|kcat|all
#
#   java  mvn package: target/classes + target/lib (kafka-clients from Maven Central, in ~/.m2)
#   go    go build: examples/go/bin/{events,dlq} (franz-go; Go's own module and build caches,
#         shared with the helm build of scripts/tools.sh, which compiles the standard library)
#   node  npm ci: examples/node/node_modules (kafkajs; the npm cache in the cache dir)
#   kcat  Debian's kcat (apt-get install, as root) when it is not installed
#
# npm's cache is in ${RYZE_CACHE_DIR:-$HOME/.cache/ryze-bridge}/npm, as the other scripts' caches.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${RYZE_CACHE_DIR:-${HOME:-/root}/.cache/ryze-bridge}"

say() { echo "examples: $*" >&2; }

build_java() {
    command -v mvn >/dev/null || { say "mvn is missing (Java 17+ and Maven)"; return 1; }
    (cd "$HERE/java" && mvn -q -B package >&2)
}

build_go() {
    command -v go >/dev/null || { say "go is missing"; return 1; }
    (cd "$HERE/go" && GOFLAGS=-mod=readonly go build -o bin/ ./events ./dlq >&2)
}

build_node() {
    command -v npm >/dev/null || { say "node and npm are missing"; return 1; }
    (cd "$HERE/node" && npm ci --no-audit --no-fund --prefer-offline --cache "$CACHE/npm" >&2)
}

build_kcat() {
    command -v kcat >/dev/null && return
    if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
        say "kcat is missing: install your distribution's kcat package"
        return 1
    fi
    say "installing Debian's kcat"
    export DEBIAN_FRONTEND=noninteractive
    mkdir -p "$CACHE"
    { apt-get install -y -qq --no-install-recommends kcat ||
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends kcat; }; } \
        >"$CACHE/apt-kcat.log" 2>&1 ||
        { tail -n 20 "$CACHE/apt-kcat.log" >&2; say "apt-get install kcat failed"; return 1; }
}

case "${1:-all}" in
    java | go | node | kcat) "build_$1" ;;
    all) build_java && build_go && build_node && build_kcat ;;
    *) say "usage: examples/build.sh java|go|node|kcat|all"; exit 2 ;;
esac
