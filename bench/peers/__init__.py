"""Peers the benchmark measures the bridge against (the Go one is built by scripts/bench.sh)."""
