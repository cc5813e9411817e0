"""The control plane's serving certificate as its client certificate (it calls agents for
their access logs): what a server sees of it, and a new context after each renewal or
root rotation."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from shoal.agent.metrics import check_control_plane
from shoal.ca.peer_cert import read_certificate
from shoal.ca.serving import SERVER_NAME, ServingCertificate
from shoal.ca.setup import open_ca


async def peer_seen(serving: ServingCertificate) -> bytes:
    """The client certificate a TLS server (the serving context itself, which asks for
    one) receives from ``serving.client_context()``."""
    got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tls = writer.get_extra_info("ssl_object")
        got.set_result(tls.getpeercert(binary_form=True) or b"")
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=serving.ssl_context())
    port = server.sockets[0].getsockname()[1]
    async with server:
        _, writer = await asyncio.open_connection("127.0.0.1", port,
                                                  ssl=serving.client_context(),
                                                  server_hostname=SERVER_NAME)
        der = await asyncio.wait_for(got, 30)
        writer.close()
    return der


async def test_client_context_presents_the_serving_certificate(tmp_path: Path) -> None:
    ca, _ = open_ca(tmp_path / "ca", "cluster.local", 3600)
    serving = ServingCertificate(ca, ["10.0.0.1", "cp.example"])
    der = await peer_seen(serving)
    peer = read_certificate(der)
    assert peer.uris == () and SERVER_NAME in peer.dns
    check_control_plane(peer)  # what an agent's /logs accepts
    first = serving.client_context()
    assert serving.client_context() is first
    assert first.verify_mode == ssl.CERT_REQUIRED and first.check_hostname

    serving.issue()  # renewed: a new context with the new certificate
    renewed = serving.client_context()
    assert renewed is not first
    assert await peer_seen(serving) != der

    ca.rotate_root()  # the bundle changed: a new context trusting it
    assert serving.client_context() is not renewed
