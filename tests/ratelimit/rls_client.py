"""A test client of a rate-limit service: one ShouldRateLimit call, plaintext or over TLS.

grpc's Python client checks the server's host name against DNS / IP SANs, and a mesh
certificate has only its SPIFFE URI (Envoy checks that instead). So TLS calls go through
a local bridge: the grpc client speaks plaintext HTTP/2 to it, and it speaks TLS to the
service with Python's ``ssl`` -- the chain verified against the mesh roots, no host name,
the client certificate given (or none). What the service does with the handshake and the
call is what a caller with that certificate would get.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from shoal.ratelimit.rules import DOMAIN, RULE_KEY


def request(rule: str, header: str, key: str, hits: int) -> rls_pb2.RateLimitRequest:
    entry = ratelimit_pb2.RateLimitDescriptor.Entry
    return rls_pb2.RateLimitRequest(domain=DOMAIN, hits_addend=hits, descriptors=[
        ratelimit_pb2.RateLimitDescriptor(entries=[
            entry(key=RULE_KEY, value=rule), entry(key=header, value=key)])])


async def call(target: str, req: rls_pb2.RateLimitRequest) -> grpc.StatusCode:
    """One plaintext call to ``target``; its status code."""
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            await rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(req, timeout=10)
        except grpc.aio.AioRpcError as e:
            return e.code()
    return grpc.StatusCode.OK


def tls_context(ca: bytes, cert: tuple[bytes, bytes] | None) -> ssl.SSLContext:
    """Verify the chain against ``ca`` (no host name); present ``cert`` (chain, key)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=ca.decode())
    ctx.check_hostname = False
    ctx.set_alpn_protocols(["h2"])
    if cert is not None:
        with tempfile.TemporaryDirectory() as d:
            chain, key = Path(d) / "chain.pem", Path(d) / "key.pem"
            chain.write_bytes(cert[0])
            key.write_bytes(cert[1])
            ctx.load_cert_chain(chain, key)
    return ctx


async def server_identity(address: str, ctx: ssl.SSLContext) -> list[str]:
    """The URI SANs of the certificate the service at ``address`` presents."""
    host, _, port = address.rpartition(":")
    _, writer = await asyncio.open_connection(host, int(port), ssl=ctx, server_hostname=None)
    try:
        peer = writer.get_extra_info("peercert") or {}
        return [v for k, v in peer.get("subjectAltName", ()) if k == "URI"]
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def tls_bridge(address: str, ctx: ssl.SSLContext) -> AsyncIterator[str]:
    """A local plaintext port whose connections are carried over TLS to ``address``."""
    host, _, port = address.rpartition(":")

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(
                host, int(port), ssl=ctx, server_hostname=None)
        except (OSError, ssl.SSLError):
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


async def call_tls(address: str, ctx: ssl.SSLContext, req: rls_pb2.RateLimitRequest
                   ) -> grpc.StatusCode:
    async with tls_bridge(address, ctx) as target:
        return await call(target, req)
