"""Sinks: where records go (Kafka, Redis, a file), behind one contract."""
