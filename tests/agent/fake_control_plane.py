"""The control plane's three workload REST endpoints, recording every call."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web


@dataclass
class Call:
    method: str
    path: str
    body: Any = None
    app_alive: bool | None = None  # on DELETE: was the app process still running?


@dataclass
class FakeControlPlane:
    lease_seconds: float = 15.0
    heartbeat_404: int = 0  # answer this many heartbeats with 404
    app_pid_file: Path | None = None
    calls: list[Call] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None
    port: int = 0

    def _app_alive(self) -> bool | None:
        if self.app_pid_file is None or not self.app_pid_file.exists():
            return None
        pid = int(self.app_pid_file.read_text().split()[0])
        return process_alive(pid)

    def _note(self, call: Call) -> None:
        self.calls.append(call)
        self.changed.set()

    async def _register(self, request: web.Request) -> web.Response:
        body = await request.json()
        self._note(Call("POST", request.path, body))
        return web.json_response({"workload": body["workload"],
                                  "leaseSeconds": self.lease_seconds})

    async def _heartbeat(self, request: web.Request) -> web.Response:
        self._note(Call("PUT", request.path))
        if self.heartbeat_404 > 0:
            self.heartbeat_404 -= 1
            return web.json_response({"error": "workload not found"}, status=404)
        return web.json_response({"leaseSeconds": self.lease_seconds})

    async def _deregister(self, request: web.Request) -> web.Response:
        self._note(Call("DELETE", request.path, app_alive=self._app_alive()))
        return web.json_response({})

    async def start(self, port: int = 0) -> str:
        app = web.Application()
        app.router.add_post("/api/v1/workloads", self._register)
        app.router.add_put("/api/v1/workloads/{ns}/{name}/heartbeat", self._heartbeat)
        app.router.add_delete("/api/v1/workloads/{ns}/{name}", self._deregister)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    async def wait_for(self, method: str, count: int = 1, timeout: float = 60.0) -> list[Call]:
        async def _wait() -> list[Call]:
            while len(self.of(method)) < count:
                self.changed.clear()
                await self.changed.wait()
            return self.of(method)

        return await asyncio.wait_for(_wait(), timeout)


def process_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X") and os.path.exists(f"/proc/{pid}")
