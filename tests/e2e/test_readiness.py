"""A new instance is sent traffic only once its sidecar can take it: the agent registers
the workload not ready, waits until Envoy's inbound listener is active, then declares it
ready; only then is it an endpoint of its service for the other sidecars."""

from __future__ import annotations

import json

import httpx
import pytest

from shoal.testing.local import AgentProcess, ControlPlaneProcess
from tests.e2e.conftest import agent_info, app_command

pytestmark = [pytest.mark.envoy, pytest.mark.slow]


def _workload_events(cp: ControlPlaneProcess, since: int, name: str) -> list[dict]:
    """The store's Workload events for ``name`` after revision ``since`` (the watch
    replays history), up to the first that is ready."""
    out = []
    with httpx.stream("GET", f"{cp.url}/api/v1/watch", timeout=10, headers=cp.auth_headers,
                      params={"since": since, "kind": "Workload"}) as r:
        for line in r.iter_lines():
            event = json.loads(line)
            if event["resource"]["metadata"]["name"] != name:
                continue
            out.append(event)
            if "shoal.io/ready" not in event["resource"]["metadata"]["annotations"]:
                return out
    return out


def test_an_instance_becomes_an_endpoint_once_its_sidecar_listens(tmp_path) -> None:
    with ControlPlaneProcess(tmp_path) as cp:
        client = AgentProcess(cp, service="client", port=7070, name="client-1",
                              command=app_command("http"))
        with client:
            cp.wait_synced({"client-1"})
            with cp.http() as http:
                since = http.get("/api/v1/resources").json()["revision"]
            web = AgentProcess(cp, service="web", port=8080, name="web-1",
                               command=app_command("http"))
            with web:
                proxies = cp.wait_synced({"client-1", "web-1"})  # web-1 ready, too
                assert next(p for p in proxies if p["workload"] == "web-1")["ready"] is True
                events = _workload_events(cp, since, "web-1")
                first, last = events[0], events[-1]
                assert first["resource"]["metadata"]["annotations"]["shoal.io/ready"] == "false"
                assert "shoal.io/ready" not in last["resource"]["metadata"]["annotations"]
                # once ready, the client's sidecar has it as an endpoint and reaches it
                proxy = f"http://127.0.0.1:{agent_info(client)['outboundPort']}"
                with httpx.Client(proxy=proxy, timeout=10) as http:
                    assert http.get("http://web:8080/").status_code == 200
