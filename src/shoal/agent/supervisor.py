"""Keep the sidecar Envoy running: restart it with the same bootstrap when it dies."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from pathlib import Path

from shoal.agent.backoff import Backoff
from shoal.envoy import EnvoyProcess
from shoal.errors import EnvoyError

log = logging.getLogger("shoal.agent.supervisor")


class ProxyUserEnvoy(EnvoyProcess):
    """Envoy run as ``uid`` (and group ``uid``): in capture mode its own connections are
    told apart from the app's by that uid (docs/hosts.md). Its run directory is given to
    that uid; the agent (root) still writes the bootstrap and log there."""

    def __init__(self, bootstrap_path: Path, *, uid: int, **kw: object) -> None:
        super().__init__(bootstrap_path, **kw)  # type: ignore[arg-type]
        self.uid = uid

    def prepare(self) -> None:
        """Create the run directory, owned by the proxy uid, readable on the way there."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for parent in (self.run_dir.parent, self.run_dir):
            parent.chmod(parent.stat().st_mode | 0o755)
        os.chown(self.run_dir, self.uid, self.uid)
        # Envoy reopens /dev/stdout (access logs): it must own the file its stdout is
        self.log_path.touch()
        os.chown(self.log_path, self.uid, self.uid)

    def command(self) -> list[str]:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise EnvoyError("`setpriv` not found (apt-get install util-linux): needed to run "
                             "Envoy as the proxy uid")
        return [setpriv, f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups",
                *super().command()]


class EnvoySupervisor:
    """Restart Envoy whenever it exits, with capped back-off (reset after a stable run).

    Cancel :meth:`run` before stopping Envoy on purpose."""

    def __init__(
        self,
        envoy: EnvoyProcess,
        *,
        backoff: Backoff | None = None,
        stable_after_s: float = 30.0,
    ) -> None:
        self.envoy = envoy
        self.backoff = backoff or Backoff(initial=0.2, maximum=10.0)
        self.stable_after_s = stable_after_s
        self.restarts = 0

    async def run(self) -> None:
        started = time.monotonic()
        while True:
            if self.envoy.running:
                code = await self.envoy.wait_exit()
                ran = time.monotonic() - started
                if ran >= self.stable_after_s:
                    self.backoff.reset()
                log.warning("envoy exited unexpectedly", extra={
                    "exit_code": code, "ran_s": round(ran, 1),
                    "log_tail": self.envoy.log_tail(3)})
            delay = self.backoff.next()
            await asyncio.sleep(delay)
            try:
                self.envoy.start()
            except EnvoyError as e:
                log.error("cannot restart envoy", extra={"error": str(e)})
                continue
            started = time.monotonic()
            self.restarts += 1
            log.warning("envoy restarted", extra={
                "restarts": self.restarts, "pid": self.envoy.pid, "after_s": round(delay, 2)})
