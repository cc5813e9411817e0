"""HTTP/1.1, HTTP/2 (gRPC) and raw TCP between workloads, each through two sidecars.

One control plane; servers and a client run under real agents. The test process plays
the client application: it uses the client sidecar's outbound HTTP-proxy port and its
upstream ports, exactly as an app started by `shoal run` would.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter

import httpx
import pytest

from shoal.testing.apps import grpc_echo
from shoal.testing.local import AgentProcess, ControlPlaneProcess, free_port, wait_for
from tests.e2e.conftest import agent_info, app_command

pytestmark = [pytest.mark.envoy, pytest.mark.slow]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("protocols")
    with ControlPlaneProcess(workdir, lease_ttl=6.0) as cp:
        agents = {
            "web-a": AgentProcess(cp, service="web", port=8080, name="web-a",
                                  command=app_command("http"), extra=["--xds-sotw"]),
            "web-b": AgentProcess(cp, service="web", port=8080, name="web-b",
                                  command=app_command("http"), extra=["--xds-sotw"]),
            "greeter": AgentProcess(cp, service="greeter", port=50051, protocol="grpc",
                                    name="greeter", command=app_command("grpc"),
                                    extra=["--xds-sotw"]),
            "store": AgentProcess(cp, service="store", port=9000, protocol="tcp",
                                  name="store", command=app_command("tcp"),
                                  extra=["--xds-sotw"]),
        }
        # The client's sidecar uses delta xDS (the default), the servers'
        # state-of-the-world: every test below crosses one sidecar of each flavour.
        client = AgentProcess(cp, service="client", port=7000, name="client",
                              command=app_command("http"),
                              upstreams=[f"greeter:50051={free_port()}",
                                         f"store:9000={free_port()}"])
        agents["client"] = client
        try:
            for a in agents.values():
                a.start()
            cp.wait_synced(set(agents))
            info = agent_info(client)
            # SYNCED can predate the registration of a later server: an upstream port's
            # listener exists only once its service is known, so wait for each to accept.
            for local_port in info["upstreams"].values():
                wait_for(lambda p=local_port: _accepts(p), 30, f"upstream port {local_port}")
            proxy = f"http://127.0.0.1:{info['outboundPort']}"
            # wait until both web replicas are reachable through the mesh
            with httpx.Client(proxy=proxy, timeout=5) as http:
                wait_for(lambda: {http.get("http://web:8080/").json()["served_by"]
                                  for _ in range(10)} == {"web-a", "web-b"}, 30,
                         "both web replicas to serve")
            yield cp, agents, info
        finally:
            for a in agents.values():
                a.stop()


def _accepts(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        return True


def test_both_xds_flavours_are_in_use(mesh) -> None:
    cp, _, _ = mesh
    flavours = {p["workload"]: p["flavour"] for p in cp.proxies()}
    assert flavours["client"] == "delta"
    assert flavours["web-a"] == "sotw"


def test_http1_by_service_name_through_the_sidecar_proxy(mesh) -> None:
    _, _, info = mesh
    with httpx.Client(proxy=f"http://127.0.0.1:{info['outboundPort']}", timeout=5) as http:
        resp = http.post("http://web:8080/orders?x=1", content=b"hello",
                         headers={"end-user": "jason"})
    assert resp.status_code == 200
    body = resp.json()
    assert body["path"] == "/orders?x=1" and body["body"] == "hello"
    assert body["headers"]["end-user"] == "jason"
    # both sidecars touched it: the server side sees Envoy's request id, the client side
    # reports upstream time
    assert "X-Request-Id" in body["headers"] or "x-request-id" in body["headers"]
    assert "x-envoy-upstream-service-time" in resp.headers


def test_several_replicas_share_the_load(mesh) -> None:
    _, _, info = mesh
    with httpx.Client(proxy=f"http://127.0.0.1:{info['outboundPort']}", timeout=5) as http:
        served = Counter(http.get("http://web.default:8080/").json()["served_by"]
                         for _ in range(40))
    assert set(served) == {"web-a", "web-b"}
    assert min(served.values()) >= 10  # round robin: about 20 each


def test_unknown_host_is_refused_with_a_clear_message(mesh) -> None:
    _, _, info = mesh
    with httpx.Client(proxy=f"http://127.0.0.1:{info['outboundPort']}", timeout=5) as http:
        resp = http.get("http://nowhere:1234/")
    assert resp.status_code == 404
    assert "no service matches host nowhere:1234" in resp.text


def test_grpc_through_an_upstream_port(mesh) -> None:
    _, _, info = mesh
    port = info["upstreams"]["greeter:50051"]
    assert grpc_echo(f"127.0.0.1:{port}", b"hi") == b"greeter:hi"


def test_grpc_through_the_outbound_port_by_authority(mesh) -> None:
    _, _, info = mesh
    reply = grpc_echo(f"127.0.0.1:{info['outboundPort']}", b"yo",
                      authority="greeter:50051")
    assert reply == b"greeter:yo"


def test_raw_tcp_through_an_upstream_port(mesh) -> None:
    _, _, info = mesh
    port = info["upstreams"]["store:9000"]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"ping")
        data = b""
        while not data.endswith(b"ping"):
            chunk = s.recv(100)
            assert chunk, "connection closed"
            data += chunk
    assert data == b"store:ping"


def test_stopping_a_replica_drains_without_failed_requests(mesh) -> None:
    cp, agents, info = mesh
    failures: list[str] = []
    served: Counter[str] = Counter()
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(proxy=f"http://127.0.0.1:{info['outboundPort']}",
                          timeout=5) as http:
            while not stop.is_set():
                try:
                    r = http.get("http://web:8080/")
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text[:100]}")
                    else:
                        served[r.json()["served_by"]] += 1
                except httpx.HTTPError as e:
                    failures.append(repr(e))

    t = threading.Thread(target=load)
    t.start()
    try:
        wait_for(lambda: served["web-b"] > 5, 10, "load to reach web-b")
        assert agents["web-b"].stop() == 0  # SIGTERM: deregister, drain, stop
        before = served["web-a"]
        wait_for(lambda: served["web-a"] > before + 50, 20, "traffic to continue on web-a")
    finally:
        stop.set()
        t.join()
    assert failures == []
    names = {w["metadata"]["name"] for w in cp.client().list("Workload")["items"]}
    assert "web-b" not in names  # deregistered
