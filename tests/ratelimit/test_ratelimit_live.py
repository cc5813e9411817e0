"""Rate limits against the real thing: control plane, a separate rate-limit service,
three replicas of ``web`` behind Envoy sidecars, and a client sidecar.

Accuracy (1,000 req/s global limit, 3x offered load): h2load offers 3,000 req/s through
the client sidecar for 8 s and logs every request (start time, status, duration). Each
response is put in the epoch second it completed in; the first and last (partial)
seconds are dropped. Of the whole seconds in between, those in which the limit was in
play (at least one 429) are counted, and their 200s must be within ±5 % of 1,000 x their
number. A second without any 429 is one in which the machine completed fewer requests than
the limit (the load generator and the mesh share 2 cores), so it says nothing about the
limiter; at least five seconds must be under pressure. The service's windows are epoch
seconds too, so each whole second holds one window (give or take the few ms between the
decision and the response). Nothing else asserts on time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from shoal.testing.local import AgentProcess, ControlPlaneProcess, free_port, wait_for
from shoal.testing.pki import TestCA
from tests.e2e.conftest import agent_info, app_command

from . import rls_client
from .procs import RateLimitProcess

pytestmark = [pytest.mark.envoy, pytest.mark.slow]

# The limit must sit well below what the machine completes, or some seconds have no
# refusal and say nothing about the limiter. On 2 cores the whole path (h2load -> client
# sidecar -> 3 sidecars -> rate-limit service -> Python apps) completed 2,300-2,500 req/s
# on an idle machine in November, but only 1,100-1,350 on 2026-12-04 (idle) and about 900
# during a full suite run, where 1,000/s left too few seconds with refusals. 250/s (750/s
# offered) keeps a 3x margin; SHOAL_RL_LIMIT=1000 checks the number on a fast
# machine.
LIMIT = int(os.environ.get("SHOAL_RL_LIMIT", "250"))

RLS_IDENTITY = ("shoal-system", "ratelimit")
POLICY = """apiVersion: policy.shoal.io/v1alpha1
kind: RateLimitPolicy
metadata: {name: web-limits}
spec:
  host: web
"""


class Mesh:
    def __init__(self, cp: ControlPlaneProcess, rls: RateLimitProcess, info: dict[str, Any]):
        self.cp = cp
        self.rls = rls
        self.outbound = info["outboundPort"]
        self.http = httpx.Client(proxy=f"http://127.0.0.1:{self.outbound}", timeout=15)
        self.web_admins: list[str] = []

    def apply(self, spec: str) -> None:
        with self.cp.client() as c:
            c.apply(POLICY + spec)

    def get(self, headers: dict[str, str] | None = None, path: str = "/") -> httpx.Response:
        return self.http.get(f"http://web:8080{path}", headers=headers or {})

    def codes(self, n: int, headers: dict[str, str] | None = None) -> Counter[int]:
        return Counter(self.get(headers).status_code for _ in range(n))


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ratelimit")
    rls_port = free_port()
    # 1 % trace sampling (Istio's default): 3,000 req/s of spans at 100 % would measure
    # the trace collector, not the rate limiter.
    # The service holds its own mesh identity (ADR 0025): sidecars reach it over mTLS with
    # their workload certificates and verify it as shoal-system/ratelimit.
    cp = ControlPlaneProcess(workdir, lease_ttl=6.0,
                             extra=["--ratelimit-address", f"127.0.0.1:{rls_port}",
                                    "--ratelimit-identity", "/".join(RLS_IDENTITY),
                                    "--trace-sampling", "1"]).start()
    rls = RateLimitProcess(workdir, cp.url, port=rls_port, cp=cp, identity=RLS_IDENTITY)
    agents = [AgentProcess(cp, service="web", port=8080, name=f"web-{i}",
                           command=app_command("http")) for i in range(3)]
    agents.append(AgentProcess(cp, service="client", port=8080, name="client",
                               command=app_command("http")))
    try:
        rls.start()
        for a in agents:
            a.start()
        cp.wait_synced({a.name for a in agents})
        m = Mesh(cp, rls, agent_info(agents[-1]))
        m.web_admins = [f"http://127.0.0.1:{agent_info(a)['adminPort']}" for a in agents[:3]]
        wait_for(lambda: m.get().status_code == 200, 30, "web to serve")
        yield m
    finally:
        for a in agents:
            a.stop()
        rls.stop()
        cp.stop()


def wait_applied(mesh: Mesh, rule: str) -> None:
    """Until every web sidecar has the listener with the filter of limit/quota ``rule``
    (names are unique per test) and no connection still uses an older filter chain."""
    def applied(admin: str) -> bool:
        dump = httpx.get(f"{admin}/config_dump?resource=dynamic_listeners", timeout=5).text
        stats = httpx.get(f"{admin}/stats?filter=total_filter_chains_draining", timeout=5).text
        return f"default/web-limits/{rule}" in dump and stats.strip().endswith(": 0")
    wait_for(lambda: all(applied(a) for a in mesh.web_admins), 30, f"policy rule {rule}")


def test_per_key_limits_isolate_keys_and_answer_429_with_headers(mesh: Mesh) -> None:
    mesh.apply("""  mode: global
  limits:
  - {name: per-key, perHeader: x-api-key, requestsPerUnit: 5, unit: minute}
""")
    wait_applied(mesh, "per-key")
    a = [mesh.get({"x-api-key": "alice"}) for _ in range(8)]
    b = [mesh.get({"x-api-key": "bob"}) for _ in range(5)]
    codes_a = [r.status_code for r in a]
    # A window boundary may fall in between: then alice gets a fresh 5.
    assert codes_a.count(200) in (5, 8) and codes_a.count(429) in (0, 3), codes_a
    assert [r.status_code for r in b] == [200] * 5  # bob is untouched by alice
    assert mesh.get().status_code == 200  # no key: not counted by a per-key limit
    limited = mesh.get({"x-api-key": "alice"})
    if limited.status_code != 429:  # the minute rolled over: use it up again
        for _ in range(5):
            limited = mesh.get({"x-api-key": "alice"})
    assert limited.status_code == 429
    h = limited.headers
    assert h["x-ratelimit-limit"].startswith("5")
    assert h["x-ratelimit-remaining"] == "0"
    assert int(h["x-ratelimit-reset"]) <= 60
    assert 1 <= int(h["retry-after"]) <= 60
    assert h.get("x-envoy-ratelimited") == "true"


def test_local_limit_caps_each_sidecar(mesh: Mesh) -> None:
    mesh.apply("""  mode: local
  limits:
  - {name: each, requestsPerUnit: 10, unit: minute}
""")
    wait_applied(mesh, "each")
    # Each of the three sidecars admits at most 10 per minute-bucket refill; wait for a
    # fresh minute by reading the reset header, then count a burst.
    r = mesh.get()
    wait_for(lambda: mesh.codes(1)[200] == 1, 70, "the buckets to refill")
    served: Counter[str] = Counter()
    for _ in range(60):
        r = mesh.get()
        served[r.json()["served_by"] if r.status_code == 200 else str(r.status_code)] += 1
    per_replica = [v for k, v in served.items() if k.startswith("web-")]
    assert all(v <= 10 for v in per_replica), served
    assert served["429"] >= 60 - 30, served
    assert r.status_code == 429 and "x-ratelimit-limit" in r.headers


@pytest.mark.parametrize("failure_mode,expected", [("open", 200), ("closed", 500)])
def test_service_down_fails_as_configured(mesh: Mesh, failure_mode: str, expected: int
                                          ) -> None:
    mesh.apply(f"""  mode: global
  failureMode: {failure_mode}
  limits:
  - {{name: all, requestsPerUnit: 1000000, unit: second}}
  - {{name: tiny-{failure_mode}, perHeader: x-api-key, requestsPerUnit: 1, unit: minute}}
""")
    wait_applied(mesh, f"tiny-{failure_mode}")
    assert mesh.get().status_code == 200
    mesh.rls.stop(signal.SIGKILL)
    try:
        codes = mesh.codes(20)
        assert codes == {expected: 20}, codes
    finally:
        mesh.rls.start()
    wait_for(lambda: mesh.get().status_code == 200, 30, "service back")


def test_quota_survives_a_restart_of_the_service(mesh: Mesh, tmp_path: Path) -> None:
    mesh.apply("""  mode: global
  quotas:
  - {name: daily, perHeader: x-api-key, requests: 10, unit: day}
""")
    wait_applied(mesh, "daily")
    key = {"x-api-key": "carol"}
    assert mesh.codes(6, key) == {200: 6}
    mesh.rls.stop()
    mesh.rls.start()
    assert mesh.codes(6, key) == {200: 4, 429: 2}
    out = subprocess.run(
        [sys.executable, "-m", "shoal", "-c", mesh.cp.url, "quota", "status", "-o", "json",
         "--ratelimit", mesh.rls.url],  # with the operator token of -c (the service asks it)
        capture_output=True, text=True, timeout=60, check=True).stdout
    rows = {q["key"]: q for q in json.loads(out)}
    assert rows["carol"]["used"] == 10 and rows["carol"]["remaining"] == 0
    assert rows["carol"]["rule"] == "default/web-limits/daily"


def _used(mesh: Mesh, rule: str, key: str) -> int:
    r = httpx.get(mesh.rls.url + "/quotas", headers=mesh.rls.auth_headers(), timeout=10)
    return sum(q["used"] for q in r.raise_for_status().json()["quotas"]
               if q["rule"] == rule and q["key"] == key)


async def test_standalone_service_answers_mesh_identities_only(mesh: Mesh) -> None:
    """ADR 0025: the separate service is mTLS with its own mesh identity; a caller
    without a mesh certificate of the mesh's roots cannot move a quota."""
    mesh.apply("""  mode: global
  quotas:
  - {name: guarded, perHeader: x-api-key, requests: 10, unit: day}
""")
    wait_applied(mesh, "guarded")
    rule = "default/web-limits/guarded"
    assert mesh.get({"x-api-key": "dave"}).status_code == 200  # sidecars: mTLS
    assert _used(mesh, rule, "dave") == 1
    ca = mesh.cp.ca_bundle.read_bytes()
    rls = mesh.rls.address
    burn = rls_client.request(rule, "x-api-key", "dave", 10_000)
    one = rls_client.request(rule, "x-api-key", "dave", 1)
    genuine = rls_client.tls_context(ca, mesh.cp.workload_certificate("default", "attacker"))
    # the service presents its own mesh identity
    assert await rls_client.server_identity(rls, genuine) == [mesh.rls.spiffe_id]
    # anonymous plaintext: no TLS handshake, nothing served
    assert await rls_client.call(rls, burn) is grpc.StatusCode.UNAVAILABLE
    # TLS without a client certificate: the handshake is refused
    assert await rls_client.call_tls(rls, rls_client.tls_context(ca, None), burn) is \
        grpc.StatusCode.UNAVAILABLE
    # a certificate of another CA / trust domain: refused as well
    other = TestCA().leaf(uris=["spiffe://evil.example/ns/default/sa/web"])
    stranger = rls_client.tls_context(ca, (other.cert_pem, other.key_pem))
    assert await rls_client.call_tls(rls, stranger, burn) is grpc.StatusCode.UNAVAILABLE
    assert await rls_client.call_tls(rls, stranger, one) is grpc.StatusCode.UNAVAILABLE
    assert _used(mesh, rule, "dave") == 1
    # a genuine mesh identity is served, one hit per call at most
    assert await rls_client.call_tls(rls, genuine, burn) is grpc.StatusCode.INVALID_ARGUMENT
    assert _used(mesh, rule, "dave") == 1
    assert await rls_client.call_tls(rls, genuine, one) is grpc.StatusCode.OK
    assert _used(mesh, rule, "dave") == 2
    assert mesh.get({"x-api-key": "dave"}).status_code == 200


def test_standalone_rest_needs_an_operator_with_view(mesh: Mesh) -> None:
    assert httpx.get(mesh.rls.url + "/healthz", timeout=5).json()["ready"] is True
    for path in ("/stats", "/quotas"):
        assert httpx.get(mesh.rls.url + path, timeout=5).status_code == 401
        assert httpx.get(mesh.rls.url + path, timeout=5, headers={
            "Authorization": "Bearer not-a-token"}).status_code == 401
    with mesh.cp.client() as c:
        narrow = c.request("POST", "/api/v1/tokens", json={
            "user": "dev", "grants": ["view:default"]})["token"]
    r = httpx.get(mesh.rls.url + "/quotas", timeout=5,
                  headers={"Authorization": f"Bearer {narrow}"})
    assert r.status_code == 403, r.text
    assert httpx.get(mesh.rls.url + "/stats", headers=mesh.rls.auth_headers(),
                     timeout=5).status_code == 200


def h2load(mesh: Mesh, log: Path, rps: int, seconds: int, clients: int = 10) -> str:
    return subprocess.run(
        ["h2load", f"http://127.0.0.1:{mesh.outbound}/", "-H", ":authority: web:8080",
         "-c", str(clients), "-m", "20", f"--rps={rps // clients}", "-D", str(seconds),
         f"--log-file={log}"],
        capture_output=True, text=True, timeout=seconds + 60, check=True).stdout


def per_second(log: Path) -> dict[int, Counter[int]]:
    out: dict[int, Counter[int]] = {}
    for line in log.read_text().splitlines():
        start_us, status, dur_us = (int(x) for x in line.split("\t")[:3])
        out.setdefault((start_us + dur_us) // 1_000_000, Counter())[status] += 1
    return out


def test_global_limit_across_three_replicas_within_5_percent(mesh: Mesh, tmp_path: Path
                                                             ) -> None:
    mesh.apply(f"""  mode: global
  limits:
  - {{name: global-limit, requestsPerUnit: {LIMIT}, unit: second}}
""")
    wait_applied(mesh, "global-limit")
    log = tmp_path / "h2load.log"
    report = h2load(mesh, log, rps=3 * LIMIT, seconds=10)
    seconds = per_second(log)
    whole = sorted(seconds)[1:-1]
    pressed = [s for s in whole if seconds[s][429]]
    ok = sum(seconds[s][200] for s in pressed)
    limited = sum(seconds[s][429] for s in pressed)
    expected = LIMIT * len(pressed)
    table = {s: dict(seconds[s]) for s in whole}
    print(f"global limit {LIMIT}/s, offered {3 * LIMIT}/s: {len(whole)} whole seconds, "
          f"{len(pressed)} with refusals: {ok} admitted ({ok / max(len(pressed), 1):.0f}/s, "
          f"{100 * (ok - expected) / max(expected, 1):+.2f} %), "
          f"{limited} limited ({limited / max(len(pressed), 1):.0f}/s); {table}")
    assert len(pressed) >= 5, (table, report[-1500:], mesh.rls.stats())
    assert abs(ok - expected) <= 0.05 * expected, table
