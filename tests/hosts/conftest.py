"""Fixtures for tests that need real network namespaces (root, iproute2, iptables)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from shoal.hosts import netns
from shoal.hosts.netns import Pod

needs_root = pytest.mark.skipif(
    netns.unavailable() is not None, reason=netns.unavailable() or ""
)


@pytest.fixture
def prefix() -> Iterator[str]:
    """A unique name prefix for this test's pods and networks; all removed afterwards."""
    p = f"t{uuid.uuid4().hex[:5]}-"
    try:
        yield p
    finally:
        netns.cleanup(p)


def tcp_connects(pod: Pod, host: str, port: int, timeout: float = 3.0) -> bool:
    """Whether a plain TCP connection from inside ``pod`` to host:port succeeds."""
    code = (
        "import socket,sys\n"
        f"socket.create_connection(({host!r}, {port}), timeout={timeout}).close()\n"
    )
    done = subprocess.run(pod.command([sys.executable, "-c", code]), capture_output=True,
                          timeout=timeout + 30)
    return done.returncode == 0
