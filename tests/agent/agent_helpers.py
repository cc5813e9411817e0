"""Helpers for the agent tests: an agent subprocess fronting app_server.py, waits."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from fake_control_plane import process_alive

from shoal.envoy import free_port

HERE = Path(__file__).parent


async def wait_until(predicate, timeout: float = 60.0, what: str = "condition") -> None:
    async def _poll() -> None:
        while not predicate():
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(_poll(), timeout)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@dataclass
class AgentRun:
    """An agent subprocess (``python -m shoal.agent run ...``) fronting app_server.py."""

    tmp: Path
    control_plane: str
    xds: str
    args: list[str] = field(default_factory=list)
    app_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def run_dir(self) -> Path:
        return self.tmp / "run"

    @property
    def state(self) -> Path:
        return self.tmp / "app"

    @property
    def log(self) -> Path:
        return self.tmp / "agent.log"

    def start(self) -> None:
        cmd = [
            sys.executable, "-m", "shoal.agent", "run",
            "--service", "reviews", "--port", "9080", "--app-port", str(free_port()),
            "--control-plane", self.control_plane, "--xds", self.xds,
            "--run-dir", str(self.run_dir), "--drain-seconds", "0.3",
            *self.args,
            "--", sys.executable, str(HERE / "app_server.py"), str(self.state), *self.app_args,
        ]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def envoy_pid(self) -> int | None:
        try:
            return int((self.run_dir / "envoy.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def app_pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.state / "app.pid").read_text().split()]
        except (FileNotFoundError, ValueError):
            return []

    async def wait_exit(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        await wait_until(lambda: self.proc.poll() is not None, timeout, "agent exit")
        return self.proc.returncode

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """Last-resort cleanup: everything this test started, by pid."""
        pids = [p for p in (self.envoy_pid(), *self.app_pids()) if p]
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in pids:
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""
