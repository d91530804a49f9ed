#!/usr/bin/env bash
# Build the Kubernetes control-plane binaries the chart's API-server test needs, from their Go modules
# through the Go module proxy (no prebuilt binary is fetched), cached in $RYZE_CACHE_DIR/bin keyed by version:
#   kube-apiserver  from k8s.io/kubernetes/cmd/kube-apiserver, its ./staging/... replaces pointed at the
#                   published k8s.io/* modules of the same minor version, the version stamped with -ldflags
#                   so that a chart's kubeVersion check sees a real version;
#   etcd            from go.etcd.io/etcd/server/v3 (its ../ replaces resolve to the published modules
#                   because a dependency's replace directives do not apply).
# Usage: scripts/kube-tools.sh [kube-apiserver|etcd]...   (both when no argument)
# Idempotent: a no-op for a binary whose version is already there. Builds run under `nice`: a machine's
# cores are shared. Set GOCACHE/GOMODCACHE to measure a fresh build (see helm/ryze-bridge/README.md).
# RYZE_KUBE_TOOLS_PARENT=PID (scripts/test.sh sets it): when that process is gone — even killed by
# SIGKILL, so that no trap of it ran — this script ends its own process group (start it with setsid),
# the go processes included.
set -euo pipefail
CACHE="${RYZE_CACHE_DIR:-$HOME/.cache/ryze-bridge}"
KUBE_VERSION="${KUBE_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.7.3}"
BIN="$CACHE/bin"
NICE="${RYZE_BUILD_NICE:-10}"
mkdir -p "$BIN"

# watch_parent PID: in the background, end this script's process group once PID has exited.
watch_parent() {
    local parent="$1" group
    group="$(ps -o pgid= -p $$ | tr -d ' ')"
    (
        trap - EXIT
        while kill -0 "$parent" 2>/dev/null; do sleep 1; done
        echo "kube-tools: process $parent is gone; stopping the build" >&2
        kill -TERM -- "-$group" 2>/dev/null || true
    ) 9>&- &
    WATCHER=$!
    trap 'kill "$WATCHER" 2>/dev/null || true' EXIT
}
[[ -z "${RYZE_KUBE_TOOLS_PARENT:-}" ]] || watch_parent "$RYZE_KUBE_TOOLS_PARENT"
# One build at a time: a second caller (the API-server test while scripts/test.sh builds in the
# background) waits for the first and then finds the binaries cached. Only this shell holds the lock:
# go and its children run with fd 9 closed, so a killed script never leaves a build holding it.
exec 9>"$BIN/.kube-tools.lock"
flock 9
command -v go >/dev/null || { echo "kube-tools: go is required to build the API server and etcd" >&2; exit 1; }

# staging_modules VERSION: the k8s.io/* modules that k8s.io/kubernetes@VERSION takes from
# ./staging/src (its go.mod's replace directives), one a line; they are published as
# v0.<minor>.<patch>. Reads only the go.mod, not the module.
staging_modules() {
    local dir mod
    dir="$(mktemp -d)"
    mod="$({ cd "$dir" && go mod init probe >/dev/null 2>&1 &&
        go list -m -f '{{.GoMod}}' "k8s.io/kubernetes@$1"; } 9>&-)" || { rm -rf "$dir"; return 1; }
    rm -rf "$dir"
    sed -n 's|^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/.*|\1|p' "$mod"
}

# build_in_module NAME MODULE_REQUIRE EXTRA_GOMOD PACKAGE LDFLAGS: go build PACKAGE inside a throw-away
# module that requires MODULE_REQUIRE, into $BIN/NAME.
build_in_module() {
    local name="$1" require="$2" extra="$3" pkg="$4" ldflags="$5" dir start
    dir="$(mktemp -d)"
    printf 'module ryze-bridge-kube-tools\n\ngo 1.26.0\n\nrequire %s\n%s\n' "$require" "$extra" >"$dir/go.mod"
    start=$(date +%s)
    if ! (
        cd "$dir"
        GOFLAGS=-mod=mod nice -n "$NICE" go get "$pkg@${require##* }" >&2
        CGO_ENABLED=0 GOFLAGS=-mod=mod nice -n "$NICE" go build -trimpath -ldflags "$ldflags" \
            -o "$BIN/$name.tmp" "$pkg" >&2
    ) 9>&-; then
        rm -rf "$dir" "$BIN/$name.tmp"
        return 1
    fi
    rm -rf "$dir"
    mv "$BIN/$name.tmp" "$BIN/$name"
    echo "kube-tools: built $name in $(($(date +%s) - start)) s" >&2
}

build_apiserver() {
    local minor patch stage replaces="replace (" m modules
    [[ -x "$BIN/kube-apiserver" && -f "$BIN/.kube-apiserver-$KUBE_VERSION" ]] && return 0
    IFS=. read -r _ minor patch <<<"$KUBE_VERSION"
    stage="v0.$minor.$patch"
    modules="$(staging_modules "$KUBE_VERSION")"
    [[ -n "$modules" ]] || { echo "kube-tools: no staging modules in k8s.io/kubernetes@$KUBE_VERSION" >&2; return 1; }
    for m in $modules; do replaces+=$'\n'"    $m => $m $stage"; done
    replaces+=$'\n)'
    local v=k8s.io/component-base/version cv=k8s.io/client-go/pkg/version ld="-s -w" x
    for x in "$v" "$cv"; do
        ld+=" -X $x.gitVersion=$KUBE_VERSION -X $x.gitMajor=1 -X $x.gitMinor=$minor"
        ld+=" -X $x.gitTreeState=clean -X $x.buildDate=1970-01-01T00:00:00Z"
    done
    echo "kube-tools: building kube-apiserver $KUBE_VERSION (staging modules $stage); minutes the first time" >&2
    rm -f "$BIN"/.kube-apiserver-*
    build_in_module kube-apiserver "k8s.io/kubernetes $KUBE_VERSION" "$replaces" \
        k8s.io/kubernetes/cmd/kube-apiserver "$ld"
    touch "$BIN/.kube-apiserver-$KUBE_VERSION"
    "$BIN/kube-apiserver" --version >&2 9>&-
}

build_etcd() {
    [[ -x "$BIN/etcd" && -f "$BIN/.etcd-$ETCD_VERSION" ]] && return 0
    echo "kube-tools: building etcd $ETCD_VERSION" >&2
    rm -f "$BIN"/.etcd-*
    build_in_module etcd "go.etcd.io/etcd/server/v3 $ETCD_VERSION" "" go.etcd.io/etcd/server/v3 "-s -w"
    touch "$BIN/.etcd-$ETCD_VERSION"
    "$BIN/etcd" --version >&2 9>&-
}

targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(etcd kube-apiserver)
for t in "${targets[@]}"; do
    case "$t" in
        kube-apiserver) build_apiserver ;;
        etcd) build_etcd ;;
        *) echo "kube-tools: unknown tool $t" >&2; exit 2 ;;
    esac
done
