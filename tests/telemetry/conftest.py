"""Fixtures for telemetry tests: a control plane, an echo server and a client, each under
a real agent with Envoy; the test process plays the client app (its sidecar's proxy)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from shoal.testing.local import AgentProcess, ControlPlaneProcess, wait_for
from tests.e2e.conftest import agent_info, app_command


@dataclass
class Mesh:
    cp: ControlPlaneProcess
    proxy: str  # the client sidecar's outbound HTTP proxy URL

    def get(self, path: str, **kw: Any) -> Any:
        with self.cp.client() as c:
            return c.request("GET", path, **kw)

    def metrics_text(self) -> str:
        return httpx.get(f"{self.cp.url}/metrics", headers=self.cp.auth_headers, timeout=5).text


@pytest.fixture(scope="package")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    workdir = tmp_path_factory.mktemp("telemetry")
    with ControlPlaneProcess(workdir, lease_ttl=6.0) as cp:
        agents = [AgentProcess(cp, service="echo", port=8080, name="echo-v1",
                               labels={"version": "v1"}, command=app_command("http")),
                  AgentProcess(cp, service="client", port=7000, name="client",
                               command=app_command("http"))]
        try:
            for a in agents:
                a.start()
            cp.wait_synced({a.name for a in agents})
            proxy = f"http://127.0.0.1:{agent_info(agents[1])['outboundPort']}"
            with httpx.Client(proxy=proxy, timeout=5) as http:
                wait_for(lambda: http.get("http://echo:8080/warmup").status_code == 200, 30,
                         "echo to be reachable through the mesh")
            yield Mesh(cp, proxy)
        finally:
            for a in agents:
                a.stop()
