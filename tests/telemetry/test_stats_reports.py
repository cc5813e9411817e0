"""Issue 12: proxies' stats reports come only from the proxy's own workload identity, and
whatever a holder of a mesh identity sends, a report is taken whole or refused whole
with a 4xx — never a 500, nothing of a refused report kept.

A real control plane (workload credentials required) and a real sidecar; the attacker
holds a genuine mesh certificate for default/attacker.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.telemetry.model import LATENCY_BUCKETS_MS
from shoal.telemetry.report import STATS_PATH
from shoal.testing.local import AgentProcess, ControlPlaneProcess, wait_for
from tests.e2e.conftest import agent_info, app_command

pytestmark = [pytest.mark.envoy, pytest.mark.slow]
WEB = "web.default.svc.cluster.local"


@dataclass
class Mesh:
    cp: ControlPlaneProcess
    client: dict[str, Any]
    attacker: httpx.Client  # the agents' listener, presenting default/attacker's certificate

    def counted(self, **labels: str) -> float:
        with self.cp.http() as http:
            text = http.get("/metrics").raise_for_status().text
        total = 0.0
        for line in text.splitlines():
            if line.startswith("istio_requests_total{") and all(
                    f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.split()[-1])
        return total

    def metric(self, name: str) -> float:
        with self.cp.http() as http:
            text = http.get("/metrics").raise_for_status().text
        return sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith(name + " "))




@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    workdir = tmp_path_factory.mktemp("stats-reports")
    with ControlPlaneProcess(workdir, lease_ttl=6.0) as cp:
        web = AgentProcess(cp, service="web", port=8080, name="web",
                           command=app_command("http"))
        client = AgentProcess(cp, service="client", port=8080, name="client",
                              command=app_command("http"))
        attacker_tls = cp.client_tls(workdir, "default", "attacker")
        with web, client, httpx.Client(base_url=cp.agent_url, timeout=30,
                                       verify=attacker_tls) as attacker:
            cp.wait_synced({"web", "client"})
            yield Mesh(cp, agent_info(client), attacker)


def report(node: str, requests: int = 1_000_000) -> dict[str, Any]:
    return {"node": node, "incarnation": "forged", "service": node.split(".")[0],
            "full": True, "http": [{
                "reporter": "source", "cluster": f"outbound|8080||{WEB}", "code": 200,
                "flags": "-", "requests": requests,
                "durationBuckets": [requests] * (len(LATENCY_BUCKETS_MS) + 1)}]}


def test_sidecars_report_their_own_counts(mesh: Mesh) -> None:
    with httpx.Client(proxy=f"http://127.0.0.1:{mesh.client['outboundPort']}",
                      timeout=15) as http:
        for _ in range(5):
            assert http.get("http://web:8080/").status_code == 200
    wait_for(lambda: mesh.counted(reporter="source", source_workload="client",
                                  destination_service=WEB) >= 5, 30,
             "the client's five requests")
    # the server's sidecar counted them too, with the client's verified identity
    wait_for(lambda: mesh.counted(
        reporter="destination", destination_workload="web",
        source_principal="spiffe://cluster.local/ns/default/sa/client",
        connection_security_policy="mutual_tls") >= 5, 30, "web's count of them")
    assert mesh.metric("shoal_telemetry_stats_reports_total") > 0


def test_forged_reports_are_refused(mesh: Mesh) -> None:
    before = mesh.counted(reporter="source", source_workload="client")
    forged = report("client.default")
    # the operator API without a credential
    assert httpx.post(f"{mesh.cp.url}{STATS_PATH}", json=forged, timeout=10
                      ).status_code == 401
    # the agents' listener without a client certificate
    no_cert = ssl.create_default_context(cafile=str(mesh.cp.ca_bundle))
    r = httpx.post(f"{mesh.cp.agent_url}{STATS_PATH}", json=forged, verify=no_cert,
                   timeout=10)
    assert r.status_code == 401, r.text
    # an operator (even the mesh admin) is not a proxy
    with mesh.cp.http() as http:
        assert http.post(STATS_PATH, json=forged).status_code == 401
    # a genuine mesh identity cannot report for another workload's node
    r = mesh.attacker.post(STATS_PATH, json=forged)
    assert r.status_code == 403, r.text
    assert "client" in r.json()["error"]
    assert mesh.counted(reporter="source", source_workload="client") == before
    assert mesh.metric("shoal_telemetry_refused_stats_reports_total") >= 3
    # its own node is its to report
    r = mesh.attacker.post(STATS_PATH, json=report("attacker.default", 3))
    assert r.status_code == 200, r.text
    assert mesh.counted(source_workload="attacker") == 3


FUZZ = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
SCALARS = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=300))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5)
                    | st.dictionaries(st.text(max_size=20), inner, max_size=5), max_leaves=30)
ROW_KEYS = st.sampled_from(["reporter", "cluster", "code", "flags", "peer", "grpc",
                            "requests", "requestBytes", "responseBytes", "durationBuckets",
                            "durationSumMs", "connections", "extra"])
ROW = st.dictionaries(ROW_KEYS, JSON | st.sampled_from(["source", "destination", 200, "-"]),
                      max_size=10)
REPORT = st.fixed_dictionaries(
    {"node": st.sampled_from(["attacker.default", "client.default", "", "x" * 300]) | JSON,
     "incarnation": st.sampled_from(["i1", "", "../x"]) | JSON},
    optional={"service": JSON, "full": JSON, "uptime": JSON | st.floats(),
              "http": st.lists(ROW, max_size=4) | JSON,
              "tcp": st.lists(ROW, max_size=4) | JSON, "other": JSON})


@FUZZ
@given(body=REPORT)
def test_any_report_is_taken_or_refused_with_a_4xx(mesh: Mesh, body: dict[str, Any]) -> None:
    before = mesh.counted(source_workload="client")
    # json.dumps writes NaN/Infinity as such: not JSON, but a client may send it
    r = mesh.attacker.post(STATS_PATH, content=json.dumps(body).encode(),
                           headers={"Content-Type": "application/json"})
    assert r.status_code in (200, 400, 403, 413, 415, 422), (r.status_code, r.text[:300])
    if r.status_code != 200:
        assert "error" in r.json()
    assert mesh.counted(source_workload="client") == before  # never someone else's


def test_oversized_and_non_json_reports(mesh: Mesh) -> None:
    rows = report("attacker.default")["http"] * 1001  # more rows than a report may carry
    r = mesh.attacker.post(STATS_PATH, json={**report("attacker.default"), "http": rows})
    assert r.status_code == 422, r.text
    r = mesh.attacker.post(STATS_PATH, content=b"x" * (3 * 1024 * 1024),
                           headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    r = mesh.attacker.post(STATS_PATH, content=b"{not json",
                           headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 422)
    assert httpx.get(f"{mesh.cp.url}/healthz", timeout=10).status_code == 200
