// Peer for the benchmark: the stream engine of Redpanda Connect (benthos core, MIT) with its
// own `websocket` input, and a Kafka output written here against franz-go, the client that
// Connect's `kafka_franz` output uses, with the same producer settings as the bridge:
// acks=all, idempotent, zstd, 5 ms linger. (The Connect module itself is not usable here
// under its licence, so its kafka_franz output is not linked.)
package main

import (
	"context"

	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/twmb/franz-go/pkg/kgo"

	_ "github.com/redpanda-data/benthos/v4/public/components/io"
	_ "github.com/redpanda-data/benthos/v4/public/components/pure"
)

func franzSpec() *service.ConfigSpec {
	return service.NewConfigSpec().
		Summary("Writes messages to Kafka with franz-go (acks=all, idempotent, zstd); the topic may be interpolated per message.").
		Field(service.NewStringListField("seed_brokers")).
		Field(service.NewInterpolatedStringField("topic")).
		Field(service.NewStringField("key").Default("")).
		Field(service.NewIntField("max_in_flight").Default(64)).
		Field(service.NewBatchPolicyField("batching"))
}

type franzOutput struct {
	client *kgo.Client
	seeds  []string
	topic  *service.InterpolatedString
	key    []byte
}

func (f *franzOutput) Connect(ctx context.Context) error {
	client, err := kgo.NewClient(
		kgo.SeedBrokers(f.seeds...),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerBatchCompression(kgo.ZstdCompression()),
		kgo.ProducerLinger(5e6),
		kgo.ProducerBatchMaxBytes(1<<20),
	)
	if err != nil {
		return err
	}
	f.client = client
	return nil
}

func (f *franzOutput) WriteBatch(ctx context.Context, batch service.MessageBatch) error {
	records := make([]*kgo.Record, 0, len(batch))
	for i, msg := range batch {
		value, err := msg.AsBytes()
		if err != nil {
			return err
		}
		topic, err := batch.TryInterpolatedString(i, f.topic)
		if err != nil {
			return err
		}
		records = append(records, &kgo.Record{Topic: topic, Key: f.key, Value: value})
	}
	return f.client.ProduceSync(ctx, records...).FirstErr()
}

func (f *franzOutput) Close(ctx context.Context) error {
	if f.client != nil {
		f.client.Close()
	}
	return nil
}

func main() {
	err := service.RegisterBatchOutput("franz_peer", franzSpec(),
		func(conf *service.ParsedConfig, mgr *service.Resources) (service.BatchOutput, service.BatchPolicy, int, error) {
			out := &franzOutput{}
			var err error
			var policy service.BatchPolicy
			if out.seeds, err = conf.FieldStringList("seed_brokers"); err != nil {
				return nil, policy, 0, err
			}
			if out.topic, err = conf.FieldInterpolatedString("topic"); err != nil {
				return nil, policy, 0, err
			}
			key, _ := conf.FieldString("key")
			out.key = []byte(key)
			inFlight, err := conf.FieldInt("max_in_flight")
			if err != nil {
				return nil, policy, 0, err
			}
			if policy, err = conf.FieldBatchPolicy("batching"); err != nil {
				return nil, policy, 0, err
			}
			return out, policy, inFlight, nil
		})
	if err != nil {
		panic(err)
	}
	service.RunCLI(context.Background())
}
