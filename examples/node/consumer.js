'use strict';
/*
 * Consume the ryze-bridge event and gap-marker topics with a kafkajs consumer group, each
 * frame handled once:
 *
 *   node consumer.js --bootstrap kafka:9092 --group my-service
 *
 * It subscribes to the topics matching --pattern (a regex; kafkajs resolves it when it
 * starts, so restart it to pick up a new instance's topics; the default leaves the DLQ out),
 * drops re-deliveries by the ryze-id header within a bounded window (the bridge delivers at
 * least once), hands gap markers (ryze-event bridge.gap) to their own handler, logs and skips
 * a record without a ryze-id (not the bridge's), and commits a
 * batch's offsets only after it was handled (a crash re-reads what was not committed: the
 * window lives in memory, so keep handling idempotent or persist the ids). Each record handled prints one JSON line {"id":…,"event":…,"instance":…}.
 */
const { Kafka, CompressionCodecs, CompressionTypes, logLevel } = require('kafkajs');
const fzstd = require('fzstd');
const { parseArgs } = require('node:util');
const { SeenWindow } = require('./dedup');

// The bridge compresses with zstd by default (sink.kafka.compression), which kafkajs reads only
// through a codec: fzstd decompresses in plain JavaScript. (gzip is built in; for snappy or lz4
// register their kafkajs codec the same way.)
CompressionCodecs[CompressionTypes.ZSTD] = () => ({
  async compress() {
    throw new Error('this consumer only reads zstd');
  },
  async decompress(buffer) {
    return Buffer.from(fzstd.decompress(buffer));
  },
});

// The bridge's event and gap-marker topics under the default template ryze.{event}
// (ryze.message.exchange, ryze.bridge.gap) and the per-instance ryze.{instance}.{event} alike:
// a prefix, then at least two dot-separated parts. The DLQ (default ryze.dlq) has one.
const DEFAULT_PATTERN = '^ryze\\.[^.]+\\..+';
const GAP_EVENT = 'bridge.gap';

function headerMap(headers) {
  const out = {};
  for (const [key, value] of Object.entries(headers || {})) {
    out[key] = Buffer.isBuffer(value) ? value.toString('utf8') : String(value);
  }
  return out;
}

function printLine(headers) {
  const line = { id: headers['ryze-id'], event: headers['ryze-event'], instance: headers['ryze-instance'] };
  process.stdout.write(JSON.stringify(line) + '\n');
}

function onEvent(value, headers) {
  printLine(headers);
}

function onGap(value, headers) {
  process.stderr.write(`gap in ${headers['ryze-instance']}: ${value}\n`);
  printLine(headers);
}

function handle(topic, partition, message, seen) {
  const headers = headerMap(message.headers);
  if ('ryze-dlq-reason' in headers) {
    process.stderr.write(`skipped a dead letter (${headers['ryze-dlq-reason']}) in ${topic}\n`);
    return;
  }
  const id = headers['ryze-id'] || '';
  if (id === '') {
    process.stderr.write(
      `skipped a record without a ryze-id in ${topic}[${partition}] at offset ${message.offset}: not the bridge's\n`,
    );
    return;
  }
  if (!seen.firstTime(id)) return;
  if (headers['ryze-event'] === GAP_EVENT) onGap(message.value, headers);
  else onEvent(message.value, headers);
}

// kafkajs logs to standard output by default: its lines go to standard error here.
const toStderr = () => ({ namespace, level, log }) => {
  process.stderr.write(`kafkajs ${namespace} ${level}: ${log.message}\n`);
};

async function main() {
  const { values } = parseArgs({
    options: {
      bootstrap: { type: 'string', default: '127.0.0.1:9092' },
      group: { type: 'string', default: 'ryze-example' },
      pattern: { type: 'string', default: DEFAULT_PATTERN },
      window: { type: 'string', default: '10000' },
    },
  });
  const kafka = new Kafka({
    clientId: 'ryze-consumer-node',
    brokers: values.bootstrap.split(','),
    logLevel: logLevel.WARN,
    logCreator: toStderr,
  });
  const consumer = kafka.consumer({ groupId: values.group, metadataMaxAge: 5000 });
  const window = Number(values.window);
  if (!Number.isInteger(window) || window < 1) {
    process.stderr.write(`consumer: --window must be a whole number of at least 1, not ${values.window}\n`);
    process.exit(2);
  }
  const seen = new SeenWindow(window);
  const stop = async () => {
    await consumer.disconnect();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  await consumer.connect();
  await consumer.subscribe({ topics: [new RegExp(values.pattern)], fromBeginning: true });
  await consumer.run({
    autoCommit: false,
    eachBatch: async ({ batch, resolveOffset, heartbeat }) => {
      for (const message of batch.messages) {
        handle(batch.topic, batch.partition, message, seen);
        resolveOffset(message.offset);
      }
      if (batch.messages.length > 0) {
        const next = (BigInt(batch.lastOffset()) + 1n).toString();
        await consumer.commitOffsets([{ topic: batch.topic, partition: batch.partition, offset: next }]);
      }
      await heartbeat();
    },
  });
}

main().catch((error) => {
  process.stderr.write(`consumer: ${error.stack || error}\n`);
  process.exit(1);
});
