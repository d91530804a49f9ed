"""Logging, configured once: structlog for our code, stdlib loggers routed through it.

JSON lines when stderr is not a terminal (Kubernetes), readable console output on a terminal.
Event names are dotted (``ws.connected``, ``sink.publish_failed``). Every secret the process
knows of is registered with :func:`register_secret` and masked wherever it appears in a log
line, whatever the key, as a last line of defence behind ``SecretStr``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, Literal

import structlog

from bridge.masking import MASK, Matcher, SecretIndex
from bridge.masking import mask_text as mask_text  # noqa: PLC0414 - part of this API

LogFormat = Literal["auto", "json", "console"]
_configured: tuple[str, LogFormat] = ("info", "auto")
_index: SecretIndex[str] = SecretIndex(MASK)
_PLAIN = (int, float, bool, type(None))


def register_secret(value: str) -> None:
    """Mask ``value`` in every log line from now on (values shorter than 4 chars are ignored)."""
    _index.add(value)


def mask_registered(text: str) -> str:
    """``text`` with every registered secret masked, as in the logs (for text that leaves the
    process by another way, such as readiness's reasons)."""
    matcher = _index.matcher()
    return text if matcher.empty else matcher.mask(text)


def _texts(value: Any, out: list[str]) -> bool:
    """Append every text in ``value`` to ``out``; True when something is not plain data (it
    is then logged as its text, masked)."""
    if isinstance(value, str):
        out.append(value)
        return False
    if isinstance(value, dict):
        return _all_texts((*value, *value.values()), out)
    if isinstance(value, list | tuple):
        return _all_texts(value, out)
    if isinstance(value, _PLAIN):
        return False
    out.append(_as_text(value))
    return True


def _all_texts(values: Iterable[Any], out: list[str]) -> bool:
    odd = False
    for value in values:
        odd = _texts(value, out) or odd
    return odd


def _as_text(value: Any) -> str:
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    return str(value)


def _mask_value(value: Any, matcher: Matcher[str]) -> Any:
    if isinstance(value, str):
        return matcher.mask(value)
    if isinstance(value, dict):
        return {_mask_value(k, matcher): _mask_value(v, matcher) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_value(v, matcher) for v in value]
    if isinstance(value, _PLAIN):
        return value
    return matcher.mask(_as_text(value))


def mask_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask registered secrets in every key and value (nested data,
    rendered exceptions, any object as its text). One pass of an automaton over the line's
    texts decides; only a line that holds a secret (or an object) is rebuilt."""
    matcher = _index.matcher()
    if matcher.empty:
        return event_dict
    texts = list(event_dict)  # the keys
    odd = False
    for value in event_dict.values():  # (the usual value is a plain one: no call for it)
        if type(value) is str:
            texts.append(value)
        elif type(value) not in _PLAIN:
            odd = _texts(value, texts) or odd
    if not odd and not matcher.finds("\x00".join(texts)):
        return event_dict
    return {_mask_value(k, matcher): _mask_value(v, matcher) for k, v in event_dict.items()}


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]


def configure_logging(
    level: str = "info",
    fmt: LogFormat = "auto",
    stream: Any = None,
) -> None:
    """Configure structlog and the stdlib root logger; safe to call more than once."""
    global _configured  # noqa: PLW0603 - one configuration per process, read by a child
    _configured = (level, fmt)
    stream = stream if stream is not None else sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    final: list[Any] = [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        structlog.processors.format_exc_info,
        mask_secrets,
        renderer,
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(), processors=final
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("websockets", "redis", "aiohttp.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # aiokafka logs an ERROR per reconnect attempt during a broker outage (dozens a second);
    # the sink worker reports the same condition once per retry as sink.publish_failed.
    logging.getLogger("aiokafka").setLevel(max(logging.CRITICAL, root.level))
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def logging_configured() -> tuple[str, LogFormat]:
    """The level and format this process logs with (a child process logs alike)."""
    return _configured


def get_logger(name: str, **bound: Any) -> structlog.stdlib.BoundLogger:
    """A logger for ``name`` with ``bound`` key/values on every line."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger.bind(**bound) if bound else logger
