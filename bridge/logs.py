"""Logging, configured once: structlog for our code, stdlib loggers routed through it.

JSON lines when stderr is not a terminal (Kubernetes), readable console output on a terminal.
Event names are dotted (``ws.connected``, ``sink.publish_failed``). Every secret the process
knows of is registered with :func:`register_secret` and masked wherever it appears in a log
line, whatever the key, as a last line of defence behind ``SecretStr``.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable, MutableMapping
from typing import Any, Literal

import structlog

MASK = "***"
_MIN_SECRET_LENGTH = 4
_secrets: set[str] = set()
_secrets_lock = threading.Lock()
LogFormat = Literal["auto", "json", "console"]
_configured: tuple[str, LogFormat] = ("info", "auto")


def register_secret(value: str) -> None:
    """Mask ``value`` in every log line from now on (values shorter than 4 chars are ignored)."""
    if len(value) >= _MIN_SECRET_LENGTH:
        with _secrets_lock:
            _secrets.add(value)


def mask_text(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of every secret replaced by ``***`` (pure)."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def mask_registered(text: str) -> str:
    """``text`` with every registered secret masked, as in the logs (for text that leaves the
    process by another way, such as readiness's reasons)."""
    with _secrets_lock:
        secrets = frozenset(_secrets)
    return mask_text(text, secrets) if secrets else text


def _mask_value(value: Any, secrets: frozenset[str]) -> Any:
    if isinstance(value, str):
        return mask_text(value, secrets)
    if isinstance(value, dict):
        return {k: _mask_value(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_value(v, secrets) for v in value]
    if isinstance(value, BaseException):
        return mask_text(f"{type(value).__name__}: {value}", secrets)
    return value


def mask_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask registered secrets in every value, rendered exceptions too."""
    with _secrets_lock:
        secrets = frozenset(_secrets)
    if not secrets:
        return event_dict
    return {key: _mask_value(value, secrets) for key, value in event_dict.items()}


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
