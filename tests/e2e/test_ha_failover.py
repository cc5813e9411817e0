"""A highly available control plane (docs/adr/0012-ha-control-plane.md): two secure
instances on one etcd with one CA and one token key; sidecars that know both keep
serving while either instance is SIGKILLed, reconnect to the survivor, get config
applied through it, and keep renewing their certificates through it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest

from shoal.ca.setup import open_ca
from shoal.testing.etcd import EtcdServer
from shoal.testing.local import AgentProcess, ControlPlaneProcess, wait_for
from tests.e2e.conftest import agent_info, app_command

pytestmark = [
    pytest.mark.envoy, pytest.mark.slow,
    pytest.mark.skipif(shutil.which("etcd") is None,
                       reason="etcd-server is not installed (apt-get install etcd-server)"),
]
WORKLOADS = {"web", "frontend"}


def route_header(value: str) -> str:
    """web's route, marking responses with the instance the config was applied through."""
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: default}}
spec:
  hosts: [web]
  http:
  - route: [{{destination: {{host: web}}}}]
    headers: {{response: {{set: {{x-applied-via: {value}}}}}}}
"""


def shared_ca(tmp_path: Path) -> list[str]:
    """Make a CA as a first control-plane start would, then `shoal ca export` it."""
    open_ca(tmp_path / "seed" / "data" / "ca", "cluster.local", 3600)
    out = subprocess.run(
        [sys.executable, "-m", "shoal", "ca", "export", "--data-dir",
         str(tmp_path / "seed" / "data"), "--out", str(tmp_path / "shared")],
        capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    flags = out.stdout.split()
    assert flags[0::2] == ["--ca-cert", "--ca-key", "--token-key"]
    assert oct((tmp_path / "shared" / "ca-key.pem").stat().st_mode & 0o777) == "0o600"
    return flags


def test_bootstrap_and_rest_client_list_every_instance() -> None:
    import asyncio

    from shoal.agent.bootstrap import xds_cluster
    from shoal.agent.config import parse_xds_list
    from shoal.agent.registration import ControlPlaneClient

    (host, port), *more = parse_xds_list("127.0.0.1:1501,127.0.0.2:1502")
    cluster = xds_cluster(host, port, more=more)
    assert cluster["type"] == "STATIC"
    assert [e["endpoint"]["address"]["socket_address"]["port_value"]
            for e in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]] == [1501, 1502]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "dead":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json={"trustBundle": ["x"], "bundleVersion": "1"})

    async def calls() -> list[str]:
        client = ControlPlaneClient(
            "https://dead:1, https://alive:2/",
            httpx.AsyncClient(transport=httpx.MockTransport(handler)))
        seen = [client.base_url]
        await client.trust_bundle()  # dead refuses: the same call goes to alive
        seen.append(client.base_url)
        await client.trust_bundle()  # and stays there
        seen.append(client.base_url)
        await client.aclose()
        return seen

    assert asyncio.run(calls()) == ["https://dead:1", "https://alive:2", "https://alive:2"]


def synced_on(cp: ControlPlaneProcess) -> set[str]:
    return {p.get("workload") for p in cp.proxies()
            if p.get("connected", True) and p.get("sync") == "SYNCED"}


def test_sidecars_fail_over_between_instances_without_a_failed_request(tmp_path) -> None:
    etcd = EtcdServer(tmp_path / "etcd")
    etcd.start()
    extra = ["--etcd-endpoints", etcd.url, *shared_ca(tmp_path)]
    a = ControlPlaneProcess(tmp_path / "a", store="etcd", lease_ttl=6.0, cert_ttl="1m",
                            extra=extra)
    b = ControlPlaneProcess(tmp_path / "b", store="etcd", lease_ttl=6.0, cert_ttl="1m",
                            extra=extra)
    agents: list[AgentProcess] = []
    try:
        a.start()
        b.start()
        assert a.ca_bundle.read_text() == b.ca_bundle.read_text()  # one trust domain
        renew = ["--renew-fraction", "0.1"]  # a new leaf every ~6 s
        # tokens minted by A; B accepts them too (shared token key)
        agents = [AgentProcess(a, also=[b], service=s, port=p, name=s, extra=renew,
                               command=app_command("http"))
                  for s, p in (("web", 8080), ("frontend", 7000))]
        for agent in agents:
            agent.start()
        wait_for(lambda: synced_on(a) | synced_on(b) >= WORKLOADS, 60,
                 "both sidecars SYNCED with one instance or the other")
        info = {agent.name: agent_info(agent) for agent in agents}
        proxy = f"http://127.0.0.1:{info['frontend']['outboundPort']}"
        wait_for(lambda: httpx.get("http://web:8080/", proxy=proxy, timeout=5)
                 .status_code == 200, 30, "frontend -> web")

        def serial() -> str:
            certs = httpx.get(f"http://127.0.0.1:{info['web']['adminPort']}/certs",
                              timeout=5).json()["certificates"]
            return next(c["serial_number"] for e in certs for c in e.get("cert_chain", []))

        failures: list[str] = []
        served: Counter[int] = Counter()
        via: list[str] = [""]
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(proxy=proxy, timeout=5) as http:
                while not stop.is_set():
                    try:
                        r = http.get("http://web:8080/")
                        served[r.status_code] += 1
                        via[0] = r.headers.get("x-applied-via", "")
                        if r.status_code != 200:
                            failures.append(f"{r.status_code} {r.text[:80]}")
                    except httpx.HTTPError as e:
                        failures.append(repr(e))

        t = threading.Thread(target=load)
        t.start()
        try:
            # Kill each instance in turn, so every sidecar loses the one it is on.
            for dead, survivor in ((a, b), (b, a)):
                if not survivor.alive():
                    survivor.start()
                before = serial()
                dead.kill()  # SIGKILL: no goodbye to the sidecars
                survivor.wait_synced(WORKLOADS, 60)
                with survivor.client() as c:  # config through the survivor reaches them
                    c.apply(route_header(survivor.workdir.name))
                wait_for(lambda s=survivor: via[0] == s.workdir.name, 30,
                         f"the route applied through {survivor.workdir.name}")
                # renewal (CSR) now goes to the survivor: the served leaf changes
                wait_for(lambda b4=before: serial() != b4, 60,
                         "web's certificate to be renewed", interval=0.5)
                status = subprocess.run(
                    [sys.executable, "-m", "shoal", "proxy-status"], capture_output=True,
                    text=True, env={**os.environ, "SHOAL_CONTROL_PLANE": survivor.url},
                    check=False)
                assert status.returncode == 0, status.stdout + status.stderr
                rows = [ln for ln in status.stdout.splitlines()
                        if ln.startswith(("web.", "frontend."))]
                assert len(rows) == 2 and all("SYNCED" in r.split()[1] for r in rows), \
                    status.stdout
        finally:
            stop.set()
            t.join()
        assert failures == []
        assert served[200] > 100
    finally:
        for agent in agents:
            agent.stop()
        a.stop()
        b.stop()
        etcd.stop()
