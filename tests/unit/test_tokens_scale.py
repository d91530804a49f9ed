"""Token masking at scale and across the fleet: linear in the frame, bounded rebuilds of the
shared indexes, and another instance's token kept out of the record key too."""

from __future__ import annotations

import orjson

from bridge.masking import SecretIndex
from bridge.pipeline import Frame, KnownTokens, Pipeline, Publish, Record, Router


def record(result: object) -> Record:
    assert isinstance(result, Publish)
    return result.record


def test_a_chat_key_holding_another_instances_token_is_masked() -> None:
    """The chat id read for the key is masked with the fleet's tokens, not only this
    instance's: another instance's learned token never goes out in the key."""
    fleet: SecretIndex[bytes] = SecretIndex(b"***")
    shop = Pipeline(
        Router("r", key_mode="chat"),
        "dlq",
        1 << 20,
        token=b"tok-shop-0001",
        known=KnownTokens(fleet=fleet),
    )
    cafe = Pipeline(Router("r"), "dlq", 1 << 20, known=KnownTokens(fleet=fleet))
    seen = b'{"event":"label.update","instanceData":{"token":"tok-cafe-learned-1"}}'
    record(cafe.process(Frame("cafe", seen, 1)))
    raw = orjson.dumps({"event": "message.exchange", "data": {"chat": "c-tok-cafe-learned-1"}})
    published = record(shop.process(Frame("shop", raw, 1)))
    assert published.key is not None
    assert b"tok-cafe-learned-1" not in published.key
    assert published.key == b"shop/c-***"
