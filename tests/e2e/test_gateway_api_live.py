"""Gateway API mesh routes through real sidecars (docs/adr/0035): a GRPCRoute on a gRPC
Service, called with a real gRPC client through the caller's sidecar — method and header
matches choose the version; an HTTPRoute's header modifier and its 500 for a rule
without backends."""

from __future__ import annotations

from collections import Counter
from typing import Any

import grpc
import httpx
import pytest

from shoal.testing.apps import GRPC_METHOD
from shoal.testing.local import AgentProcess, ControlPlaneProcess, wait_for
from tests.e2e.conftest import agent_info, app_command

pytestmark = [pytest.mark.envoy, pytest.mark.slow]

# port names as the agents register them (`shoal run --port-name`, default http): a
# workload's port is found by its service port's name
VERSION_SERVICES = """apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {name: echo-v1}
spec: {selector: {app: echo, version: v1}, ports: [{name: http, port: 50051, protocol: grpc}]}
---
apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {name: echo-v2}
spec: {selector: {app: echo, version: v2}, ports: [{name: http, port: 50051, protocol: grpc}]}
---
apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {name: web-v2}
spec: {selector: {app: web, version: v2}, ports: [{name: http, port: 8080}]}
"""
GRPC_ROUTE = """apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 50051}]
  rules:
  - matches:  # same method, one header more: first (the spec's precedence)
    - method: {service: shoal.test.Echo, method: Echo}
      headers: [{name: x-canary, value: "yes"}]
    backendRefs: [{name: echo-v2, port: 50051}]
  - matches: [{method: {service: shoal.test.Echo, method: Other}}]
    backendRefs: [{name: echo-v2, port: 50051}]
  - matches: [{method: {service: shoal.test.Echo, method: Echo}}]
    backendRefs: [{name: echo-v1, port: 50051}]
"""
HTTP_ROUTE = """apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 8080}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /broken}}]
  - matches: [{path: {type: PathPrefix, value: /v2}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-routed-by, value: httproute}]}
    backendRefs: [{name: web-v2, port: 8080}]
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    with ControlPlaneProcess(tmp_path_factory.mktemp("gwapi"), lease_ttl=6.0) as cp:
        agents = [
            *(AgentProcess(cp, service="echo", port=50051, protocol="grpc",
                           name=f"echo-{v}", labels={"version": v},
                           command=app_command("grpc")) for v in ("v1", "v2")),
            *(AgentProcess(cp, service="web", port=8080, name=f"web-{v}",
                           labels={"version": v}, command=app_command("http"))
              for v in ("v1", "v2")),
            AgentProcess(cp, service="web", port=8080, name="web-shop", namespace="shop",
                         command=app_command("http")),
            AgentProcess(cp, service="client", port=7000, name="client",
                         command=app_command("http")),
        ]
        try:
            for a in agents:
                a.start()
            cp.wait_synced({a.name for a in agents})
            with cp.client() as c:
                c.apply(VERSION_SERVICES)
            yield cp, agent_info(agents[-1])
        finally:
            for a in agents:
                a.stop()


def echo(info: dict[str, Any], metadata: tuple[tuple[str, str], ...] = ()) -> str:
    """One gRPC call to echo through the client's sidecar; who answered."""
    target = f"127.0.0.1:{info['outboundPort']}"
    with grpc.insecure_channel(target, options=[
            ("grpc.default_authority", "echo:50051")]) as channel:
        reply = channel.unary_unary(GRPC_METHOD)(b"hi", timeout=10, metadata=metadata)
    return reply.decode().split(":", 1)[0]


def test_grpc_route_chooses_the_version_by_method_and_header(mesh) -> None:
    cp, info = mesh
    assert Counter(echo(info) for _ in range(20)).keys() == {"echo-v1", "echo-v2"}
    with cp.client() as c:
        c.apply(GRPC_ROUTE)
    wait_for(lambda: all(echo(info) == "echo-v1" for _ in range(10)), 30,
             "the GRPCRoute to send Echo to v1")
    assert {echo(info, (("x-canary", "yes"),)) for _ in range(10)} == {"echo-v2"}
    assert {echo(info) for _ in range(20)} == {"echo-v1"}


def test_http_route_filters_and_a_rule_without_backends(mesh) -> None:
    cp, info = mesh
    with cp.client() as c:
        c.apply(HTTP_ROUTE)
    proxy = f"http://127.0.0.1:{info['outboundPort']}"
    with httpx.Client(proxy=proxy, timeout=10) as http:
        def seen(path: str) -> dict[str, Any]:
            body = http.get(f"http://web:8080{path}").json()
            return {"by": body["served_by"],
                    **{k.lower(): v for k, v in body["headers"].items()}}

        wait_for(lambda: seen("/v2/x").get("x-routed-by") == "httproute", 30,
                 "the HTTPRoute's header modifier")
        assert all(seen("/v2/x")["by"] == "web-v2" for _ in range(10))
        assert http.get("http://web:8080/broken/x").status_code == 500  # no backends
        # not a match of /broken (whole segments) nor of any rule: the spec's 404
        assert http.get("http://web:8080/brokenx").status_code == 404
    with cp.client() as c:  # the route's status, as `shoal get httproute web -o yaml`
        status = wait_for(lambda: c.get("HTTPRoute", "default", "web").get("status"), 30,
                          "the route's status")
    [parent] = status["parents"]
    assert {c["type"]: c["status"] for c in parent["conditions"]} == {
        "Accepted": "True", "ResolvedRefs": "True"}
    assert {c["observedGeneration"] for c in parent["conditions"]} == {1}


CROSS_NAMESPACE = """apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 8080}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /shop}}]
    backendRefs: [{name: web, namespace: shop, port: 8080}]
  - backendRefs: [{name: web-v2, port: 8080}]
"""
GRANT = """apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: routes-from-default, namespace: shop}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}]
  to: [{group: "", kind: Service}]
"""


def test_a_backend_in_another_namespace_needs_a_reference_grant(mesh) -> None:
    cp, info = mesh
    with cp.client() as c:
        c.apply(CROSS_NAMESPACE)
    proxy = f"http://127.0.0.1:{info['outboundPort']}"
    with httpx.Client(proxy=proxy, timeout=10) as http:
        wait_for(lambda: http.get("http://web:8080/shop").status_code == 500, 30,
                 "the cross-namespace backend refused without a grant (500)")
        with cp.client() as c:
            [parent] = c.get("HTTPRoute", "default", "web")["status"]["parents"]
            resolved = next(x for x in parent["conditions"] if x["type"] == "ResolvedRefs")
            assert (resolved["status"], resolved["reason"]) == ("False", "RefNotPermitted")
            c.apply(GRANT)
        wait_for(lambda: http.get("http://web:8080/shop").json()["served_by"] == "web-shop",
                 30, "the granted backend in namespace shop")
        with cp.client() as c:
            c.delete("ReferenceGrant", "shop", "routes-from-default")
        wait_for(lambda: http.get("http://web:8080/shop").status_code == 500, 30,
                 "the grant's removal to take the backend away again")


SPLIT_WITH_A_MISSING_BACKEND = """apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 8080}]
  rules:
  - backendRefs:
    - {name: web-v2, port: 8080, weight: 1}
    - {name: no-such-service, port: 8080, weight: 1}
"""


def test_the_share_of_a_missing_backend_answers_500(mesh) -> None:
    """A 50/50 split whose second backend does not exist: half the calls get 500 (the
    spec's answer for that share), the other half web-v2 — not all of them."""
    cp, info = mesh
    with cp.client() as c:
        c.apply(SPLIT_WITH_A_MISSING_BACKEND)
    proxy = f"http://127.0.0.1:{info['outboundPort']}"
    with httpx.Client(proxy=proxy, timeout=10) as http:
        def outcome() -> str:
            r = http.get("http://web:8080/")
            return r.json()["served_by"] if r.status_code == 200 else str(r.status_code)

        wait_for(lambda: "500" in {outcome() for _ in range(20)}, 30, "the missing share")
        seen = Counter(outcome() for _ in range(200))
    assert set(seen) == {"web-v2", "500"}, seen
    assert abs(seen["500"] - 100) <= 36, seen  # 50 %: 5 standard deviations
    with cp.client() as c:
        [parent] = c.get("HTTPRoute", "default", "web")["status"]["parents"]
    resolved = next(x for x in parent["conditions"] if x["type"] == "ResolvedRefs")
    assert (resolved["status"], resolved["reason"]) == ("False", "BackendNotFound")


GATEWAY = """apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, port: %d, protocol: HTTP, hostname: "*.example.com"}
  - {name: raw, port: %d, protocol: TCP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: edge-grpc}
spec:
  parentRefs: [{name: edge, sectionName: http}]
  hostnames: [grpc.example.com]
  rules:
  - matches: [{method: {service: shoal.test.Echo}}]
    backendRefs: [{name: echo-v2, port: 50051}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: edge-raw}
spec:
  parentRefs: [{name: edge, sectionName: raw}]
  rules: [{backendRefs: [{name: web-v2, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: edge-web}
spec:
  parentRefs: [{name: edge, sectionName: http}]
  hostnames: [web.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v2}}]
    backendRefs: [{name: web-v2, port: 8080}]
  - backendRefs: [{name: web, port: 8080}]
"""


def test_a_gateway_api_gateway_serves_its_routes(mesh, tmp_path) -> None:
    """Issue 15: a Gateway (Istio's class name, as Istio's task files write it) served by
    `shoal gateway run --name edge`, an HTTPRoute and a GRPCRoute (a real gRPC client)
    attached to its HTTP listener by hostname, a TCPRoute on its TCP listener, and the
    statuses as `shoal get gtw edge -o yaml` shows them."""
    from shoal.testing.local import free_port, gateway_process

    cp, _ = mesh
    port, tcp_port = free_port(), free_port()
    gw = gateway_process(cp, tmp_path, "edge", "edge-1", [port, tcp_port])
    try:
        with cp.client() as c:
            c.apply(GATEWAY % (port, tcp_port))
        cp.wait_synced({"edge-1"})

        def get(host: str, path: str) -> httpx.Response:
            return httpx.get(f"http://127.0.0.1:{port}{path}", headers={"host": host},
                             timeout=10)

        wait_for(lambda: get("web.example.com", "/v2/x").status_code == 200, 30,
                 "the route through the gateway")
        assert {get("web.example.com", "/v2/x").json()["served_by"] for _ in range(5)} \
            == {"web-v2"}
        assert get("web.example.com", "/").json()["served_by"].startswith("web-")
        # a host the route does not name, on the same listener: no route (404)
        assert get("api.example.com", "/v2/x").status_code == 404
        # a GRPCRoute on the same listener, by hostname: a real gRPC client
        def grpc_via_gateway() -> str:
            with grpc.insecure_channel(f"127.0.0.1:{port}", options=[
                    ("grpc.default_authority", "grpc.example.com")]) as channel:
                reply = channel.unary_unary(GRPC_METHOD)(b"hi", timeout=10)
            return reply.decode().split(":", 1)[0]

        wait_for(lambda: grpc_via_gateway() == "echo-v2", 30, "the GRPCRoute")
        assert {grpc_via_gateway() for _ in range(5)} == {"echo-v2"}
        # the TCP listener: connections to web-v2 whatever they carry
        raw = f"http://127.0.0.1:{tcp_port}/anything"
        wait_for(lambda: httpx.get(raw, timeout=10).status_code == 200, 30,
                 "the TCPRoute through the gateway")
        assert httpx.get(raw, timeout=10).json()["served_by"] == "web-v2"
        with cp.client() as c:
            gateway = wait_for(lambda: (g := c.get("gtw", "default", "edge")).get(
                "status", {}).get("conditions", [{}])[-1].get("status") == "True" and g,
                30, "the Gateway to be Programmed")
            route = c.get("HTTPRoute", "default", "edge-web")
        assert gateway["kind"] == "Gateway"
        assert gateway["apiVersion"] == "gateway.networking.k8s.io/v1"
        assert [(lis["name"], lis["attachedRoutes"]) for lis in
                gateway["status"]["listeners"]] == [("http", 2), ("raw", 1)]
        [parent] = route["status"]["parents"]
        assert parent["parentRef"]["kind"] == "Gateway"
        assert {x["type"]: x["status"] for x in parent["conditions"]} == {
            "Accepted": "True", "ResolvedRefs": "True"}
    finally:
        gw.stop()
