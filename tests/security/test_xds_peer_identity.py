"""Issue 11: the secure xDS port trusts certificates, not what a client declares.

A real control plane and real sidecars (agents + Envoy); the attacker is a real gRPC ADS
/ OTLP client holding a genuine mesh certificate for default/attacker (or none at all).
See docs/adr/0020-xds-peer-identity.md. The last tests are unit tests of the rules.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import json_format, struct_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2

from shoal.ca.spiffe import SpiffeId
from shoal.errors import PermissionDenied, Unauthenticated
from shoal.testing import FakeAdsClient
from shoal.testing.local import AgentProcess, ControlPlaneProcess, wait_for
from shoal.testing.pki import TestCA
from shoal.xds.node import NodeOwner, node_metadata
from shoal.xds.server.peer import PLAINTEXT, NodeClaims, NodeGuard, Peer
from shoal.xds.types import CLUSTER, LISTENER, Proxy, ProxyMetadata

pytestmark = [pytest.mark.envoy, pytest.mark.slow]
APP = [sys.executable, "-m", "shoal.testing.apps", "http"]
LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
SERVER_NAME = "shoal-control-plane"


@dataclass
class Mesh:
    cp: ControlPlaneProcess
    web: dict[str, Any]  # agent.json of the victim sidecar (node web.default, sa web)
    frontend: dict[str, Any]
    attacker: grpc.ChannelCredentials  # a genuine mesh certificate for default/attacker
    other: grpc.ChannelCredentials  # ... and one for default/other
    no_cert: grpc.ChannelCredentials


def _info(agent: AgentProcess) -> dict[str, Any]:
    path = agent.run_dir / "agent.json"
    return wait_for(lambda: path.exists() and json.loads(path.read_text()), 30, str(path))


def _credentials(cp: ControlPlaneProcess, sa: str) -> grpc.ChannelCredentials:
    """What any holder of a token for default/SA gets: a workload certificate."""
    chain, key = cp.workload_certificate("default", sa)
    return grpc.ssl_channel_credentials(cp.ca_bundle.read_bytes(), key, chain)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    # the access-log stream on: the OTLP receivers' checks are seen in /api/v1/logs
    with ControlPlaneProcess(tmp_path_factory.mktemp("peer"), lease_ttl=6.0,
                             extra=["--access-log-stream"]) as cp:
        web = AgentProcess(cp, service="web", port=8080, name="web", command=APP)
        frontend = AgentProcess(cp, service="frontend", port=7000, name="frontend",
                                command=APP)
        with web, frontend:
            cp.wait_synced({"web", "frontend"})
            yield Mesh(cp, _info(web), _info(frontend), _credentials(cp, "attacker"),
                       _credentials(cp, "other"),
                       grpc.ssl_channel_credentials(cp.ca_bundle.read_bytes()))


def _channel(target: str, creds: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
    if creds is None:
        return grpc.aio.insecure_channel(target)
    return grpc.aio.secure_channel(target, creds,
                                   options=[("grpc.ssl_target_name_override", SERVER_NAME)])


def _meta(workload: str, app_port: int = 8080, namespace: str = "default") -> dict[str, Any]:
    return node_metadata(ProxyMetadata(workload=workload, outbound_port=15001,
                                       app_ports={"http": app_port}), namespace)


async def _ads(target: str, creds: grpc.ChannelCredentials | None, node: str,
               meta: dict[str, Any], *, connected: asyncio.Event | None = None,
               release: asyncio.Event | None = None) -> grpc.StatusCode:
    """Open an ADS stream as ``node``: OK once listeners arrive (then ``connected`` is set
    and the stream kept until ``release``), else the status the stream ended with."""
    channel = _channel(target, creds)
    client = FakeAdsClient(target, node, meta, channel=channel)
    try:
        try:
            await client.start()
            await client.wait_for(lambda c: LISTENER in c.versions, timeout=15)
        except grpc.aio.AioRpcError as e:
            code = e.code()
        except asyncio.InvalidStateError:  # refused before start() wrote its requests
            code = await client._call.code()
        except Exception:  # the stream ended: its status says why
            if not client.closed:
                raise
            code = client.code or grpc.StatusCode.UNKNOWN
        else:
            code = grpc.StatusCode.OK
        if code is grpc.StatusCode.INTERNAL:
            # a write racing the server's abort fails locally with INTERNAL ("Internal
            # error from Core") and loses the server's status: ask again with one request
            return await _one_request(target, creds, node, meta)
        if code is not grpc.StatusCode.OK:
            return code
        if connected is not None:  # (code is OK here)
            connected.set()
        if release is not None:
            await release.wait()
        return grpc.StatusCode.OK
    finally:
        await client.close()
        await channel.close()


async def _one_request(target: str, creds: grpc.ChannelCredentials | None, node: str,
                       meta: dict[str, Any]) -> grpc.StatusCode:
    """The server's answer to one CDS request as NODE (OK: it sent config)."""
    request = discovery_pb2.DiscoveryRequest(
        node=base_pb2.Node(id=node, cluster="shoal",
                           metadata=json_format.ParseDict(meta, struct_pb2.Struct())),
        type_url=CLUSTER)
    async with _channel(target, creds) as channel:
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel) \
            .StreamAggregatedResources()
        try:
            await call.write(request)
            await asyncio.wait_for(call.read(), 15)
        except grpc.aio.AioRpcError as e:
            return e.code()
        finally:
            call.cancel()
    return grpc.StatusCode.OK


def _envoy_clusters(info: dict[str, Any]) -> set[str]:
    dump = httpx.get(f"http://127.0.0.1:{info['adminPort']}/config_dump",
                     params={"resource": "dynamic_active_clusters"}, timeout=5).json()
    return {c["cluster"]["name"] for c in dump["configs"]}


def _web_is_intact(m: Mesh) -> None:
    clusters = _envoy_clusters(m.web)
    assert f"inbound|{m.web['appPort']}|http" in clusters, clusters
    assert not any(c.startswith("inbound|9999|") for c in clusters), clusters
    m.cp.wait_synced({"web", "frontend"}, timeout=20)
    with httpx.Client(proxy=f"http://127.0.0.1:{m.frontend['outboundPort']}",
                      timeout=5) as http:
        assert wait_for(lambda: http.get("http://web:8080/").status_code == 200, 20,
                        "frontend -> web")


# -- ADS -------------------------------------------------------------------------------------

async def test_no_client_certificate_no_handshake(mesh: Mesh) -> None:
    target = mesh.cp.secure_xds
    assert await _ads(target, mesh.no_cert, "web.default", _meta("web", 9999)) \
        == grpc.StatusCode.UNAVAILABLE
    # a certificate from another CA, even with a mesh-looking SPIFFE ID, is no better
    rogue = TestCA("rogue").leaf(uris=["spiffe://cluster.local/ns/default/sa/web"])
    creds = grpc.ssl_channel_credentials(mesh.cp.ca_bundle.read_bytes(), rogue.key_pem,
                                         rogue.cert_pem)
    assert await _ads(target, creds, "web.default", _meta("web", 9999)) \
        == grpc.StatusCode.UNAVAILABLE
    _web_is_intact(mesh)


async def test_a_certificate_cannot_take_over_another_identitys_node(mesh: Mesh) -> None:
    target = mesh.cp.secure_xds
    # the reproduced attack: default/attacker claims the running sidecar web.default
    for _ in range(3):
        assert await _ads(target, mesh.attacker, "web.default", _meta("web", 9999)) \
            == grpc.StatusCode.PERMISSION_DENIED
    # ... nor by another namespace, nor by a node id that differs from its metadata
    assert await _ads(target, mesh.attacker, "web.prod", _meta("web", 9999, "prod")) \
        == grpc.StatusCode.PERMISSION_DENIED
    assert await _ads(target, mesh.attacker, "web.default", _meta("attacker")) \
        == grpc.StatusCode.PERMISSION_DENIED
    _web_is_intact(mesh)
    status = {p["node_id"]: p for p in mesh.cp.proxies()}
    assert status["web.default"]["connected"] and status["web.default"]["sync"] == "SYNCED"


async def test_plaintext_port_cannot_claim_a_mesh_workload(mesh: Mesh) -> None:
    assert await _ads(mesh.cp.xds, None, "web.default", _meta("web", 9999)) \
        == grpc.StatusCode.PERMISSION_DENIED
    _web_is_intact(mesh)
    # a node no mesh identity owns is still served on loopback (fake clients, benches)
    assert await _ads(mesh.cp.xds, None, "bench-1.default", _meta("nobody")) \
        == grpc.StatusCode.OK


async def test_own_identity_is_served_and_keeps_its_node(mesh: Mesh) -> None:
    target = mesh.cp.secure_xds
    node = f"attacker-{uuid.uuid4().hex[:4]}"
    connected, release = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(_ads(target, mesh.attacker, f"{node}.default",
                                      _meta(node), connected=connected, release=release))
    await asyncio.wait_for(connected.wait(), 60)  # it has its config: it holds the node
    # while it is connected, neither plaintext nor another identity may take its node
    assert await _ads(mesh.cp.xds, None, f"{node}.default", _meta(node, 9999)) \
        == grpc.StatusCode.PERMISSION_DENIED
    assert await _ads(target, mesh.other, f"{node}.default", _meta(node, 9999)) \
        == grpc.StatusCode.PERMISSION_DENIED
    release.set()
    assert await holder == grpc.StatusCode.OK


# -- telemetry -------------------------------------------------------------------------------

def _kv(key: str, value: str | int) -> common_pb2.KeyValue:
    v = common_pb2.AnyValue(int_value=value) if isinstance(value, int) \
        else common_pb2.AnyValue(string_value=value)
    return common_pb2.KeyValue(key=key, value=v)


def _forged_logs(node: str, service: str, marker: str, n: int = 1000
                 ) -> logs_service_pb2.ExportLogsServiceRequest:
    """``n`` outbound 503s to web, as if reported by ``node``'s sidecar."""
    records = [logs_pb2.LogRecord(attributes=[
        _kv("log", "access"), _kv("kind", "http"), _kv("direction", "outbound"),
        _kv("status", 503), _kv("path", marker), _kv("response_flags", "UF"),
        _kv("upstream_cluster", "outbound|8080||web.default.svc.cluster.local")])
        for _ in range(n)]
    rl = logs_pb2.ResourceLogs()
    rl.resource.attributes.extend([_kv("log_name", "shoal"), _kv("node_name", node),
                                   _kv("cluster_name", service)])
    rl.instrumentation_library_logs.add().logs.extend(records)
    return logs_service_pb2.ExportLogsServiceRequest(resource_logs=[rl])


async def _export(target: str, creds: grpc.ChannelCredentials | None,
                  req: logs_service_pb2.ExportLogsServiceRequest) -> grpc.StatusCode:
    async with _channel(target, creds) as channel:
        export = channel.unary_unary(
            LOGS_EXPORT,
            request_serializer=logs_service_pb2.ExportLogsServiceRequest.SerializeToString,
            response_deserializer=logs_service_pb2.ExportLogsServiceResponse.FromString)
        try:
            await export(req, timeout=10)
        except grpc.aio.AioRpcError as e:
            return e.code()
        return grpc.StatusCode.OK


def _logged(cp: ControlPlaneProcess, marker: str) -> int:
    with cp.http() as http:
        entries = http.get("/api/v1/logs", params={"tail": 0}).json()["entries"]
    return sum(1 for e in entries if e.get("path") == marker)


async def test_telemetry_reporter_is_the_certificates_identity(mesh: Mesh) -> None:
    cp, marker = mesh.cp, f"/forged-{uuid.uuid4().hex[:6]}"
    # no certificate: no handshake; plaintext (loopback): not a mesh identity
    assert await _export(cp.secure_xds, mesh.no_cert, _forged_logs("frontend.default",
                         "frontend", marker)) == grpc.StatusCode.UNAVAILABLE
    assert await _export(cp.xds, None, _forged_logs("frontend.default", "frontend",
                                                    marker)) == grpc.StatusCode.UNAUTHENTICATED
    # a genuine certificate for default/attacker, reporting as the frontend sidecar
    assert await _export(cp.secure_xds, mesh.attacker, _forged_logs(
        "frontend.default", "frontend", marker)) == grpc.StatusCode.PERMISSION_DENIED
    assert await _export(cp.secure_xds, mesh.attacker, _forged_logs(
        "frontend.prod", "frontend", marker)) == grpc.StatusCode.PERMISSION_DENIED
    assert _logged(cp, marker) == 0
    # reporting as itself is accepted (one entry)
    own = f"/own-{uuid.uuid4().hex[:6]}"
    assert await _export(cp.secure_xds, mesh.attacker, _forged_logs(
        "attacker-1.default", "attacker", own, n=1)) == grpc.StatusCode.OK
    assert wait_for(lambda: _logged(cp, own) == 1, 10, "the attacker's own entry")
    assert _logged(cp, marker) == 0


# -- the rules, without a network --------------------------------------------------------------

def _peer(sa: str, ns: str = "default", td: str = "cluster.local") -> Peer:
    return Peer(SpiffeId(td, ns, sa))


def _proxy(node: str, workload: str, ns: str = "default") -> Proxy:
    return Proxy(node, ns, ProxyMetadata(workload=workload, outbound_port=15001))


def test_guard_rules() -> None:
    owners = {("default", "web"): NodeOwner("web", True),
              ("default", "batch"): NodeOwner("batch", False)}
    guard = NodeGuard("cluster.local", lambda ns, w: owners.get((ns, w)),
                      trust_plaintext=False)
    assert guard.check_node(_peer("web"), _proxy("web.default", "web")) == owners[
        ("default", "web")]
    guard.check_node(_peer("x"), _proxy("new-1.default", "new-1"))  # not registered
    for peer, proxy in [
        (_peer("attacker"), _proxy("web.default", "web")),  # registered as sa web
        (_peer("web", "prod"), _proxy("web.default", "web")),  # namespace
        (_peer("web", td="evil.org"), _proxy("web.default", "web")),  # trust domain
        (_peer("web"), _proxy("api.default", "web")),  # node id is not <workload>.<ns>
        (PLAINTEXT, _proxy("web.default", "web")),  # plaintext vs a mesh identity
        (PLAINTEXT, _proxy("web.default", "nobody")),  # ... named by the node id
    ]:
        with pytest.raises(PermissionDenied):
            guard.check_node(peer, proxy)
    guard.check_node(PLAINTEXT, _proxy("batch-x.default", "batch"))  # no mesh identity
    guard.check_reporter(_peer("web"), "web.default")
    with pytest.raises(PermissionDenied):
        guard.check_reporter(_peer("attacker"), "web.default")
    with pytest.raises(PermissionDenied):
        guard.check_reporter(_peer("web"), "")
    with pytest.raises(Unauthenticated):
        guard.check_reporter(PLAINTEXT, "anything.default")
    NodeGuard().check_reporter(PLAINTEXT, "anything.default")  # --no-require-tokens


def test_claims_keep_a_node_with_its_identity() -> None:
    claims = NodeClaims()
    first = claims.claim("w.default", 1, _peer("a"), None)
    claims.claim("w.default", 2, _peer("a"), None)  # the same identity reconnecting
    with pytest.raises(PermissionDenied):
        claims.claim("w.default", 3, _peer("b"), None)  # first come, while unregistered
    with pytest.raises(PermissionDenied):
        claims.claim("w.default", 3, PLAINTEXT, None)
    # the workload got registered with sa b: b takes its node, a's streams are cut
    claims.claim("w.default", 4, _peer("b"), NodeOwner("b", True))
    assert first.revoked.is_set() and "claimed over mTLS" in first.reason
    for stream in (1, 2, 4):
        claims.release("w.default", stream)
    # plaintext streams give way to an mTLS stream, never the other way round
    loose = claims.claim("p.default", 5, PLAINTEXT, None)
    claims.claim("p.default", 6, _peer("p"), None)
    assert loose.revoked.is_set()
