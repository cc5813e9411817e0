"""free_port: the picks of one process do not repeat and stay out of the ephemeral range."""

from __future__ import annotations

import socket

from shoal.envoy import _ephemeral_range, free_port


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
