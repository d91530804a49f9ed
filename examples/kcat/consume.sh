#!/usr/bin/env bash
# Consume the ryze-bridge event and gap-marker topics with kcat in a consumer group, each frame
# handled once (Debian/Ubuntu: apt-get install kcat):
#
#   examples/kcat/consume.sh [BOOTSTRAP] [GROUP] [PATTERN]
#
# kcat subscribes to the topics matching PATTERN (a regex: kcat takes a topic starting with ^
# as one; new instances' topics are picked up within 5 s and read from their first record). The
# default, ^ryze\.[^.]+\..+ (a dotted event after the prefix, with or without an instance
# before it: ryze.{event} and ryze.{instance}.{event} alike), leaves the DLQ (ryze.dlq) out;
# read the DLQ with examples/go/dlq. kcat prints each record's headers; awk drops re-deliveries
# by ryze-id within a window of the last WINDOW ids (10,000) and prints one JSON line
# {"id":…,"event":…,"instance":…} per record handled; a gap marker (bridge.gap) is also reported
# on standard error, and so is a record without a ryze-id (not written by the bridge: skipped).
# RAW=FILE also copies kcat's own output to FILE (to see what awk was given).
#
# awk reads line by line: mawk (Debian's and Ubuntu's awk) otherwise waits for 4 KB of input
# before handling any, so the last records read stayed unprinted until more came, although
# kcat had committed them (the example missed the last 2-25 records of a quiet stream).
#
# What is committed, and so what a restart skips: kcat commits, every 5 s and when it stops,
# the offsets of the records it has *written to the pipe* (librdkafka stores an offset when
# kcat polls the record; kcat cannot store it only after awk handled it). So:
#   - Ctrl-C, SIGTERM or SIGINT (to this script or to its whole process group): kcat stops,
#     commits and closes the pipe; awk ignores the signal and reads the pipe to its end, so
#     nothing is skipped and a restart reads on from the committed offsets (at least once).
#   - a crash or SIGKILL of awk (or of both) can skip what was in the pipe, up to 64 KB (some
#     400 records), if a commit came after kcat wrote it. kcat cannot give at-least-once
#     across such a crash; where that matters, use the Java, Go, Node or Python example, which
#     commit only what they handled.
# Never pass -o in group mode: kcat 1.7 applies it to every (incremental) assignment, so it
# overrides the committed offsets. The cooperative assignor adds a new topic's partitions
# without revoking the others first (no stop-the-world rebalance).
set -euo pipefail
BOOTSTRAP="${1:-127.0.0.1:9092}"
GROUP="${2:-ryze-example}"
PATTERN="${3:-^ryze\.[^.]+\..+}"
WINDOW="${WINDOW:-10000}"
RAW="${RAW:-}"

command -v kcat >/dev/null || { echo "consume.sh: kcat is missing (apt-get install kcat)" >&2; exit 1; }

# Line by line: mawk needs -W interactive for it; gawk and busybox awk read so already.
AWK=(awk)
case "$(awk -W version 2>&1 || true)" in
    mawk*) AWK=(awk -W interactive) ;;
esac

# The awk program: one JSON line per distinct ryze-id.
PROGRAM='
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
        if (id == "") {
            print "skipped a record without ryze-id: " substr($0, 1, 200) > "/dev/stderr"
            next
        }
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

# Reads kcat's output to its end (INT and TERM ignored: the end of the pipe ends it, after
# kcat's last commit), copying it to RAW first when asked.
handle() {
    trap '' INT TERM
    if [[ -n "$RAW" ]]; then
        tee -a "$RAW" | "${AWK[@]}" -v window="$WINDOW" "$PROGRAM"
    else
        exec "${AWK[@]}" -v window="$WINDOW" "$PROGRAM"
    fi
}

# Waits for process $1 to end, through the signals this script traps; its exit status.
reap() {
    local status=0
    while :; do
        wait "$1" && status=0 || status=$?
        kill -0 "$1" 2>/dev/null || return "$status"
    done
}

# kcat writes to awk through a pipe with no name left on disk (a FIFO opened, then removed):
# this script knows both processes, so a SIGTERM or SIGINT sent to it alone (a container's
# PID 1, a supervisor) stops kcat, which commits and closes the pipe, and awk drains it.
FIFO_DIR="$(mktemp -d)"
mkfifo "$FIFO_DIR/records"
exec 3<>"$FIFO_DIR/records" 4<"$FIFO_DIR/records" 5>"$FIFO_DIR/records" 3>&-
rm -r "$FIFO_DIR"

handle <&4 5>&- &
HANDLER=$!
kcat -C -q -u -b "$BOOTSTRAP" -G "$GROUP" \
    -X auto.offset.reset=earliest -X topic.metadata.refresh.interval.ms=5000 \
    -X partition.assignment.strategy=cooperative-sticky \
    -f '%h\n' "$PATTERN" >&5 4<&- </dev/null &
KCAT=$!
exec 4<&- 5>&-
trap 'kill -TERM "$KCAT" 2>/dev/null || true' INT TERM

status=0
reap "$KCAT" || status=$?
reap "$HANDLER" || true
exit "$status"
