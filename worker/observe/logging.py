"""The only caller of ``structlog.configure``: JSON lines, or a console renderer on a terminal."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any

import structlog

from config import fastjson
from config.settings import Settings


def _json_bytes(obj: Any, **kw: Any) -> bytes:
    # structlog passes its fallback for objects JSON lacks as ``default``
    return fastjson.dumps(obj, default=kw.get("default"))


def _json_text(obj: Any, **kw: Any) -> str:
    return _json_bytes(obj, **kw).decode()


_context: ContextVar[dict[str, Any] | None] = ContextVar("maildispatch_log_context", default=None)


class log_context:  # a ``with`` statement, named like one
    """``with log_context(job_id=...):`` adds fields to every line logged inside the block.

    One context variable holding a dict: binding costs one ``ContextVar.set``, and the processor
    below one lookup per line (structlog's ``merge_contextvars`` copies the whole context and
    scans every variable in it, at each of the two bindings of a delivery). Blocks nest;
    each asyncio task sees the fields of the block it was started in.
    """

    __slots__ = ("_fields", "_token")

    def __init__(self, **fields: Any) -> None:
        self._fields = fields
        self._token: Token[dict[str, Any] | None] | None = None

    def __enter__(self) -> None:
        outer = _context.get()
        self._token = _context.set({**outer, **self._fields} if outer else self._fields)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            _context.reset(self._token)


def merge_log_context(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """The structlog processor that adds the fields of the enclosing ``log_context`` blocks."""
    fields = _context.get()
    if fields:
        for key, value in fields.items():
            event_dict.setdefault(key, value)
    return event_dict


def configure_logging(settings: Settings) -> None:
    """Configure structlog (and route stdlib logging through the same level)."""
    use_console = settings.log_format == "console" or (
        settings.log_format == "auto" and sys.stderr.isatty()
    )
    # JSON lines by orjson (faster than the standard library's; docs/performance.md)
    # written as bytes; the stdlib records below need the same JSON as text
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer()
        if use_console
        else structlog.processors.JSONRenderer(serializer=_json_text)
    )
    factory: Any = structlog.WriteLoggerFactory(sys.stderr)
    processors_end = renderer
    buffer = getattr(sys.stderr, "buffer", None)
    if not use_console and buffer is not None:
        processors_end = structlog.processors.JSONRenderer(serializer=_json_bytes)
        factory = structlog.BytesLoggerFactory(buffer)
    level = logging.getLevelName(settings.log_level.upper())
    # structured tracebacks without the frames' local variables: they can hold secrets and bodies
    tracebacks = structlog.processors.ExceptionRenderer(
        structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
    )
    structlog.configure(
        processors=[
            merge_log_context,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            tracebacks,
            processors_end,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    # the libraries' stdlib records (Celery, uvicorn, Flower, aiosmtpd) render the same way
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                merge_log_context,
                structlog.processors.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                tracebacks,
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
