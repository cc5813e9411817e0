"""Fixtures for tests that need real network namespaces (root, iproute2, iptables)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import shoal.testing.apps
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


def _others_can_run(path: Path) -> bool:
    """Whether a user with no special relation to ``path`` may execute it (mode bits of
    the file and of every directory on the way)."""
    real = path.resolve()
    if not real.is_file() or not real.stat().st_mode & stat.S_IXOTH:
        return False
    return all(d.stat().st_mode & stat.S_IXOTH for d in real.parents)


def app_python() -> str:
    """A Python the pods' app user (nobody) may run: this one, unless it lives where
    others may not enter (e.g. /root/.pyenv), else the system's. Skips the test if none."""
    for candidate in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(candidate) and _others_can_run(Path(candidate)):
            return candidate
    pytest.skip("no Python the pods' app user (nobody) may run")


def app_command(kind: str = "http") -> list[str]:
    """``shoal.testing.apps KIND`` as a pod's app (user nobody) can run it: the file as a
    script (it needs only the standard library), with :func:`app_python`."""
    return [app_python(), str(Path(shoal.testing.apps.__file__).resolve()), kind]
