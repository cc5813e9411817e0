"""Keep the sidecar Envoy running: restart it with the same bootstrap when it dies."""

from __future__ import annotations

import asyncio
import logging
import time

from shoal.agent.backoff import Backoff
from shoal.envoy import EnvoyProcess
from shoal.errors import EnvoyError

log = logging.getLogger("shoal.agent.supervisor")


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
