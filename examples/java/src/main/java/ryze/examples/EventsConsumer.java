package ryze.examples;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;
import java.util.regex.Pattern;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.errors.WakeupException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * Consumes the ryze-bridge event and gap-marker topics with a consumer group, each frame handled
 * once.
 *
 * <pre>java -cp 'target/classes:target/lib/*' ryze.examples.EventsConsumer \
 *     --bootstrap kafka:9092 --group my-service</pre>
 *
 * <p>Subscribes to every topic matching {@code --pattern} (a regex; new instances' topics are
 * picked up at the next metadata refresh; the default leaves the DLQ out), drops re-deliveries
 * by the {@code ryze-id} header within a bounded window (the bridge delivers at least once),
 * hands gap markers ({@code ryze-event} {@code bridge.gap}) to their own handler, logs and skips a
 * record without a {@code ryze-id} (not the bridge's), and commits
 * offsets only after the polled records were handled (a crash re-reads what was not committed:
 * the window lives in memory, so keep handling idempotent or persist the ids). Each record handled prints one JSON line
 * {@code {"id":…,"event":…,"instance":…}}.
 */
public final class EventsConsumer {
    /**
     * The bridge's event and gap-marker topics under the default template ryze.{event}
     * (ryze.message.exchange, ryze.bridge.gap) and the per-instance ryze.{instance}.{event} alike:
     * a prefix, then at least two dot-separated parts. The DLQ (default ryze.dlq) has one, so it
     * is not matched.
     */
    static final String DEFAULT_PATTERN = "^ryze\\.[^.]+\\..+";

    static final String GAP_EVENT = "bridge.gap";

    private EventsConsumer() {}

    static Map<String, String> headers(ConsumerRecord<byte[], byte[]> record) {
        Map<String, String> headers = new HashMap<>();
        for (Header header : record.headers()) {
            headers.put(header.key(), new String(header.value(), StandardCharsets.UTF_8));
        }
        return headers;
    }

    static String quote(String text) {
        StringBuilder out = new StringBuilder("\"");
        for (char c : text.toCharArray()) {
            switch (c) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                default -> {
                    if (c < 0x20) {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
                }
            }
        }
        return out.append('"').toString();
    }

    static void printLine(Map<String, String> headers) {
        System.out.println("{\"id\":" + quote(headers.getOrDefault("ryze-id", ""))
                + ",\"event\":" + quote(headers.getOrDefault("ryze-event", ""))
                + ",\"instance\":" + quote(headers.getOrDefault("ryze-instance", "")) + "}");
    }

    static void onEvent(byte[] value, Map<String, String> headers) {
        printLine(headers);
    }

    static void onGap(byte[] value, Map<String, String> headers) {
        System.err.println("gap in " + headers.get("ryze-instance") + ": "
                + new String(value, StandardCharsets.UTF_8));
        printLine(headers);
    }

    static void handle(ConsumerRecord<byte[], byte[]> record, SeenWindow seen) {
        Map<String, String> headers = headers(record);
        if (headers.containsKey("ryze-dlq-reason")) {
            System.err.println("skipped a dead letter (" + headers.get("ryze-dlq-reason") + ") in "
                    + record.topic() + ": read the DLQ with its own consumer");
            return;
        }
        String id = headers.getOrDefault("ryze-id", "");
        if (id.isEmpty()) {
            System.err.println("skipped a record without a ryze-id in " + record.topic() + "["
                    + record.partition() + "] at offset " + record.offset() + ": not the bridge's");
            return;
        }
        if (!seen.firstTime(id)) {
            return;
        }
        if (GAP_EVENT.equals(headers.get("ryze-event"))) {
            onGap(record.value(), headers);
        } else {
            onEvent(record.value(), headers);
        }
    }

    static Map<String, String> arguments(String[] args) {
        Map<String, String> options = new HashMap<>(Map.of(
                "--bootstrap", "127.0.0.1:9092",
                "--group", "ryze-example",
                "--pattern", DEFAULT_PATTERN,
                "--window", "10000"));
        for (int i = 0; i + 1 < args.length; i += 2) {
            if (!options.containsKey(args[i])) {
                throw new IllegalArgumentException("unknown option " + args[i]);
            }
            options.put(args[i], args[i + 1]);
        }
        return options;
    }

    public static void main(String[] args) {
        // the client's own log lines: warnings and errors only, to standard error
        System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        Map<String, String> options = arguments(args);
        int window = Integer.parseInt(options.get("--window"));
        if (window < 1) {
            System.err.println("EventsConsumer: --window must be at least 1, not " + window);
            System.exit(2);
        }
        Properties config = new Properties();
        config.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, options.get("--bootstrap"));
        config.put(ConsumerConfig.GROUP_ID_CONFIG, options.get("--group"));
        config.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        config.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        config.put(ConsumerConfig.METADATA_MAX_AGE_CONFIG, "5000");
        config.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
        config.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
        SeenWindow seen = new SeenWindow(window);
        KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(config);
        Thread main = Thread.currentThread();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            consumer.wakeup();
            try {
                main.join(10_000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }));
        try (consumer) {
            consumer.subscribe(Pattern.compile(options.get("--pattern")));
            while (true) {
                ConsumerRecords<byte[], byte[]> records = consumer.poll(Duration.ofMillis(500));
                for (ConsumerRecord<byte[], byte[]> record : records) {
                    handle(record, seen);
                }
                if (!records.isEmpty()) {
                    System.out.flush();
                    consumer.commitSync();
                }
            }
        } catch (WakeupException stopping) {
            System.out.flush();
        }
    }
}
