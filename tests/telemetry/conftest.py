"""Fixtures for telemetry tests: a control plane, an echo server and a client, each under
a real agent with Envoy; the test process plays the client app (its sidecar's proxy)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from shoal.telemetry import envoy_stats as es
from shoal.testing.local import AgentProcess, ControlPlaneProcess, wait_for
from tests.e2e.conftest import agent_info, app_command


@dataclass
class Mesh:
    cp: ControlPlaneProcess
    proxy: str  # the client sidecar's outbound HTTP proxy URL
    client_admin: int  # the client sidecar's Envoy admin port

    def envoy_requests(self, cluster: str) -> int:
        """What the client's Envoy itself has counted towards ``cluster`` (the truth the
        control plane's numbers must reach)."""
        text = httpx.get(f"http://127.0.0.1:{self.client_admin}/stats/prometheus",
                         params={"filter": es.ADMIN_FILTER}, timeout=5).text
        return sum(v.requests for k, v in es.parse(text).http.items()
                   if k.cluster == cluster and k.reporter == "source")

    def settled(self, cluster: str, control_plane: Callable[[], float]) -> None:
        """Wait until ``control_plane()`` (a count the control plane shows) has caught
        up with the client's Envoy's own count for ``cluster``."""
        wait_for(lambda: control_plane() == self.envoy_requests(cluster), 30,
                 f"the control plane's count of {cluster} to reach the Envoy's")

    def get(self, path: str, **kw: Any) -> Any:
        with self.cp.client() as c:
            return c.request("GET", path, **kw)

    def metrics_text(self) -> str:
        return httpx.get(f"{self.cp.url}/metrics", headers=self.cp.auth_headers, timeout=5).text


@pytest.fixture(scope="package")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    workdir = tmp_path_factory.mktemp("telemetry")
    with ControlPlaneProcess(workdir, lease_ttl=6.0, extra=["--access-log-stream"]) as cp:
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
            yield Mesh(cp, proxy, int(agent_info(agents[1])["adminPort"]))
        finally:
            for a in agents:
                a.stop()
