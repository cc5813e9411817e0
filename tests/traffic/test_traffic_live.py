"""Traffic management against the real thing: control plane, agents, sidecars, apps.

The test process plays the client app, sending through the client sidecar's outbound
HTTP proxy port. Statistical checks use binomial bounds of 4 standard deviations
(false-failure rate ~6e-5 per check); nothing asserts on elapsed time.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import threading
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest

from shoal.testing.local import AgentProcess, ControlPlaneProcess, wait_for
from tests.e2e.conftest import agent_info, app_command

pytestmark = [pytest.mark.envoy, pytest.mark.slow]

SUBSETS = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
"""


def vs(host: str, http: str) -> str:
    return (f"apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
            f"metadata: {{name: {host}}}\nspec:\n  hosts: [{host}]\n  http:\n{http}")


def within(count: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    sd = math.sqrt(n * p * (1 - p))
    return abs(count - n * p) <= sigmas * sd


class Mesh:
    def __init__(self, cp: ControlPlaneProcess, info: dict[str, Any]):
        self.cp = cp
        self.http = httpx.Client(proxy=f"http://127.0.0.1:{info['outboundPort']}", timeout=15)
        self.admin = f"http://127.0.0.1:{info['adminPort']}"

    def apply(self, text: str) -> None:
        with self.cp.client() as c:
            c.apply(text)

    def served(self, url: str, n: int, headers: dict[str, str] | None = None) -> Counter[str]:
        out: Counter[str] = Counter()
        for _ in range(n):
            r = self.http.get(url, headers=headers or {})
            out[r.json()["served_by"] if r.status_code == 200 else str(r.status_code)] += 1
        return out

    def stat(self, pattern: str) -> int:
        text = self.http_admin(f"/stats?filter={pattern}")
        return sum(int(v) for v in re.findall(r": (\d+)$", text, re.M))

    def http_get_slow(self) -> int:
        return self.http.get("http://web:8080/", headers={"x-echo-delay-ms": "300"}).status_code

    def http_admin(self, path: str) -> str:
        return httpx.get(self.admin + path, timeout=5).text


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("traffic")
    with ControlPlaneProcess(workdir, lease_ttl=6.0) as cp:
        def agent(name: str, service: str, **kw: Any) -> AgentProcess:
            return AgentProcess(cp, service=service, port=8080, name=name,
                                command=app_command("http"), **kw)
        agents = [
            agent("web-v1", "web", labels={"version": "v1"}),
            agent("web-v2", "web", labels={"version": "v2"}),
            agent("flaky", "flaky", env={"FAIL_EVERY": "2"}),
            agent("shadow", "shadow"),
            agent("od-good", "od"),
            agent("od-bad", "od", env={"FAIL_EVERY": "1"}),
            agent("client", "client"),
        ]
        try:
            for a in agents:
                a.start()
            cp.wait_synced({a.name for a in agents})
            m = Mesh(cp, agent_info(agents[-1]))
            m.apply(SUBSETS)
            wait_for(lambda: set(m.served("http://web:8080/", 10)) == {"web-v1", "web-v2"},
                     30, "both web versions to serve")
            yield m
        finally:
            for a in agents:
                a.stop()


def test_weighted_split_80_20(mesh: Mesh) -> None:
    mesh.apply(vs("web", """  - route:
    - {destination: {host: web, subset: v1}, weight: 80}
    - {destination: {host: web, subset: v2}, weight: 20}
"""))
    wait_for(lambda: "web-v1" in mesh.served("http://web:8080/", 1), 10, "vs applied")
    got = mesh.served("http://web:8080/", 1000)
    assert set(got) <= {"web-v1", "web-v2"}
    assert within(got["web-v2"], 1000, 0.2), got  # 4 sigma: 150..250


def test_header_match_routes_one_user(mesh: Mesh) -> None:
    mesh.apply(vs("web", """  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: web, subset: v2}}]
  - route: [{destination: {host: web, subset: v1}}]
"""))
    wait_for(lambda: mesh.served("http://web:8080/", 5, {"end-user": "jason"})
             == {"web-v2": 5}, 10, "jason to v2")
    assert mesh.served("http://web:8080/", 20, {"end-user": "jason"}) == {"web-v2": 20}
    assert mesh.served("http://web:8080/", 20) == {"web-v1": 20}


def test_retries_hide_a_flaky_upstream(mesh: Mesh) -> None:
    base = mesh.served("http://flaky:8080/", 40)
    assert base["500"] > 0  # every other request fails without retries on 5xx
    mesh.apply(vs("flaky", """  - retries: {attempts: 3, retryOn: "5xx"}
    route: [{destination: {host: flaky}}]
"""))
    wait_for(lambda: mesh.served("http://flaky:8080/", 6) == {"flaky": 6}, 10, "retries")
    assert mesh.served("http://flaky:8080/", 100) == {"flaky": 100}


def test_route_timeout_answers_504(mesh: Mesh) -> None:
    mesh.apply(vs("web", """  - timeout: 300ms
    route: [{destination: {host: web, subset: v1}}]
"""))
    slow = {"x-echo-delay-ms": "2000"}
    r = wait_for(lambda: (r := mesh.http.get("http://web:8080/", headers=slow))
                 .status_code == 504 and r, 15, "a 504")
    assert "upstream request timeout" in r.text
    assert mesh.http.get("http://web:8080/").status_code == 200


def test_mirror_copies_requests_to_the_shadow(mesh: Mesh) -> None:
    stat = r"cluster\.outbound\|8080\|\|shadow\.default\.svc\.cluster\.local\.upstream_rq_2xx"
    mesh.apply(vs("web", """  - mirror: {host: shadow}
    mirrorPercentage: {value: 100}
    route: [{destination: {host: web, subset: v1}}]
"""))
    wait_for(lambda: mesh.served("http://web:8080/", 1) and mesh.stat(stat) > 0, 15,
             "the mirror to receive a copy")
    before = mesh.stat(stat)
    assert mesh.served("http://web:8080/", 30) == {"web-v1": 30}  # answers: the primary's
    wait_for(lambda: mesh.stat(stat) - before >= 30, 10, "30 copies at the shadow")


def test_abort_half_of_the_requests(mesh: Mesh) -> None:
    mesh.apply(vs("web", """  - fault: {abort: {httpStatus: 418, percentage: {value: 50}}}
    route: [{destination: {host: web, subset: v1}}]
"""))
    wait_for(lambda: "418" in mesh.served("http://web:8080/", 20), 10, "aborts")
    got = mesh.served("http://web:8080/", 400)
    assert set(got) == {"418", "web-v1"}
    assert within(got["418"], 400, 0.5), got  # 4 sigma: 160..240


def test_cors_policy_answers_preflights_on_its_route_only(mesh: Mesh) -> None:
    """The CORS and fault filters are off unless a route enables them (per-route config):
    the route with a corsPolicy answers preflights, the other routes pass OPTIONS on."""
    mesh.apply(vs("web", """  - match: [{uri: {prefix: /api}}]
    corsPolicy:
      allowOrigins: [{exact: "https://shop.example"}]
      allowMethods: [GET, POST]
      maxAge: 24h
    route: [{destination: {host: web, subset: v1}}]
  - route: [{destination: {host: web, subset: v1}}]
"""))
    preflight = {"origin": "https://shop.example", "access-control-request-method": "POST"}

    def answered() -> httpx.Response | None:
        r = mesh.http.options("http://web:8080/api/items", headers=preflight)
        return r if r.headers.get("access-control-allow-origin") else None

    r = wait_for(answered, 15, "the CORS preflight answered by the sidecar")
    assert r.headers["access-control-allow-origin"] == "https://shop.example"
    assert "POST" in r.headers["access-control-allow-methods"]
    assert r.headers["access-control-max-age"] == "86400"
    ok = mesh.http.get("http://web:8080/api/items", headers={"origin": "https://shop.example"})
    assert ok.status_code == 200 and ok.json()["served_by"] == "web-v1"
    assert ok.headers["access-control-allow-origin"] == "https://shop.example"
    other = mesh.http.get("http://web:8080/api/items", headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    # no corsPolicy on "/": the preflight reaches the app (which has no OPTIONS: 501)
    plain = mesh.http.options("http://web:8080/", headers=preflight)
    assert plain.status_code == 501 and "access-control-allow-origin" not in plain.headers


def test_access_log_keeps_failed_requests_by_default(mesh: Mesh) -> None:
    """The default access log (``--access-log errors``) writes a line for a failed request
    and none for a successful one, on the caller's and the callee's sidecars."""
    marker = uuid.uuid4().hex[:12]
    logs = [mesh.cp.workdir / "run" / name / "envoy.log" for name in ("client", "shadow")]

    def lines() -> list[dict[str, Any]]:
        out = []
        for path in logs:
            out += [json.loads(line) for line in path.read_text().splitlines()
                    if marker in line and line.startswith("{")]
        return out

    assert mesh.http.get(f"http://shadow:8080/ok-{marker}").status_code == 200
    r = mesh.http.get(f"http://shadow:8080/missing-{marker}", headers={"x-echo-status": "404"})
    assert r.status_code == 404
    # both sidecars flush about once a second; the 200 was written before the 404 if at all
    got = wait_for(lambda: len(found := lines()) == 2 and found, 30,
                   "the 404 in both sidecars' access logs")
    assert {(e["direction"], int(e["status"])) for e in got} == {("outbound", 404),
                                                             ("inbound", 404)}
    assert all(e["path"] == f"/missing-{marker}" for e in got)


def test_circuit_breaker_overflows_under_concurrency(mesh: Mesh) -> None:
    mesh.apply(SUBSETS.replace("  host: web\n", """  host: web
  trafficPolicy:
    connectionPool: {tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1,
                     http2MaxRequests: 1}}
"""))
    mesh.apply(vs("web", """  - retries: {attempts: 0}
    route: [{destination: {host: web, subset: v1}}]
"""))
    stat = r"cluster\.outbound\|8080\|v1\|web\..*\.upstream_rq_pending_overflow"
    statuses: list[int] = []

    def burst() -> None:
        threads = [threading.Thread(target=lambda: statuses.append(mesh.http_get_slow()))
                   for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    try:
        wait_for(lambda: (burst(), mesh.stat(stat) > 0)[1], 20, "pending overflow")
        assert 503 in statuses and 200 in statuses
    finally:
        mesh.apply(SUBSETS)


def test_outlier_detection_ejects_the_failing_instance(mesh: Mesh) -> None:
    mesh.apply("""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: od}
spec:
  host: od
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 60s,
                       maxEjectionPercent: 50}
""")
    wait_for(lambda: mesh.served("http://od:8080/", 20) == {"od-good": 20}, 20,
             "the failing instance to be ejected")
    assert mesh.served("http://od:8080/", 50) == {"od-good": 50}


def test_consistent_hash_keeps_a_user_on_one_instance(mesh: Mesh) -> None:
    # Start from round robin over both instances, so that the wait below cannot be
    # satisfied by whatever routing an earlier test left behind.
    mesh.apply(SUBSETS)
    mesh.apply(vs("web", "  - route: [{destination: {host: web}}]\n"))
    wait_for(lambda: len(mesh.served("http://web:8080/", 10, {"x-user": "ann"})) == 2, 15,
             "round robin")
    mesh.apply(SUBSETS.replace("  host: web\n", """  host: web
  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}
"""))
    wait_for(lambda: len(mesh.served("http://web:8080/", 10, {"x-user": "ann"})) == 1, 15,
             "hashing")
    for user in ("ann", "bob", "cyd"):
        assert len(mesh.served("http://web:8080/", 20, {"x-user": user})) == 1
    mesh.apply(SUBSETS)


def test_no_tracer_by_default_and_trace_headers_pass_through(mesh: Mesh) -> None:
    """docs/adr/0031: without --trace-sampling the sidecars have no tracer; a caller's
    trace headers reach the app untouched (so an app that propagates them keeps its
    trace), and the traces API and `shoal traces` say that tracing is off."""
    assert '"tracing"' not in mesh.http_admin("/config_dump?resource=dynamic_listeners")
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    b3 = {"x-b3-traceid": "4bf92f3577b34da6a3ce929d0e0e4736",
          "x-b3-spanid": "00f067aa0ba902b7", "x-b3-sampled": "1"}
    r = mesh.http.get("http://shadow:8080/", headers={"traceparent": traceparent, **b3})
    seen = {k.lower(): v for k, v in r.json()["headers"].items()}
    assert seen["traceparent"] == traceparent
    assert {k: seen[k] for k in b3} == b3
    with mesh.cp.http() as http:
        body = http.get("/api/v1/traces").json()
    assert body["tracing"] == {"enabled": False, "sampling": None}
    out = subprocess.run([sys.executable, "-m", "shoal", "traces"], capture_output=True,
                         text=True, env={**os.environ, "SHOAL_CONTROL_PLANE": mesh.cp.url})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "--trace-sampling" in out.stdout


def api_service(name: str) -> str:
    """A Service with Workloads applied through the API (no agent, so no heartbeat can
    change its endpoints behind the test's back)."""
    return (f"apiVersion: mesh.shoal.io/v1alpha1\nkind: Service\nmetadata: {{name: {name}}}\n"
            f"spec:\n  selector: {{app: {name}}}\n"
            f"  ports: [{{name: http, port: 8080, protocol: http}}]\n")


def api_workload(service: str, address: str) -> str:
    return (f"apiVersion: mesh.shoal.io/v1alpha1\nkind: Workload\n"
            f"metadata: {{name: {service}-{address.rsplit('.', 1)[1]}}}\n"
            f"spec:\n  address: {address}\n  labels: {{app: {service}}}\n"
            f"  ports: {{http: 8080}}\n")


def test_a_change_is_sent_as_the_resources_it_changes(mesh: Mesh) -> None:
    """docs/adr/0036: what a proxy is sent for a change is what the change touches. A
    VirtualService change reloads that service's route configuration only (scoped
    routes: one per service port), and a workload joining one service updates that
    service's endpoints only -- the other services' resources are not sent again, which
    Envoy's own per-resource counters show. The bystander, quiet, has no agent: nothing
    else can change its endpoints while the test looks."""
    def rds(service: str) -> str:
        return rf"rds\.upstream\|{service}\.default\.svc\.cluster\.local\|8080\.config_reload$"

    def eds(service: str) -> str:
        return (rf"cluster\.outbound\|8080\|\|{service}\.default\.svc\.cluster\.local"
                r"\.update_success$")

    mesh.apply("---\n".join([api_service("lonely"), api_workload("lonely", "127.0.0.21"),
                             api_service("quiet"), api_workload("quiet", "127.0.0.31")]))
    wait_for(lambda: all(a in mesh.http_admin("/clusters")
                         for a in ("127.0.0.21:8080", "127.0.0.31:8080")), 30, "endpoints")
    quiet_routes, flaky_routes = mesh.stat(rds("quiet")), mesh.stat(rds("flaky"))
    assert quiet_routes > 0 and flaky_routes > 0  # (the counters exist)
    mesh.apply(vs("flaky", "  - route: [{destination: {host: flaky}}]\n    timeout: 7s\n"))
    wait_for(lambda: mesh.stat(rds("flaky")) > flaky_routes, 30, "flaky's routes reloaded")
    quiet_endpoints, lonely_endpoints = mesh.stat(eds("quiet")), mesh.stat(eds("lonely"))
    assert quiet_endpoints > 0
    mesh.apply(api_workload("lonely", "127.0.0.22"))
    wait_for(lambda: "127.0.0.22:8080" in mesh.http_admin("/clusters"), 30, "second endpoint")
    assert mesh.stat(eds("lonely")) > lonely_endpoints
    assert mesh.stat(eds("quiet")) == quiet_endpoints  # quiet's endpoints were not sent again
    assert mesh.stat(rds("quiet")) == quiet_routes  # nor its routes for flaky's change
