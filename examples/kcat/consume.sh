#!/usr/bin/env bash
# Consume the ryze-bridge event and gap-marker topics with kcat in a consumer group, each frame
# handled once (Debian/Ubuntu: apt-get install kcat):
#
#   examples/kcat/consume.sh [BOOTSTRAP] [GROUP] [PATTERN]
#
# kcat subscribes to the topics matching PATTERN (a regex: kcat takes a topic starting with ^
# as one; new instances' topics are picked up within 5 s). The default, ^ryze\.[^.]+\..+ (a
# prefix, an instance and an event), leaves the DLQ (ryze.dlq) out. kcat prints each record's
# headers; awk drops re-deliveries by ryze-id within a window of the last WINDOW ids (10,000)
# and prints one JSON line {"id":…,"event":…,"instance":…} per record handled; a gap marker
# (bridge.gap) is also reported on standard error. kcat commits the offsets of what it has
# written to the pipe every 5 s, so what was in the pipe when both die is read again by the
# next run (at least once, as the bridge delivers), never skipped. The cooperative assignor adds a
# new topic's partitions without revoking the others first (no stop-the-world rebalance).
set -euo pipefail
BOOTSTRAP="${1:-127.0.0.1:9092}"
GROUP="${2:-ryze-example}"
PATTERN="${3:-^ryze\.[^.]+\..+}"
WINDOW="${WINDOW:-10000}"

command -v kcat >/dev/null || { echo "consume.sh: kcat is missing (apt-get install kcat)" >&2; exit 1; }

kcat -C -q -u -b "$BOOTSTRAP" -G "$GROUP" \
    -X auto.offset.reset=earliest -X topic.metadata.refresh.interval.ms=5000 \
    -X partition.assignment.strategy=cooperative-sticky \
    -f '%h\n' "$PATTERN" |
    awk -v window="$WINDOW" '
    function quote(text) {
        gsub(/\\/, "\\\\", text)
        gsub(/"/, "\\\"", text)
        return "\"" text "\""
    }
    {
        delete h
        n = split($0, pairs, ",")  # kcat prints headers as name=value,name=value
        for (i = 1; i <= n; i++) {
            eq = index(pairs[i], "=")
            if (eq > 0) h[substr(pairs[i], 1, eq - 1)] = substr(pairs[i], eq + 1)
        }
        if ("ryze-dlq-reason" in h) {
            print "skipped a dead letter (" h["ryze-dlq-reason"] ")" > "/dev/stderr"
            next
        }
        id = h["ryze-id"]
        if (id in seen) next
        slot = count % window  # a ring of the last window ids: the oldest leaves the set
        if (count >= window) delete seen[ring[slot]]
        ring[slot] = id
        seen[id] = 1
        count++
        if (h["ryze-event"] == "bridge.gap") print "gap in " h["ryze-instance"] > "/dev/stderr"
        print "{\"id\":" quote(id) ",\"event\":" quote(h["ryze-event"]) ",\"instance\":" quote(h["ryze-instance"]) "}"
        fflush()
    }'
