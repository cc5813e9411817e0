"""The rate-limit service inside the control plane (the default; docs/adr/0010).

Served on the control plane's gRPC server (plaintext and TLS xDS ports), so sidecars
reach it through their bootstrap's ``xds_cluster``: mTLS to the secure xDS port with the
workload certificate (SDS ``default``, the control plane verified against ``ROOTCA``).
Callers are held to the same trust as xDS and telemetry on that server
(:meth:`CallerPolicy.of_mesh`): a mesh identity over mTLS; plaintext callers only when the
control plane does not require tokens (docs/adr/0025). Rules come straight from the
store; quotas persist in ``<data dir>/ratelimit-quotas.db`` (or in Redis with
``--ratelimit-redis``). REST: ``/api/v1/ratelimit/{quotas,stats}``.
"""

from __future__ import annotations

from pathlib import Path

import grpc
from aiohttp import web

from shoal.ratelimit.callers import CallerPolicy
from shoal.ratelimit.server import open_backend
from shoal.ratelimit.service import RateLimitService
from shoal.ratelimit.source import RuleSource
from shoal.store.base import Store
from shoal.xds.server.peer import NodeGuard

REST_PREFIX = "/api/v1/ratelimit"


class EmbeddedRateLimit:
    def __init__(self, store: Store, data_dir: Path | None, redis_url: str | None = None):
        self._store = store
        self.source = RuleSource()
        self.service = RateLimitService(open_backend(redis_url, data_dir), self.source)

    def add_to(self, server: grpc.aio.Server, app: web.Application,
               guard: NodeGuard | None = None) -> None:
        """The service on ``server``, trusting callers as ``guard`` does (without one:
        mTLS callers only)."""
        if guard is not None:
            self.service.callers = CallerPolicy.of_mesh(guard)
        self.service.add_to(server)
        self.service.add_routes(app, REST_PREFIX)

    async def run(self) -> None:
        try:
            await self.source.follow_store(self._store)
        finally:
            await self.service.backend.close()
