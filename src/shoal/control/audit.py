"""The audit log: every change made through the control plane's APIs, and every refused
request — who (the credential's principal), what (method, path, resources), when, from
where (peer address, listener) and the outcome.

Entries are appended as JSON lines to ``<data-dir>/audit.log`` (0600; rotated at
``max_bytes`` with one previous file kept) and the latest ``recent`` are kept in memory
for ``GET /api/v1/audit`` and ``shoal audit``. Each control-plane instance logs what
it served (HA: one log per instance).
"""

from __future__ import annotations

import collections
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from shoal.control.rbac import Principal
from shoal.errors import ValidationError, Violation
from shoal.telemetry.report import STATS_PATH

API = "/api/v1"
AUDIT_PATH = f"{API}/audit"
# request keys: the authenticated Principal; what the handler did (resources, revision...)
PRINCIPAL = web.RequestKey("shoal.principal", Principal)
DETAILS = web.RequestKey("shoal.audit", dict)
_READS = frozenset({"GET", "HEAD", "OPTIONS"})
# Not changes worth an entry each: lease renewals and sidecars' spans.
# telemetry and liveness, many a second: audited when refused only
_QUIET = frozenset({("PUT", f"{API}/workloads/{{namespace}}/{{name}}/heartbeat"),
                    ("POST", "/api/v2/spans"), ("POST", STATS_PATH)})


class AuditLog:
    def __init__(self, path: Path | None, *, max_bytes: int = 10 * 1024 * 1024,
                 recent: int = 1000, clock: Callable[[], float] = time.time):
        self._path = path
        self._max = max_bytes
        self._recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=recent)
        self._clock = clock

    def record(self, entry: dict[str, Any]) -> None:
        entry = {"time": round(self._clock(), 3), **entry}
        self._recent.append(entry)
        if self._path is None:
            return
        line = (json.dumps(entry, separators=(",", ":"), default=str) + "\n").encode()
        self._path.parent.mkdir(parents=True, exist_ok=True)
        if self._path.exists() and self._path.stat().st_size + len(line) > self._max:
            self._path.replace(self._path.with_name(self._path.name + ".1"))
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def entries(self, *, limit: int = 100, user: str | None = None,
                since: float | None = None) -> list[dict[str, Any]]:
        """The newest LIMIT entries (oldest first), optionally of one principal / after a
        time."""
        out = [e for e in self._recent
               if (user is None or e.get("user") == user)
               and (since is None or e["time"] > since)]
        return out[-limit:]

    # -- HTTP ----------------------------------------------------------------------------
    def middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        @web.middleware
        async def audit(request: web.Request,
                        handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                        ) -> web.StreamResponse:
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as e:
                status = e.status
                raise
            finally:
                self._maybe_record(request, status)
        return audit

    def _maybe_record(self, request: web.Request, status: int) -> None:
        resource = request.match_info.route.resource
        pattern = resource.canonical if resource is not None else request.path
        refused = status in (401, 403)
        if (request.method in _READS or (request.method, pattern) in _QUIET) and not refused:
            return
        principal: Principal | None = request.get(PRINCIPAL)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        entry: dict[str, Any] = {
            "user": principal.name if principal else "anonymous",
            "tokenId": principal.token_id if principal else "",
            "source": peer[0] if peer else "",
            "listener": "agent" if request.secure else "operator",
            "method": request.method, "path": request.path, "status": status}
        details = request.get(DETAILS)
        if details:
            entry.update(details)
        self.record(entry)

    async def handle_list(self, request: web.Request) -> web.Response:
        try:
            limit = min(max(int(request.query.get("limit", "100")), 1), 1000)
            since = float(request.query["since"]) if "since" in request.query else None
        except ValueError:
            raise ValidationError([Violation("limit/since", "must be numbers")]) from None
        return web.json_response({"entries": self.entries(
            limit=limit, user=request.query.get("user"), since=since)})
