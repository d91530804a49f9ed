"""ryze-bridge: RyzeAPI WebSocket events into Kafka topics and Redis streams."""

__version__ = "0.1.0"
