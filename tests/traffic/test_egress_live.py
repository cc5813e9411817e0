"""ServiceEntry, egress policy, Sidecar scoping and TCP routes against real Envoys.

One control plane; the test process plays the app of a client sidecar (HTTP proxy) and
of a scoped sidecar. External services are plain servers started here, not in the mesh.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from shoal.testing.local import AgentProcess, ControlPlaneProcess, free_port, wait_for
from tests.e2e.conftest import agent_info, app_command

pytestmark = [pytest.mark.envoy, pytest.mark.slow]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        body = f"external {self.server.server_port} {self.headers.get('host')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def external() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port
    server.shutdown()


def entry(name: str, host: str, port: int, resolution: str = "STATIC",
          protocol: str = "HTTP") -> str:
    endpoints = ("  endpoints: [{address: 127.0.0.1}]\n" if resolution == "STATIC"
                 else "  endpoints: [{address: localhost}]\n")
    return (f"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}}}\n"
            f"spec:\n  hosts: [{host}]\n  location: MESH_EXTERNAL\n  resolution: {resolution}\n"
            f"  ports: [{{number: {port}, name: p{port}, protocol: {protocol}}}]\n{endpoints}")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, external: int) -> Iterator[dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("egress")
    tcp_port = free_port()
    with ControlPlaneProcess(workdir, lease_ttl=6.0) as cp:
        agents = [
            AgentProcess(cp, service="client", port=8080, name="client",
                         command=app_command("http"),
                         upstreams=[f"echo-tcp:{tcp_port}"]),
            AgentProcess(cp, service="web", port=8080, name="web", command=app_command("http")),
            AgentProcess(cp, service="other", port=8080, name="other-ns", namespace="team",
                         command=app_command("http")),
            AgentProcess(cp, service="scoped", port=8080, name="scoped", namespace="team",
                         labels={"scope": "narrow"}, command=app_command("http")),
            AgentProcess(cp, service="echo-tcp", port=tcp_port, name="tcp-a",
                         protocol="tcp", labels={"version": "a"}, command=app_command("tcp")),
            AgentProcess(cp, service="echo-tcp", port=tcp_port, name="tcp-b",
                         protocol="tcp", labels={"version": "b"}, command=app_command("tcp")),
        ]
        try:
            for a in agents:
                a.start()
            cp.wait_synced({a.name for a in agents})
            infos = {a.name: agent_info(a) for a in agents}
            yield {"cp": cp, "info": infos, "tcp_port": tcp_port}
        finally:
            for a in agents:
                a.stop()


def apply(mesh: dict[str, Any], text: str) -> None:
    with mesh["cp"].client() as c:
        c.apply(text)


def http_via(mesh: dict[str, Any], agent: str) -> httpx.Client:
    port = mesh["info"][agent]["outboundPort"]
    return httpx.Client(proxy=f"http://127.0.0.1:{port}", timeout=10, trust_env=False)


def test_service_entry_makes_an_external_host_reachable_by_name(mesh, external) -> None:
    with http_via(mesh, "client") as http:
        url = f"http://api.external.test:{external}/"
        r = http.get(url)
        assert r.status_code == 404 and "no service matches host" in r.text  # REGISTRY_ONLY
        apply(mesh, entry("api", "api.external.test", external))
        r = wait_for(lambda: (r := http.get(url)).status_code == 200 and r, 20, "the entry")
        assert r.text.startswith(f"external {external}")
        # DNS resolution (the endpoint is a name Envoy resolves)
        apply(mesh, entry("dns", "dns.external.test", external, resolution="DNS"))
        dns_url = f"http://dns.external.test:{external}/"
        wait_for(lambda: http.get(dns_url).status_code == 200, 20, "the DNS entry")


def test_virtual_service_routes_to_a_service_entry_host(mesh, external) -> None:
    apply(mesh, entry("api", "api.external.test", external))
    apply(mesh, """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: [api.external.test]
  http:
  - match: [{uri: {prefix: /blocked}}]
    directResponse: {status: 418}
  - route: [{destination: {host: api.external.test}}]
""")
    with http_via(mesh, "client") as http:
        base = f"http://api.external.test:{external}"
        wait_for(lambda: http.get(base + "/blocked").status_code == 418, 20, "the VS")
        assert http.get(base + "/ok").status_code == 200


def sidecar(policy: str = "REGISTRY_ONLY") -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: narrow, namespace: team}}
spec:
  workloadSelector: {{labels: {{scope: narrow}}}}
  egress: [{{hosts: ["./*"]}}]
  outboundTrafficPolicy: {{mode: {policy}}}
"""


def clusters_of(mesh: dict[str, Any], agent: str) -> set[str]:
    admin = mesh["info"][agent]["adminPort"]
    text = httpx.get(f"http://127.0.0.1:{admin}/clusters", timeout=5).text
    return {line.split("::", 1)[0] for line in text.splitlines() if "::" in line}


def test_sidecar_limits_what_a_proxy_sees(mesh) -> None:
    apply(mesh, sidecar())
    wait_for(lambda: not any(".default." in c for c in clusters_of(mesh, "scoped")), 20,
             "the scoped proxy to drop other namespaces' clusters")
    seen = clusters_of(mesh, "scoped")
    assert "outbound|8080||other.team.svc.cluster.local" in seen
    assert "outbound|8080||web.default.svc.cluster.local" in clusters_of(mesh, "other-ns")
    with http_via(mesh, "scoped") as http:
        r = http.get("http://web.default:8080/")
        assert r.status_code == 404 and "no service matches host" in r.text
        assert http.get("http://other:8080/").json()["served_by"] == "other-ns"


def test_allow_any_forwards_unknown_hosts(mesh, external) -> None:
    url = f"http://localhost:{external}/"
    apply(mesh, sidecar("ALLOW_ANY"))
    with http_via(mesh, "scoped") as http:
        r = wait_for(lambda: (r := http.get(url)).status_code == 200 and r, 20, "ALLOW_ANY")
        assert r.text.startswith(f"external {external}")
    with http_via(mesh, "client") as http:  # not under the Sidecar: still REGISTRY_ONLY
        assert http.get(url).status_code == 404


def test_tcp_route_splits_by_weight(mesh) -> None:
    port = mesh["tcp_port"]
    apply(mesh, """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo-tcp}
spec:
  host: echo-tcp
  subsets: [{name: a, labels: {version: a}}, {name: b, labels: {version: b}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo-tcp}
spec:
  hosts: [echo-tcp]
  tcp:
  - route:
    - {destination: {host: echo-tcp, subset: a}, weight: 100}
    - {destination: {host: echo-tcp, subset: b}, weight: 0}
""")
    local = mesh["info"]["client"]["upstreams"][f"echo-tcp:{port}"]

    def who() -> str:
        with socket.create_connection(("127.0.0.1", local), timeout=5) as s:
            s.sendall(b"hi")
            return s.recv(100).decode().split(":", 1)[0]

    wait_for(lambda: all(who() == "tcp-a" for _ in range(5)), 20, "all to subset a")
    apply(mesh, """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo-tcp}
spec:
  hosts: [echo-tcp]
  tcp:
  - route:
    - {destination: {host: echo-tcp, subset: a}, weight: 50}
    - {destination: {host: echo-tcp, subset: b}, weight: 50}
""")
    wait_for(lambda: "tcp-b" in {who() for _ in range(10)}, 20, "the split")
    got = Counter(who() for _ in range(100))
    assert set(got) == {"tcp-a", "tcp-b"} and min(got.values()) >= 30, got  # 4 sigma: 30..70
