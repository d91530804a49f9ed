#!/usr/bin/env bash
# Build the command-line tools the deploy tests need, cached in $RYZE_CACHE_DIR/bin:
#   helm — built with `go install` from the Go module proxy (no prebuilt binary is fetched).
# The Kubernetes API server and etcd for the chart's API-server test: scripts/kube-tools.sh.
# Idempotent: a no-op when the right version is already there.
set -euo pipefail
CACHE="${RYZE_CACHE_DIR:-$HOME/.cache/ryze-bridge}"
HELM_VERSION="${HELM_VERSION:-v3.19.0}"
BIN="$CACHE/bin"
mkdir -p "$BIN"

if [[ -x "$BIN/helm" && -f "$BIN/.helm-$HELM_VERSION" ]]; then
    exit 0
fi
command -v go >/dev/null || { echo "tools: go is required to build helm" >&2; exit 1; }
echo "tools: building helm $HELM_VERSION with go install (a minute or two the first time)" >&2
GOBIN="$BIN" GOFLAGS=-mod=mod nice -n "${RYZE_BUILD_NICE:-10}" go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
rm -f "$BIN"/.helm-*
touch "$BIN/.helm-$HELM_VERSION"
"$BIN/helm" version --short >&2
