"""``shoal ratelimit serve``: the rate-limit service as a process of its own.

gRPC (Envoy's RateLimitService) on ``--port``, REST (``/healthz``, ``/stats``,
``/quotas``) on ``--http-port``; rules from the control plane's REST watch.

Both are plaintext and unauthenticated (any caller that reaches the gRPC port is served,
at most one hit per request): keep the service on loopback or a private network that only
the sidecars reach. ``shoal ratelimit serve`` refuses any other ``--host`` unless
``--insecure-any-host`` (docs/adr/0025). The embedded service (the default) needs no such
care: it answers mesh identities over mTLS.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

import grpc
from aiohttp import web

from shoal.cli.credentials import token_for
from shoal.errors import Unavailable
from shoal.ratelimit.backend import Backend, MemoryBackend
from shoal.ratelimit.callers import PLAINTEXT_TOO
from shoal.ratelimit.service import RateLimitService
from shoal.ratelimit.source import RuleSource

log = logging.getLogger(__name__)

QUOTA_FILE = "ratelimit-quotas.db"
GRPC_OPTIONS = [("grpc.max_concurrent_streams", 100_000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.max_pings_without_data", 0)]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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


async def serve(config: ServeConfig) -> None:
    source = RuleSource()
    backend = open_backend(config.redis_url, config.state_dir)
    service = RateLimitService(backend, source, callers=PLAINTEXT_TOO)
    server = grpc.aio.server(options=GRPC_OPTIONS)
    service.add_to(server)
    if server.add_insecure_port(f"{config.host}:{config.port}") == 0:
        raise Unavailable(f"cannot listen for gRPC on {config.host}:{config.port}")
    app = web.Application()

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"ready": source.ready.is_set(),
                                  "revision": source.revision})

    app.router.add_get("/healthz", healthz)
    service.add_routes(app)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.http_port, reuse_address=True)
    try:
        async with asyncio.TaskGroup() as tg:
            follow = tg.create_task(source.follow_rest(
                config.control_plane, credential=lambda: token_for(config.control_plane)))
            await source.ready.wait()
            await server.start()
            await site.start()
            log.info("rate-limit service ready", extra={
                "grpc": f"{config.host}:{config.port}", "http": f"{config.host}:{config.http_port}",
                "backend": "redis" if config.redis_url else "memory"})
            try:
                await asyncio.Event().wait()
            finally:
                follow.cancel()
    finally:
        await server.stop(grace=0.5)
        await runner.cleanup()
        await backend.close()
