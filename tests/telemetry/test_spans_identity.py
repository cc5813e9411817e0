"""Issue 11 part 6: Zipkin spans come from mesh identities only.

Reproduced before: a forged Zipkin span POSTed to the operator API without any
credential was accepted (202). Now the sidecars post their spans to the agents' TLS
listener with their workload certificate (cluster ``shoal_zipkin``), the receiver keeps
only the spans of nodes the certificate may speak for, and the operator API wants an
operator credential. A real control plane and real sidecars; the attacker holds a genuine
mesh certificate for default/attacker (docs/adr/0025).
"""

from __future__ import annotations

import secrets
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from shoal.testing.local import AgentProcess, ControlPlaneProcess, wait_for
from tests.e2e.conftest import agent_info, app_command

pytestmark = [pytest.mark.envoy, pytest.mark.slow]


@dataclass
class Mesh:
    cp: ControlPlaneProcess
    client: dict[str, Any]
    attacker: ssl.SSLContext  # verifies the control plane, presents default/attacker's cert
    no_cert: ssl.SSLContext

    def spans(self, trace_id: str) -> list[dict[str, Any]]:
        with self.cp.http() as http:
            r = http.get(f"/api/v1/traces/{trace_id}")
        return r.json()["spans"] if r.status_code == 200 else []

    def metric(self, name: str) -> float:
        with self.cp.http() as http:
            text = http.get("/metrics").raise_for_status().text
        return sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith(name + " ") or line.startswith(name + "{"))




@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    workdir = tmp_path_factory.mktemp("spans-identity")
    with ControlPlaneProcess(workdir, lease_ttl=6.0,
                             extra=["--trace-sampling", "100"]) as cp:
        web = AgentProcess(cp, service="web", port=8080, name="web",
                           command=app_command("http"))
        client = AgentProcess(cp, service="client", port=8080, name="client",
                              command=app_command("http"))
        with web, client:
            cp.wait_synced({"web", "client"})
            yield Mesh(cp, agent_info(client), cp.client_tls(workdir, "default", "attacker"),
                       cp.client_tls(workdir))


def span(node: str, trace_id: str) -> dict[str, Any]:
    return {"traceId": trace_id, "id": secrets.token_hex(8), "kind": "SERVER",
            "name": "forged", "timestamp": 1_795_361_397_465_192, "duration": 1000,
            "localEndpoint": {"serviceName": node.split(".")[0]},
            "tags": {"node_id": node, "http.status_code": "200"}}


def test_sidecars_post_their_spans_over_mtls_with_b3(mesh: Mesh) -> None:
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    with httpx.Client(proxy=f"http://127.0.0.1:{mesh.client['outboundPort']}",
                      timeout=15) as http:
        r = http.get("http://web:8080/", headers={"x-b3-traceid": trace_id,
                                                  "x-b3-spanid": parent,
                                                  "x-b3-sampled": "1"})
    assert r.status_code == 200

    def both() -> list[dict[str, Any]] | None:
        spans = mesh.spans(trace_id)
        nodes = {s["node_id"] for s in spans}
        return spans if {"client.default", "web.default"} <= nodes else None
    spans = wait_for(both, 30, "the client's and web's spans")
    assert all(s["trace_id"] == trace_id for s in spans)  # B3 continued
    assert mesh.metric("shoal_telemetry_dropped_spans_total") == 0


def test_forged_spans_are_refused(mesh: Mesh) -> None:
    trace_id = secrets.token_hex(16)
    forged = [span("web.default", trace_id)]
    # the reproduction: the operator API without a credential
    r = httpx.post(f"{mesh.cp.url}/api/v2/spans", json=forged, timeout=10)
    assert r.status_code == 401, r.text
    # the agents' listener without a client certificate
    r = httpx.post(f"{mesh.cp.agent_url}/api/v2/spans", json=forged, verify=mesh.no_cert,
                   timeout=10)
    assert r.status_code == 401, r.text
    # a genuine mesh identity cannot report for another workload's node ...
    r = httpx.post(f"{mesh.cp.agent_url}/api/v2/spans", json=forged, verify=mesh.attacker,
                   timeout=10)
    assert r.status_code == 403, r.text
    assert mesh.spans(trace_id) == []
    assert mesh.metric("shoal_telemetry_dropped_spans_total") == 1
    # ... in a mixed batch its own span is kept and the other dropped
    mixed = [span("attacker.default", trace_id), span("web.default", trace_id)]
    r = httpx.post(f"{mesh.cp.agent_url}/api/v2/spans", json=mixed, verify=mesh.attacker,
                   timeout=10)
    assert r.status_code == 202, r.text
    assert [s["node_id"] for s in mesh.spans(trace_id)] == ["attacker.default"]
    assert mesh.metric("shoal_telemetry_dropped_spans_total") == 2
    assert "spans dropped" in mesh.cp.log_text()
    # an operator may still post spans on the operator API (the mesh admin)
    with mesh.cp.http() as http:
        r = http.post("/api/v2/spans", json=[span("web.default", trace_id)])
    assert r.status_code == 202, r.text
