"""The agent's SDS server over its Unix socket: secrets on request, pushes on change."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

from sds_stream import sds_stream, secrets_of

from shoal.agent.identity import Svid, WorkloadIdentity
from shoal.agent.registration import ControlPlaneClient
from shoal.agent.sds import SdsServer
from shoal.ca import pki


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
        async with sds_stream(sds.path) as stream:
            await stream.request(["default", "ROOTCA"])
            identity._publish(_svid("aa"))  # no answer before there is a certificate
            first = await asyncio.wait_for(stream.read(), 10)
            secrets = secrets_of(first)
            assert secrets["default"].tls_certificate.private_key.inline_bytes == b"KEY\n"
            assert secrets["ROOTCA"].validation_context.trusted_ca.inline_bytes == b"ROOT0\n"
            await stream.request(["default", "ROOTCA"], ack=first)
            identity._publish(_svid("aa", roots=2))  # bundle rotated
            second = await asyncio.wait_for(stream.read(), 10)
            assert second.version_info != first.version_info
            rotated = secrets_of(second)
            if "ROOTCA" in rotated:
                assert rotated["ROOTCA"].validation_context.trusted_ca.inline_bytes == \
                    b"ROOT0\nROOT1\n"
    finally:
        await sds.stop()
        await client.aclose()
    assert not sds.path.exists()
