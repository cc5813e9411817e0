"""The application process the agent fronts: start, wait until it listens, stop it.

The app runs in its own session (process group), so stopping it also reaches any
children it spawned and a signal to the agent's terminal group does not hit it first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence

from shoal.errors import AgentError

log = logging.getLogger("shoal.agent.app")


def exit_status(returncode: int) -> int:
    """A process exit status as a shell reports it (killed by signal N -> 128+N)."""
    return 128 - returncode if returncode < 0 else returncode


class AppProcess:
    def __init__(self, command: Sequence[str], env: Mapping[str, str]) -> None:
        self.command = list(command)
        self.env = dict(env)
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        try:
            self._proc = subprocess.Popen(
                self.command, env=self.env, stdin=subprocess.DEVNULL, start_new_session=True
            )
        except OSError as e:
            raise AgentError(f"cannot start the application {self.command[0]!r}: {e}") from e
        log.info("application started", extra={"pid": self._proc.pid, "command": self.command})

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def started(self) -> bool:
        return self._proc is not None

    def poll(self) -> int | None:
        return self._proc.poll() if self._proc else None

    async def wait_exit(self, poll_interval: float = 0.1) -> int:
        if self._proc is None:
            raise AgentError("the application was never started")
        while (code := self._proc.poll()) is None:
            await asyncio.sleep(poll_interval)
        return code

    async def wait_listening(
        self,
        host: str,
        port: int,
        timeout: float,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> bool:
        """True once ``host:port`` accepts TCP; False on timeout, app exit or stop request."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not should_stop() and self.poll() is None:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
            except (OSError, TimeoutError):
                await asyncio.sleep(0.1)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return True
        return False

    def _killpg(self, sig: int) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    async def stop(self, grace: float) -> int | None:
        """SIGTERM the app's process group, SIGKILL after ``grace``; returns its returncode.

        Children it left behind in its group are killed too (no stray processes)."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._killpg(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.wait_exit(), grace)
            except TimeoutError:
                log.warning("application ignored SIGTERM; killing it",
                            extra={"pid": self._proc.pid, "grace_s": grace})
                self._killpg(signal.SIGKILL)
                await self.wait_exit()
        self._killpg(signal.SIGKILL)  # leftovers of the group, if any
        return self._proc.returncode
