// Package ryze holds what every ryze-bridge consumer needs: the record headers, a bounded
// window of seen ryze-ids for dropping the bridge's re-deliveries, and the output line.
package ryze

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/twmb/franz-go/pkg/kgo"
)

// DefaultPattern matches the bridge's event and gap-marker topics under the default template
// ryze.{event} (ryze.message.exchange, ryze.bridge.gap) and the per-instance
// ryze.{instance}.{event} alike: a prefix, then at least two dot-separated parts. The DLQ
// (default ryze.dlq) has one, so it is not matched: dead letters are read by the dlq example.
const DefaultPattern = `^ryze\.[^.]+\..+`

// GapEvent is the ryze-event of a gap marker.
const GapEvent = "bridge.gap"

// Headers returns a record's headers as a map (values are UTF-8).
func Headers(record *kgo.Record) map[string]string {
	headers := make(map[string]string, len(record.Headers))
	for _, h := range record.Headers {
		headers[h.Key] = string(h.Value)
	}
	return headers
}

// Window remembers the last Size ids; FirstTime(id) is true once per id in the window.
type Window struct {
	ids  map[string]struct{}
	ring []string
	next int
}

// NewWindow makes a window of size ids (a few thousand cover every replay the bridge makes);
// size must be at least 1.
func NewWindow(size int) *Window {
	if size < 1 {
		panic(fmt.Sprintf("ryze.NewWindow: size %d, at least 1 is needed", size))
	}
	return &Window{ids: make(map[string]struct{}, size), ring: make([]string, size)}
}

// FirstTime records id and reports whether it was not in the window yet.
func (w *Window) FirstTime(id string) bool {
	if _, seen := w.ids[id]; seen {
		return false
	}
	if old := w.ring[w.next]; old != "" {
		delete(w.ids, old)
	}
	w.ring[w.next] = id
	w.next = (w.next + 1) % len(w.ring)
	w.ids[id] = struct{}{}
	return true
}

// Print writes one JSON line to standard output.
func Print(line any) {
	out, err := json.Marshal(line)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cannot encode line:", err)
		return
	}
	fmt.Println(string(out))
}
