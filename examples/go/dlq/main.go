// Command dlq reads the ryze-bridge dead-letter topic: what the bridge could not publish as
// an event (malformed JSON, no event name, too large, refused by the broker…), with why.
//
//	go run ./dlq -bootstrap kafka:9092 -group my-dlq-reader -topic ryze.dlq
//
// The value is the frame's raw bytes (token removed), which may not be JSON at all. Each dead
// letter prints one JSON line {"id":…,"instance":…,"reason":…,"event":…,"error":…}: "event"
// is the frame's own event name when the bytes are a JSON object that has one, else null.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ryze-bridge/examples/go/ryze"
)

type letter struct {
	ID       string  `json:"id"`
	Instance string  `json:"instance"`
	Reason   string  `json:"reason"`
	Event    *string `json:"event"`
	Error    string  `json:"error"`
}

// originalEvent is the frame's "event" when the dead letter's bytes are a JSON object with a
// string event (a frame refused by the broker or too large), nil otherwise.
func originalEvent(value []byte) *string {
	var frame struct {
		Event *string `json:"event"`
	}
	if json.Unmarshal(value, &frame) != nil {
		return nil
	}
	return frame.Event
}

func main() {
	bootstrap := flag.String("bootstrap", "127.0.0.1:9092", "Kafka bootstrap servers")
	group := flag.String("group", "ryze-dlq-example", "consumer group")
	topic := flag.String("topic", "ryze.dlq", "the DLQ topic (sink.dlq)")
	window := flag.Int("window", 10000, "ryze-ids remembered for de-duplication")
	flag.Parse()
	if *window < 1 {
		fmt.Fprintf(os.Stderr, "dlq: -window must be at least 1, not %d\n", *window)
		os.Exit(2)
	}

	client, err := kgo.NewClient(
		kgo.SeedBrokers(*bootstrap),
		kgo.ConsumerGroup(*group),
		kgo.ConsumeTopics(*topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dlq:", err)
		os.Exit(1)
	}
	defer client.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	seen := ryze.NewWindow(*window)
	for ctx.Err() == nil {
		fetches := client.PollFetches(ctx)
		fetches.EachError(func(topic string, partition int32, err error) {
			if ctx.Err() == nil {
				fmt.Fprintf(os.Stderr, "dlq: fetch %s[%d]: %v\n", topic, partition, err)
			}
		})
		fetches.EachRecord(func(record *kgo.Record) {
			headers := ryze.Headers(record)
			id := headers["ryze-id"]
			if id == "" {
				fmt.Fprintf(os.Stderr, "skipped a record without a ryze-id in %s[%d] at offset %d: not the bridge's\n",
					record.Topic, record.Partition, record.Offset)
				return
			}
			if !seen.FirstTime(id) {
				return
			}
			ryze.Print(letter{
				ID:       headers["ryze-id"],
				Instance: headers["ryze-instance"],
				Reason:   headers["ryze-dlq-reason"],
				Event:    originalEvent(record.Value),
				Error:    headers["ryze-dlq-error"],
			})
		})
		if err := client.CommitUncommittedOffsets(context.Background()); err != nil {
			fmt.Fprintln(os.Stderr, "dlq: commit:", err)
		}
	}
}
