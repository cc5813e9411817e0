"""Issue 11 part 6: who may ask the rate-limit service, and how much one call may count.

A real grpc.aio server with the service on a plaintext port and an mTLS port (client
certificate required, as the control plane's secure xDS port), called by real gRPC
clients. Nothing here needs Envoy; tests/ratelimit/test_ratelimit_identity.py does the
same against the control plane with sidecars."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.protobuf import wrappers_pb2

from shoal.ratelimit.backend import MemoryBackend
from shoal.ratelimit.callers import MESH_ONLY, PLAINTEXT_TOO, CallerPolicy
from shoal.ratelimit.rules import DOMAIN, RULE_KEY, Rule, RuleTable
from shoal.ratelimit.service import MAX_HITS_ADDEND, RateLimitService
from shoal.testing.pki import TestCA
from shoal.xds.server.peer import NodeGuard

DAILY = Rule("default/p/daily", 10, 86400, True, "x-api-key", None, True)
SERVER_NAME = "shoal-control-plane"


def request(key: str = "alice", hits: int = 0) -> rls_pb2.RateLimitRequest:
    entry = ratelimit_pb2.RateLimitDescriptor.Entry
    return rls_pb2.RateLimitRequest(domain=DOMAIN, hits_addend=hits, descriptors=[
        ratelimit_pb2.RateLimitDescriptor(entries=[
            entry(key=RULE_KEY, value=DAILY.id), entry(key="x-api-key", value=key)])])


@dataclass
class Served:
    service: RateLimitService
    plaintext: str
    tls: str
    ca: TestCA

    def creds(self, uri: str | None) -> grpc.ChannelCredentials:
        if uri is None:  # TLS, no client certificate
            return grpc.ssl_channel_credentials(self.ca.pem)
        leaf = self.ca.leaf(uris=[uri])
        return grpc.ssl_channel_credentials(self.ca.pem, leaf.key_pem, leaf.cert_pem)

    async def used(self) -> int:
        usage = await self.service.backend.usage([DAILY], 1_800_000_000.0)
        return sum(u.used for u in usage)


async def call(target: str, req: rls_pb2.RateLimitRequest,
               creds: grpc.ChannelCredentials | None = None
               ) -> rls_pb2.RateLimitResponse | grpc.StatusCode:
    channel = (grpc.aio.insecure_channel(target) if creds is None else
               grpc.aio.secure_channel(target, creds, options=[
                   ("grpc.ssl_target_name_override", SERVER_NAME)]))
    async with channel:
        try:
            return await rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(
                req, timeout=10)
        except grpc.aio.AioRpcError as e:
            return e.code()


@pytest.fixture
async def served(request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    callers: CallerPolicy = getattr(request, "param", MESH_ONLY)
    ca = TestCA("mesh")
    server_leaf = ca.leaf(dns=[SERVER_NAME])
    service = RateLimitService(MemoryBackend(), lambda: RuleTable({DAILY.id: DAILY}),
                               clock=lambda: 1_800_000_000.0, callers=callers)
    server = grpc.aio.server()
    service.add_to(server)
    plain = server.add_insecure_port("127.0.0.1:0")
    tls = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials(
        [(server_leaf.key_pem, server_leaf.cert_pem)], root_certificates=ca.pem,
        require_client_auth=True))
    await server.start()
    try:
        yield Served(service, f"127.0.0.1:{plain}", f"127.0.0.1:{tls}", ca)
    finally:
        await server.stop(None)


async def test_anonymous_calls_are_refused_and_move_no_counter(served: Served) -> None:
    assert await call(served.plaintext, request(hits=10_000)) is \
        grpc.StatusCode.UNAUTHENTICATED
    assert await call(served.plaintext, request()) is grpc.StatusCode.UNAUTHENTICATED
    # TLS without a client certificate does not get past the handshake
    assert await call(served.tls, request(), served.creds(None)) is \
        grpc.StatusCode.UNAVAILABLE
    assert await served.used() == 0
    assert served.service.stats["refused"] == 2 and served.service.stats["requests"] == 0


async def test_a_mesh_identity_is_served_one_hit_per_call(served: Served) -> None:
    web = served.creds("spiffe://cluster.local/ns/default/sa/web")
    resp = await call(served.tls, request(), web)
    assert isinstance(resp, rls_pb2.RateLimitResponse)
    assert resp.overall_code == rls_pb2.RateLimitResponse.OK
    assert resp.statuses[0].limit_remaining == 9
    assert await call(served.tls, request(hits=MAX_HITS_ADDEND), web) != \
        grpc.StatusCode.INVALID_ARGUMENT
    # one call cannot burn the quota, with or without a certificate
    assert await call(served.tls, request(hits=10_000), web) is \
        grpc.StatusCode.INVALID_ARGUMENT
    per_descriptor = request()
    per_descriptor.descriptors[0].hits_addend.CopyFrom(wrappers_pb2.UInt64Value(value=10_000))
    assert await call(served.tls, per_descriptor, web) is grpc.StatusCode.INVALID_ARGUMENT
    assert await served.used() == 2


@pytest.mark.parametrize("served", [CallerPolicy("cluster.local")], indirect=True)
async def test_another_trust_domain_is_refused(served: Served) -> None:
    other = served.creds("spiffe://evil.example/ns/default/sa/web")
    assert await call(served.tls, request(), other) is grpc.StatusCode.PERMISSION_DENIED
    not_spiffe = served.creds("https://example.com/web")
    assert await call(served.tls, request(), not_spiffe) is grpc.StatusCode.PERMISSION_DENIED
    assert await served.used() == 0


@pytest.mark.parametrize("served", [PLAINTEXT_TOO], indirect=True)
async def test_plaintext_where_the_mesh_trusts_it_still_one_hit(served: Served) -> None:
    resp = await call(served.plaintext, request())
    assert isinstance(resp, rls_pb2.RateLimitResponse)
    assert await call(served.plaintext, request(hits=10_000)) is \
        grpc.StatusCode.INVALID_ARGUMENT
    assert await served.used() == 1


def test_the_embedded_service_trusts_callers_as_xds_does() -> None:
    required = CallerPolicy.of_mesh(NodeGuard("cluster.local", trust_plaintext=False))
    assert required == CallerPolicy("cluster.local", allow_plaintext=False)
    open_mesh = CallerPolicy.of_mesh(NodeGuard("cluster.local", trust_plaintext=True))
    assert open_mesh.allow_plaintext
