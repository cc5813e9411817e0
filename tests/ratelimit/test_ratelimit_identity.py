"""Issue 11 part 6, against the real thing: the control plane's own rate-limit service
(the default), sidecars that reach it over their mTLS xDS connection, and callers that
are not sidecars.

Reproduced before: one unauthenticated ShouldRateLimit with ``hits_addend=10000`` on the
xDS port used up a user's persisted daily quota. Now the limits still work through the
sidecars, and an anonymous caller is refused (UNAUTHENTICATED) without moving a counter;
a caller with a genuine mesh certificate cannot count more than one hit per call.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from shoal.ratelimit.rules import DOMAIN, RULE_KEY
from shoal.testing.local import AgentProcess, ControlPlaneProcess, wait_for
from tests.e2e.conftest import agent_info, app_command

pytestmark = [pytest.mark.envoy, pytest.mark.slow]

RULE = "default/web-quota/daily"
POLICY = """apiVersion: policy.shoal.io/v1alpha1
kind: RateLimitPolicy
metadata: {name: web-quota}
spec:
  host: web
  mode: global
  failureMode: closed
  quotas:
  - {name: daily, perHeader: x-api-key, requests: 10, unit: day}
"""
SERVER_NAME = "shoal-control-plane"


@dataclass
class Mesh:
    cp: ControlPlaneProcess
    client: dict[str, Any]  # agent.json of the client sidecar
    web_admin: str

    def get(self, key: str) -> int:
        with httpx.Client(proxy=f"http://127.0.0.1:{self.client['outboundPort']}",
                          timeout=15) as http:
            return http.get("http://web:8080/", headers={"x-api-key": key}).status_code

    def used(self, key: str) -> int:
        with self.cp.http() as http:
            quotas = http.get("/api/v1/ratelimit/quotas").raise_for_status().json()["quotas"]
        return sum(q["used"] for q in quotas if q["rule"] == RULE and q["key"] == key)


def _mesh_credentials(cp: ControlPlaneProcess, sa: str) -> grpc.ChannelCredentials:
    """What any holder of a token for default/SA gets: a genuine workload certificate."""
    chain, key = cp.workload_certificate("default", sa)
    return grpc.ssl_channel_credentials(cp.ca_bundle.read_bytes(), key, chain)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with ControlPlaneProcess(tmp_path_factory.mktemp("rl-identity"), lease_ttl=6.0) as cp:
        web = AgentProcess(cp, service="web", port=8080, name="web",
                           command=app_command("http"))
        client = AgentProcess(cp, service="client", port=8080, name="client",
                              command=app_command("http"))
        with web, client:
            cp.wait_synced({"web", "client"})
            with cp.client() as c:
                c.apply(POLICY)
            admin = f"http://127.0.0.1:{agent_info(web)['adminPort']}"

            def applied() -> bool:
                dump = httpx.get(f"{admin}/config_dump?resource=dynamic_listeners",
                                 timeout=5).text
                return RULE in dump
            wait_for(applied, 30, "the quota filter in web's sidecar")
            m = Mesh(cp, agent_info(client), admin)
            wait_for(lambda: m.get("warmup") == 200, 30, "web to serve through the quota")
            yield m


def _request(key: str, hits: int) -> rls_pb2.RateLimitRequest:
    entry = ratelimit_pb2.RateLimitDescriptor.Entry
    return rls_pb2.RateLimitRequest(domain=DOMAIN, hits_addend=hits, descriptors=[
        ratelimit_pb2.RateLimitDescriptor(entries=[
            entry(key=RULE_KEY, value=RULE), entry(key="x-api-key", value=key)])])


async def _call(target: str, creds: grpc.ChannelCredentials | None, key: str, hits: int
                ) -> grpc.StatusCode:
    channel = (grpc.aio.insecure_channel(target) if creds is None else
               grpc.aio.secure_channel(target, creds, options=[
                   ("grpc.ssl_target_name_override", SERVER_NAME)]))
    async with channel:
        try:
            await rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(
                _request(key, hits), timeout=10)
        except grpc.aio.AioRpcError as e:
            return e.code()
    return grpc.StatusCode.OK


def test_quota_works_through_the_sidecars_over_mtls(mesh: Mesh) -> None:
    codes = [mesh.get("carol") for _ in range(12)]
    assert codes == [200] * 10 + [429] * 2, codes
    # failureMode closed: a refused call would have been a 500, not a 200 or a 429
    assert mesh.used("carol") == 10


async def test_anonymous_caller_cannot_burn_a_quota(mesh: Mesh) -> None:
    assert mesh.get("alice") == 200
    assert mesh.used("alice") == 1
    # the reproduction: plaintext, no identity, 10,000 hits in one call
    assert await _call(mesh.cp.xds, None, "alice", 10_000) is \
        grpc.StatusCode.UNAUTHENTICATED
    assert await _call(mesh.cp.xds, None, "alice", 1) is grpc.StatusCode.UNAUTHENTICATED
    # TLS without a client certificate: no handshake on the secure port
    no_cert = grpc.ssl_channel_credentials(mesh.cp.ca_bundle.read_bytes())
    assert await _call(mesh.cp.secure_xds, no_cert, "alice", 1) is \
        grpc.StatusCode.UNAVAILABLE
    # a genuine mesh identity is served, but one call counts for one hit at most
    attacker = _mesh_credentials(mesh.cp, "attacker")
    assert await _call(mesh.cp.secure_xds, attacker, "alice", 10_000) is \
        grpc.StatusCode.INVALID_ARGUMENT
    assert mesh.used("alice") == 1
    assert await _call(mesh.cp.secure_xds, attacker, "alice", 1) is grpc.StatusCode.OK
    assert mesh.used("alice") == 2
    assert mesh.get("alice") == 200  # alice still has her quota
    with mesh.cp.http() as http:
        stats = http.get("/api/v1/ratelimit/stats").raise_for_status().json()
    assert stats["refused"] == 3
