"""The rate-limit service inside the control plane (the default; docs/adr/0010).

Served on the control plane's gRPC server (plaintext and TLS xDS ports), so sidecars
reach it through their bootstrap's ``xds_cluster`` with xDS's transport security; rules
come straight from the store; quotas persist in ``<data dir>/ratelimit-quotas.db`` (or
in Redis with ``--ratelimit-redis``). REST: ``/api/v1/ratelimit/{quotas,stats}``.
"""

from __future__ import annotations

from pathlib import Path

import grpc
from aiohttp import web

from shoal.ratelimit.server import open_backend
from shoal.ratelimit.service import RateLimitService
from shoal.ratelimit.source import RuleSource
from shoal.store.base import Store

REST_PREFIX = "/api/v1/ratelimit"


class EmbeddedRateLimit:
    def __init__(self, store: Store, data_dir: Path | None, redis_url: str | None = None):
        self._store = store
        self.source = RuleSource()
        self.service = RateLimitService(open_backend(redis_url, data_dir), self.source)

    def add_to(self, server: grpc.aio.Server, app: web.Application) -> None:
        self.service.add_to(server)
        self.service.add_routes(app, REST_PREFIX)

    async def run(self) -> None:
        try:
            await self.source.follow_store(self._store)
        finally:
            await self.service.backend.close()
