"""The agent's SDS server over its Unix socket: secrets on request, pushes on change."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import grpc
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc

from shoal.agent.identity import Svid, WorkloadIdentity
from shoal.agent.registration import ControlPlaneClient
from shoal.agent.sds import SdsServer
from shoal.ca import pki
from shoal.xds.types import SECRET


def _svid(serial: str, roots: int = 1) -> Svid:
    now = pki.now()
    return Svid("spiffe://cluster.local/ns/default/sa/a", ("LEAF\n",), b"KEY\n",
                tuple(f"ROOT{i}\n" for i in range(roots)), f"b{roots}", serial, now, now, now)


async def test_sds_serves_and_pushes_secrets(tmp_path: Path) -> None:
    client = ControlPlaneClient("http://127.0.0.1:1")
    identity = WorkloadIdentity(client, "spiffe://cluster.local/ns/default/sa/a", "a-1")
    sds = SdsServer(identity, tmp_path / "sds.sock")
    await sds.start()
    try:
        assert stat.S_IMODE(sds.path.stat().st_mode) == 0o600
        async with grpc.aio.insecure_channel(f"unix:{sds.path}") as channel:
            stub = sds_pb2_grpc.SecretDiscoveryServiceStub(channel)
            requests: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()

            async def gen():  # type: ignore[no-untyped-def]
                while (r := await requests.get()) is not None:
                    yield r

            call = stub.StreamSecrets(gen())
            await requests.put(discovery_pb2.DiscoveryRequest(
                type_url=SECRET, resource_names=["default", "ROOTCA"]))
            identity._publish(_svid("aa"))  # no answer before there is a certificate
            first = await asyncio.wait_for(call.read(), 10)
            secrets = {}
            for any_ in first.resources:
                s = secret_pb2.Secret()
                any_.Unpack(s)
                secrets[s.name] = s
            assert secrets["default"].tls_certificate.private_key.inline_bytes == b"KEY\n"
            assert secrets["ROOTCA"].validation_context.trusted_ca.inline_bytes == b"ROOT0\n"
            await requests.put(discovery_pb2.DiscoveryRequest(
                type_url=SECRET, resource_names=["default", "ROOTCA"],
                response_nonce=first.nonce, version_info=first.version_info))  # ACK
            identity._publish(_svid("aa", roots=2))  # bundle rotated
            second = await asyncio.wait_for(call.read(), 10)
            assert second.version_info != first.version_info
            s = secret_pb2.Secret()
            for any_ in second.resources:
                any_.Unpack(s)
                if s.name == "ROOTCA":
                    assert s.validation_context.trusted_ca.inline_bytes == b"ROOT0\nROOT1\n"
            await requests.put(None)
            call.cancel()
    finally:
        await sds.stop()
        await client.aclose()
    assert not sds.path.exists()
