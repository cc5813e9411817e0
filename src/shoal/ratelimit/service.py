"""The rate-limit service: Envoy's ``envoy.service.ratelimit.v3.RateLimitService`` over
gRPC, plus a small REST surface (``/healthz``, ``/stats``, ``/quotas``).

Rules come from a :class:`~shoal.ratelimit.source.RuleSource`; counters from a
:class:`~shoal.ratelimit.backend.Backend`. A backend failure answers the RPC with
UNAVAILABLE, so each sidecar applies its policy's ``failureMode``.

Callers are checked first (:mod:`shoal.ratelimit.callers`: a mesh identity over mTLS,
plaintext only where the mesh trusts it): a refused call is UNAUTHENTICATED or
PERMISSION_DENIED and moves no counter. A request may count for at most
:data:`MAX_HITS_ADDEND` hits (Envoy sends 0, meaning 1): one call cannot use up a quota;
more is INVALID_ARGUMENT, also without moving a counter (docs/adr/0025).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable

import grpc
from aiohttp import web
from envoy.config.core.v3 import base_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.protobuf import duration_pb2

from shoal.errors import (
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    ValidationError,
    Violation,
)
from shoal.ratelimit.backend import Backend, Check
from shoal.ratelimit.callers import MESH_ONLY, CallerPolicy
from shoal.ratelimit.descriptors import DescriptorTable
from shoal.ratelimit.rules import RuleTable
from shoal.xds.server import grpc_code

log = logging.getLogger(__name__)

Code = rls_pb2.RateLimitResponse.Code
_UNITS = {1: rls_pb2.RateLimitResponse.RateLimit.SECOND,
          60: rls_pb2.RateLimitResponse.RateLimit.MINUTE,
          3600: rls_pb2.RateLimitResponse.RateLimit.HOUR,
          86400: rls_pb2.RateLimitResponse.RateLimit.DAY}
MAX_HITS_ADDEND = 1  # hits one request may count for (0, Envoy's default, means 1)


class RateLimitService(rls_pb2_grpc.RateLimitServiceServicer):
    def __init__(self, backend: Backend, rules: Callable[[], RuleTable | DescriptorTable],
                 clock: Callable[[], float] = time.time, *,
                 callers: CallerPolicy = MESH_ONLY):
        self.backend = backend
        self._rules = rules
        self._clock = clock
        self.callers = callers
        self.stats = {"requests": 0, "over_limit": 0, "ok": 0, "errors": 0, "refused": 0}

    def add_to(self, server: grpc.aio.Server) -> None:
        rls_pb2_grpc.add_RateLimitServiceServicer_to_server(self, server)

    async def decide(self, request: rls_pb2.RateLimitRequest) -> rls_pb2.RateLimitResponse:
        hits = _hits(request)
        table = self._rules()
        found = [table.lookup([(e.key, e.value) for e in d.entries], request.domain)
                 for d in request.descriptors]
        checks = [Check(rule, key) for rule, key in (f for f in found if f is not None)]
        now = self._clock()
        outcomes = await self.backend.hit(checks, hits, now) if checks else []
        resp = rls_pb2.RateLimitResponse(overall_code=Code.OK)
        it = iter(zip(checks, outcomes, strict=True))
        retry_after = 0.0
        for f in found:
            if f is None:
                resp.statuses.add(code=Code.OK)
                continue
            check, outcome = next(it)
            resp.statuses.add(
                code=Code.OVER_LIMIT if outcome.over else Code.OK,
                current_limit=rls_pb2.RateLimitResponse.RateLimit(
                    name=check.rule.id, requests_per_unit=check.rule.limit,
                    unit=_UNITS[check.rule.window]),
                limit_remaining=max(0, check.rule.limit - outcome.used),
                duration_until_reset=_duration(outcome.reset))
            if outcome.over:
                resp.overall_code = Code.OVER_LIMIT
                retry_after = max(retry_after, outcome.reset)
        self.stats["requests"] += 1
        if resp.overall_code == Code.OVER_LIMIT:
            self.stats["over_limit"] += 1
            resp.response_headers_to_add.append(base_pb2.HeaderValue(
                key="retry-after", value=str(max(1, math.ceil(retry_after)))))
        else:
            self.stats["ok"] += 1
        return resp

    async def ShouldRateLimit(self, request: rls_pb2.RateLimitRequest,
                              context: grpc.aio.ServicerContext) -> rls_pb2.RateLimitResponse:
        try:
            self.callers.check(context)
            return await self.decide(request)
        except (Unauthenticated, PermissionDenied, ValidationError) as e:
            self.stats["refused"] += 1
            if self.stats["refused"] % 1000 == 1:  # the first, then one in a thousand
                log.warning("rate-limit call refused", extra={
                    "error": str(e), "refused": self.stats["refused"]})
            await context.abort(grpc_code(e), str(e))
            raise  # pragma: no cover - abort raises
        except Unavailable as e:
            self.stats["errors"] += 1
            log.warning("rate-limit backend unavailable", extra={"error": str(e)})
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
            raise  # pragma: no cover - abort raises

    # -- REST -----------------------------------------------------------------------------

    async def quotas(self) -> list[dict[str, object]]:
        table = self._rules()
        rules = [r for r in table.rules.values() if r.quota]
        return [u.to_dict() for u in await self.backend.usage(rules, self._clock())]

    def add_routes(self, app: web.Application, prefix: str = "",
                   guard: Callable[[web.Request], Awaitable[None]] | None = None) -> None:
        """``/quotas`` and ``/stats`` under ``prefix``; ``guard`` (if given) is awaited
        first and may raise Unauthenticated / PermissionDenied / Unavailable (the control
        plane's operator API authorizes these routes itself)."""
        async def allowed(request: web.Request) -> web.Response | None:
            if guard is None:
                return None
            try:
                await guard(request)
            except (Unauthenticated, PermissionDenied, Unavailable) as e:
                status = (401 if isinstance(e, Unauthenticated) else
                          403 if isinstance(e, PermissionDenied) else 503)
                return web.json_response({"error": str(e)}, status=status)
            return None

        async def quotas(request: web.Request) -> web.Response:
            if (refused := await allowed(request)) is not None:
                return refused
            try:
                return web.json_response({"quotas": await self.quotas()})
            except Unavailable as e:
                return web.json_response({"error": str(e)}, status=503)

        async def stats(request: web.Request) -> web.Response:
            if (refused := await allowed(request)) is not None:
                return refused
            return web.json_response({**self.stats, "rules": len(self._rules().rules)})

        app.router.add_get(f"{prefix}/quotas", quotas)
        app.router.add_get(f"{prefix}/stats", stats)


def _hits(request: rls_pb2.RateLimitRequest) -> int:
    """The hits this request counts for: at most MAX_HITS_ADDEND, else ValidationError."""
    asked = [("hits_addend", request.hits_addend)]
    asked += [(f"descriptors[{i}].hits_addend", d.hits_addend.value)
              for i, d in enumerate(request.descriptors) if d.HasField("hits_addend")]
    too_many = [Violation(path, f"{n} is more than {MAX_HITS_ADDEND}: a request counts for "
                                "one hit") for path, n in asked if n > MAX_HITS_ADDEND]
    if too_many:
        raise ValidationError(too_many)
    return max(1, request.hits_addend)


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(max(0, round(seconds * 1e9)))
    return d
