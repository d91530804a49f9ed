// Command events consumes the ryze-bridge event and gap-marker topics with a consumer group,
// each frame handled once:
//
//	go run ./events -bootstrap kafka:9092 -group my-service
//
// It subscribes to every topic matching -pattern (a regex; new instances' topics are picked up
// at the next metadata refresh; the default leaves the DLQ out), drops re-deliveries by the
// ryze-id header within a bounded window (the bridge delivers at least once), hands gap
// markers (ryze-event bridge.gap) to their own handler to alert or reconcile, logs and skips a
// record without a ryze-id (not the bridge's), and commits
// offsets only after the polled records were handled (a crash re-reads what was not
// committed: the window lives in memory, so keep handling idempotent or persist the ids). Each record handled prints one JSON line
// {"id":…,"event":…,"instance":…}.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ryze-bridge/examples/go/ryze"
)

type line struct {
	ID       string `json:"id"`
	Event    string `json:"event"`
	Instance string `json:"instance"`
}

func onEvent(value []byte, headers map[string]string) {
	ryze.Print(line{headers["ryze-id"], headers["ryze-event"], headers["ryze-instance"]})
}

func onGap(value []byte, headers map[string]string) {
	fmt.Fprintf(os.Stderr, "gap in %s: %s\n", headers["ryze-instance"], value)
	ryze.Print(line{headers["ryze-id"], headers["ryze-event"], headers["ryze-instance"]})
}

func handle(record *kgo.Record, seen *ryze.Window) {
	headers := ryze.Headers(record)
	if reason, dead := headers["ryze-dlq-reason"]; dead {
		fmt.Fprintf(os.Stderr, "skipped a dead letter (%s) in %s: read it with ./dlq\n", reason, record.Topic)
		return
	}
	id := headers["ryze-id"]
	if id == "" {
		fmt.Fprintf(os.Stderr, "skipped a record without a ryze-id in %s[%d] at offset %d: not the bridge's\n",
			record.Topic, record.Partition, record.Offset)
		return
	}
	if !seen.FirstTime(id) {
		return
	}
	if headers["ryze-event"] == ryze.GapEvent {
		onGap(record.Value, headers)
	} else {
		onEvent(record.Value, headers)
	}
}

func main() {
	bootstrap := flag.String("bootstrap", "127.0.0.1:9092", "Kafka bootstrap servers")
	group := flag.String("group", "ryze-example", "consumer group")
	pattern := flag.String("pattern", ryze.DefaultPattern, "topics to consume (a regex)")
	window := flag.Int("window", 10000, "ryze-ids remembered for de-duplication")
	flag.Parse()
	if *window < 1 {
		fmt.Fprintf(os.Stderr, "events: -window must be at least 1, not %d\n", *window)
		os.Exit(2)
	}

	client, err := kgo.NewClient(
		kgo.SeedBrokers(*bootstrap),
		kgo.ConsumerGroup(*group),
		kgo.ConsumeTopics(*pattern),
		kgo.ConsumeRegex(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.MetadataMaxAge(5*time.Second),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, "events:", err)
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
				fmt.Fprintf(os.Stderr, "events: fetch %s[%d]: %v\n", topic, partition, err)
			}
		})
		fetches.EachRecord(func(record *kgo.Record) { handle(record, seen) })
		if err := client.CommitUncommittedOffsets(context.Background()); err != nil {
			fmt.Fprintln(os.Stderr, "events: commit:", err)
		}
	}
}
