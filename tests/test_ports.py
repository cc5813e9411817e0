"""free_port: the picks of one process do not repeat and stay out of the ephemeral range;
two processes are not handed the same port."""

from __future__ import annotations

import os
import random
import socket
import time
from pathlib import Path

from shoal.envoy import CLAIM_SECONDS, _claim, _ephemeral_range, _PortCursor, free_port


def test_consecutive_picks_are_distinct_and_below_the_ephemeral_range() -> None:
    picks = [free_port() for _ in range(500)]
    assert len(set(picks)) == len(picks)
    low, high = _ephemeral_range()
    assert not any(low <= p <= high for p in picks)


def test_a_busy_port_is_skipped() -> None:
    first = free_port()
    with socket.socket() as held:
        held.bind(("127.0.0.1", first + 1))
        picks = [free_port() for _ in range(3)]
    assert first + 1 not in picks


def test_two_processes_starting_at_the_same_port_get_different_ones(tmp_path: Path,
                                                                      monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Two cursors (two processes) whose random starts coincide: the claims make the
    second skip what the first was handed, though none of it is bound yet."""
    monkeypatch.setattr(random, "randrange", lambda n: 100)
    a, b = _PortCursor(tmp_path), _PortCursor(tmp_path)
    first = [a.take("127.0.0.1") for _ in range(5)]
    second = [b.take("127.0.0.1") for _ in range(5)]
    assert not set(first) & set(second), (first, second)


def test_an_old_claim_is_taken_over(tmp_path: Path) -> None:
    assert _claim(20001, tmp_path)
    assert not _claim(20001, tmp_path)  # claimed a moment ago by someone
    old = time.time() - CLAIM_SECONDS - 1
    os.utime(tmp_path / "20001", (old, old))
    assert _claim(20001, tmp_path)
