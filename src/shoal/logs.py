"""Logging setup shared by every shoal process.

One JSON object per line when the stream is not a terminal; a short readable line when
it is. Structured fields are passed with ``extra``::

    log.info("envoy restarted", extra={"restarts": 2, "pid": 4242})
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra`` fields of a record."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in record_fields(record).items():
            out.setdefault(k, v)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        fields = " ".join(f"{k}={v}" for k, v in record_fields(record).items())
        line = f"{ts} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if fields:
            line += f"  {fields}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is *now*. A handler holding the stream of its
    configuration time breaks when that stream is closed (the CLI run in-process by tests
    swaps it): and logging's own error report lets the ValueError of a closed stream
    escape into the caller -- a control-plane task in the same process died of it."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass

    def emit(self, record: logging.LogRecord) -> None:
        # sys.stderr itself closed: logging's error report raises; drop the line instead
        with contextlib.suppress(ValueError):
            super().emit(record)


def configure_logging(
    level: str | int | None = None,
    *,
    json_lines: bool | None = None,
    stream: TextIO | None = None,
) -> None:
    """Configure the root logger once per process (idempotent: replaces shoal's handler).

    ``level`` defaults to ``$SHOAL_LOG_LEVEL`` or INFO; ``json_lines`` defaults to "stream
    is not a TTY".
    """
    if level is None:
        level = os.environ.get("SHOAL_LOG_LEVEL", "INFO")
    if isinstance(level, str):
        level = level.upper()
    if json_lines is None:
        out = stream or sys.stderr
        json_lines = not (hasattr(out, "isatty") and out.isatty())
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.set_name("shoal")
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        if h.get_name() == "shoal":
            root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "aiohttp.access", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
