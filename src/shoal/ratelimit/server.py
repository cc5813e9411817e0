"""``shoal ratelimit serve``: the rate-limit service as a process of its own.

gRPC (Envoy's RateLimitService) on ``--port``, REST (``/healthz``, ``/stats``,
``/quotas``) on ``--http-port``; rules from the control plane's REST watch (operator API).

gRPC is mTLS (docs/adr/0025): the service holds a mesh identity of its own
(:mod:`shoal.ratelimit.identity`: a workload certificate obtained and renewed like an
agent's), requires a client certificate chaining to the mesh trust bundle and answers
only identities of its trust domain (the sidecars, with their workload certificates).
``/stats`` and ``/quotas`` need an operator token with view mesh-wide, checked by the
control plane (:mod:`shoal.ratelimit.operators`); ``/healthz`` is public.

Without an identity (``ServeConfig.identity`` None: ``--insecure-plaintext``, for
development) gRPC is plaintext and answers any caller; the CLI then keeps it on loopback.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import grpc
from aiohttp import web

from shoal.cli.credentials import token_for
from shoal.errors import Unavailable
from shoal.ratelimit.backend import Backend, MemoryBackend
from shoal.ratelimit.callers import PLAINTEXT_TOO
from shoal.ratelimit.descriptors import DescriptorTable
from shoal.ratelimit.identity import IdentityConfig, ServiceIdentity
from shoal.ratelimit.operators import OperatorCheck
from shoal.ratelimit.service import RateLimitService
from shoal.ratelimit.source import FixedRules, RuleSource

log = logging.getLogger(__name__)

QUOTA_FILE = "ratelimit-quotas.db"
GRPC_OPTIONS = [("grpc.max_concurrent_streams", 100_000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.max_pings_without_data", 0)]


def open_backend(redis_url: str | None, state_dir: Path | None) -> Backend:
    """Redis when a URL is given; else in memory with quotas in ``state_dir`` (SQLite)."""
    if redis_url:
        from shoal.ratelimit.redis_backend import RedisBackend
        return RedisBackend(redis_url)
    return MemoryBackend(state_dir / QUOTA_FILE if state_dir is not None else None)


@dataclass(frozen=True)
class ServeConfig:
    control_plane: str
    host: str = "127.0.0.1"
    port: int = 15090
    http_port: int = 15091
    redis_url: str | None = None
    state_dir: Path | None = None
    identity: IdentityConfig | None = None  # None: plaintext, any caller (development)
    # rules in Envoy's rate-limit service format instead of the control plane's
    # RateLimitPolicies (Istio's global rate-limit task, EnvoyFilter samples)
    descriptors: DescriptorTable | None = None


async def serve(config: ServeConfig) -> None:
    identity = ServiceIdentity(config.identity) if config.identity is not None else None
    if identity is not None:
        try:
            svid = await identity.obtain()
        except BaseException:
            await identity.aclose()
            raise
        log.info("rate-limit service identity", extra={"spiffe_id": svid.spiffe_id})
    source: RuleSource | FixedRules = (RuleSource() if config.descriptors is None
                                       else FixedRules(config.descriptors))
    backend = open_backend(config.redis_url, config.state_dir)
    service = RateLimitService(backend, source, callers=identity.callers()
                               if identity is not None else PLAINTEXT_TOO)
    server = grpc.aio.server(options=GRPC_OPTIONS)
    service.add_to(server)
    address = f"{config.host}:{config.port}"
    bound = (server.add_secure_port(address, identity.grpc_credentials())
             if identity is not None else server.add_insecure_port(address))
    if bound == 0:
        raise Unavailable(f"cannot listen for gRPC on {address}")
    app = web.Application()
    operators = OperatorCheck(config.control_plane)

    async def operator_only(request: web.Request) -> None:
        await operators.require_view(request.headers.get("Authorization"),
                                     f"GET {request.path}")

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"ready": source.ready.is_set(),
                                  "revision": source.revision})

    app.router.add_get("/healthz", healthz)
    service.add_routes(app, guard=operator_only)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.http_port, reuse_address=True)
    try:
        async with asyncio.TaskGroup() as tg:
            follow = tg.create_task(source.follow_rest(
                config.control_plane, credential=lambda: token_for(config.control_plane))
            ) if isinstance(source, RuleSource) else None
            renew = tg.create_task(identity.run()) if identity is not None else None
            await source.ready.wait()
            await server.start()
            await site.start()
            log.info("rate-limit service ready", extra={
                "grpc": f"{config.host}:{config.port}", "http": f"{config.host}:{config.http_port}",
                "backend": "redis" if config.redis_url else "memory",
                "mtls": identity is not None})
            try:
                await asyncio.Event().wait()
            finally:
                if follow is not None:
                    follow.cancel()
                if renew is not None:
                    renew.cancel()
    finally:
        await server.stop(grace=0.5)
        await runner.cleanup()
        await backend.close()
        if identity is not None:
            await identity.aclose()
