"""The proxy's own access log, read back from ``<run dir>/envoy.log`` for the control plane
(``GET /logs`` on the agent's endpoint, :mod:`shoal.agent.metrics`; the protocol is in
:mod:`shoal.telemetry.agent_logs`).

Envoy writes one JSON object per request / connection to its stdout
(:func:`shoal.xds.generate.telemetry._file_log`: ``"log": "access"``), and its own log
lines to stderr; the agent appends both to the same file. A read:

* starts after a :class:`Cursor` (the file's inode and a byte offset) or, without one --
  or with one of another file (replaced) or beyond its end (truncated) -- from the
  newest part of the file;
* reads at most ``max_bytes`` (the newest ones when more were written since);
* takes complete lines only: a line cut by the start of the read is dropped, one still
  being written is left for the next read (the returned cursor stops before it);
* keeps the lines that are access-log entries (``"log": "access"`` JSON objects), the
  newest ``tail`` of them, each enriched as the control plane enriches streamed entries
  (:func:`shoal.telemetry.accesslog.entry_from_line`).

A truncation is recognised only while the file is shorter than the cursor's offset.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal.telemetry.accesslog import Entry, entry_from_line
from shoal.telemetry.agent_logs import MAX_TAIL
from shoal.telemetry.names import Identity

MAX_BYTES = 1 << 20  # read at most this much of the file per call
_CURSOR = re.compile(r"([0-9]{1,20}):([0-9]{1,20})")


@dataclass(frozen=True)
class Cursor:
    """Where a read stopped: just after the last complete line it took."""

    inode: int
    offset: int

    def __str__(self) -> str:
        return f"{self.inode}:{self.offset}"

    @staticmethod
    def parse(text: str) -> Cursor:
        """ValueError unless ``text`` is a cursor this module made."""
        m = _CURSOR.fullmatch(text)
        if m is None:
            raise ValueError(f"not a cursor of this log: {text[:40]!r}")
        return Cursor(int(m[1]), int(m[2]))


@dataclass(frozen=True)
class Lines:
    lines: list[bytes]  # complete lines after the cursor, oldest first
    cursor: Cursor


def read_lines(path: Path, after: Cursor | None, *, max_bytes: int = MAX_BYTES) -> Lines:
    """The complete lines of ``path`` after ``after`` (see the module docstring). No file
    yet: no lines, and the cursor is kept."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())  # of the very file read
            size = st.st_size
            usable = after is not None and after.inode == st.st_ino and after.offset <= size
            start = max(after.offset if after is not None and usable else 0,
                        size - max_bytes)
            lead = 1 if start > 0 else 0  # the byte before: is ``start`` a line's start?
            f.seek(start - lead)
            data = f.read(size - start + lead)
    except FileNotFoundError:
        return Lines([], after or Cursor(0, 0))
    at_line = lead == 0 or data[:1] == b"\n"
    data, pos = data[lead:], start
    if not at_line:  # the rest of a line begun before the read: not a line of its own
        cut = data.find(b"\n")
        if cut < 0:
            return Lines([], Cursor(st.st_ino, pos + len(data)))
        data, pos = data[cut + 1:], pos + cut + 1
    end = data.rfind(b"\n") + 1  # complete lines only; 0 when none
    return Lines(data[:end].splitlines(), Cursor(st.st_ino, pos + end))


def newest_entries(lines: Iterable[bytes], reporter: Identity, tail: int) -> list[Entry]:
    """The newest ``tail`` access-log entries among ``lines`` (oldest first); only that
    many are parsed beyond the lines that are not entries."""
    out: list[Entry] = []
    for line in reversed(list(lines)):
        if len(out) >= tail:
            break
        entry = entry_from_line(line, reporter)
        if entry is not None:
            out.append(entry)
    out.reverse()
    return out


class LocalAccessLog:
    """One proxy's access log as the agent's ``/logs`` route serves it."""

    def __init__(self, path: Path, reporter: Identity, *, max_bytes: int = MAX_BYTES
                 ) -> None:
        self.path = path
        self.reporter = reporter
        self.max_bytes = max_bytes

    def read(self, cursor: Cursor | None, tail: int) -> dict[str, Any]:
        """``{"entries": [...oldest first], "cursor": "..."}``; ``tail`` is clamped to
        1..MAX_TAIL (0 or less: MAX_TAIL)."""
        tail = MAX_TAIL if tail <= 0 else min(tail, MAX_TAIL)
        got = read_lines(self.path, cursor, max_bytes=self.max_bytes)
        return {"entries": newest_entries(got.lines, self.reporter, tail),
                "cursor": str(got.cursor)}

    async def aread(self, cursor: Cursor | None, tail: int) -> dict[str, Any]:
        """:meth:`read` off the event loop (file I/O and up to ``tail`` JSON parses)."""
        return await asyncio.to_thread(self.read, cursor, tail)
