"""Cross-cluster discovery between two real control planes (loopback, no root needed):
remote secrets, the authenticated discovery stream, stale-but-kept remote resources."""

from __future__ import annotations

import json
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shoal.testing.local import ControlPlaneProcess, wait_for

from .topology import SHOAL

pytestmark = [pytest.mark.slow]

WEB = """apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {name: web-1, annotations: {shoal.io/registered-by: agent}}
spec: {address: 10.2.0.2, labels: {app: web}, ports: {http: 8080}}
---
apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{name: http, port: 8080}]}
"""


def shoal(*args: str, input: str | None = None) -> str:
    return subprocess.run([*SHOAL, *args], check=True, capture_output=True, text=True,
                          input=input, timeout=60).stdout


@pytest.fixture
def planes(tmp_path: Path) -> Iterator[tuple[ControlPlaneProcess, ControlPlaneProcess]]:
    ca = tmp_path / "ca"
    shoal("ca", "create-root", "--out", str(ca / "root"))
    cps = []
    try:
        for name in ("a", "b"):
            shoal("ca", "create-intermediate", "--root", str(ca / "root"), "--cluster", name,
                  "--out", str(ca / name))
            d = ca / name
            cps.append(ControlPlaneProcess(tmp_path / name, extra=[
                "--cluster", name, "--network", f"net-{name}", "--ca-cert",
                str(d / "ca-cert.pem"), "--ca-key", str(d / "ca-key.pem"), "--ca-chain",
                str(d / "ca-chain.pem")]).start())
        yield cps[0], cps[1]
    finally:
        for cp in cps:
            cp.stop()


def remote(cp: ControlPlaneProcess, name: str) -> dict:
    with cp.client() as c:
        return next(x for x in c.request("GET", "/api/v1/clusters")["clusters"]
                    if x["name"] == name)


def test_a_follows_b_and_keeps_b_when_it_goes(planes) -> None:  # type: ignore[no-untyped-def]
    a, b = planes
    b.client().apply(WEB)
    secret = json.loads(shoal("-c", b.url, "cluster", "remote-secret"))
    assert secret["name"] == "b" and secret["network"] == "net-b"
    assert secret["url"].startswith("https://")  # b's agent TLS listener
    shoal("-c", a.url, "cluster", "add", "-f", "-", input=json.dumps(secret))
    got = wait_for(lambda: (r := remote(a, "b"))["state"] == "reachable" and r["workloads"]
                   and r, 30, "a to sync b")
    assert (got["workloads"], got["services"], got["network"]) == (1, 1, "net-b")
    # a's own store is untouched: b's workload is only in a's view
    with a.client() as c:
        assert c.list("Workload")["items"] == []

    b.stop()  # unreachable: kept, marked stale
    got = wait_for(lambda: (r := remote(a, "b"))["state"] == "stale" and r, 30, "stale")
    assert got["workloads"] == 1 and got["lastError"]
    b.start()
    wait_for(lambda: remote(a, "b")["state"] == "reachable", 30, "b back")

    a.restart()  # the remote secret survives a restart
    wait_for(lambda: remote(a, "b")["state"] == "reachable", 30, "b after a's restart")
    shoal("-c", a.url, "cluster", "remove", "b")
    with a.client() as c:
        assert [x["name"] for x in c.request("GET", "/api/v1/clusters")["clusters"]] == ["a"]


def test_the_discovery_stream_needs_the_token(planes) -> None:  # type: ignore[no-untyped-def]
    a, b = planes
    secret = json.loads(shoal("-c", b.url, "cluster", "remote-secret"))
    secret["token"] = "not-a-token"
    shoal("-c", a.url, "cluster", "add", "-f", "-", input=json.dumps(secret))
    got = wait_for(lambda: (r := remote(a, "b"))["lastError"] and r, 30, "a refused")
    assert got["state"] == "unreachable" and "401" in got["lastError"]
    # adding a cluster is an operator action: refused on the agent (TLS) listener
    r = httpx.post(f"{a.agent_url}/api/v1/clusters", json=secret, timeout=10,
                   verify=ssl.create_default_context(cafile=str(a.ca_bundle)))
    assert r.status_code == 403


def test_a_reads_b_s_telemetry_with_the_remote_secret_only(planes) -> None:  # type: ignore[no-untyped-def]
    a, b = planes
    secret = json.loads(shoal("-c", b.url, "cluster", "remote-secret"))
    tls = ssl.create_default_context(cafile=str(b.ca_bundle))
    with httpx.Client(base_url=secret["url"], verify=tls, timeout=10) as http:
        # b's own edges and spans, for holders of the token only
        assert http.get("/api/v1/discovery/edges").status_code == 401
        auth = {"Authorization": f"Bearer {secret['token']}"}
        edges = http.get("/api/v1/discovery/edges", params={"window": 60}, headers=auth)
        assert edges.status_code == 200 and edges.json() == {
            "cluster": "b", "window": 60.0, "edges": []}
        trace = http.get("/api/v1/discovery/traces/0af7651916cd43dd8448eb211c80319c",
                         headers=auth)
        assert trace.json() == {"cluster": "b", "spans": []}
        assert http.get("/api/v1/discovery/traces").status_code == 401
        listed = http.get("/api/v1/discovery/traces", params={"limit": 5}, headers=auth)
        assert listed.json() == {"cluster": "b", "traces": []}
        assert http.get("/api/v1/topology", headers=auth).status_code == 403  # operator's
    shoal("-c", a.url, "cluster", "add", "-f", "-", input=json.dumps(secret))
    topo = wait_for(lambda: (t := httpx.get(f"{a.url}/api/v1/topology", headers=a.auth_headers,
                                                timeout=10).json())
                    ["remoteClusters"] == {"b": "ok"} and t, 30, "a's topology to ask b")
    assert topo["edges"] == []
    b.stop()  # a remote that does not answer: a partial view, said so (after the
    # 2 s for which a's last answer from b is reused)
    wait_for(lambda: httpx.get(f"{a.url}/api/v1/topology", headers=a.auth_headers,
                                                timeout=10).json()
             ["remoteClusters"]["b"] != "ok", 30, "a's topology to report b missing")
