"""Who may read the standalone service's ``/stats`` and ``/quotas`` (docs/adr/0025).

The same people who may read the embedded service's: an operator with the mesh-wide
view role (``GET /api/v1/ratelimit/{quotas,stats}`` is MESH_VIEW on the control plane).
The caller's bearer token is checked by the control plane that issued it
(``GET /api/v1/whoami`` on the operator API, which verifies signature, expiry and
revocation); the grants it answers must include view mesh-wide. A token that passed is
remembered for :data:`REMEMBER` seconds (by its SHA-256), so reading the stats in a loop
costs the control plane one call per half minute, and a revocation applies within that.
``/healthz`` stays public (readiness probes carry no credential).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import httpx

from shoal.control.rbac import ALL, Grant, Principal, Role
from shoal.errors import PermissionDenied, Unauthenticated, Unavailable

REMEMBER = 30.0  # seconds a verified token is trusted without asking again
MAX_REMEMBERED = 1_000


class OperatorCheck:
    def __init__(self, control_plane: str, *, remember: float = REMEMBER,
                 clock: Callable[[], float] = time.monotonic,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = control_plane.rstrip("/") + "/api/v1/whoami"
        self.remember = remember
        self._clock = clock
        self._transport = transport
        self._passed: dict[str, float] = {}  # sha256(token) -> until

    async def require_view(self, authorization: str | None, what: str) -> None:
        """Raise Unauthenticated / PermissionDenied / Unavailable unless the bearer token
        in ``authorization`` is an operator's with view mesh-wide."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated(f"{what} needs an operator credential (Authorization: "
                                  "Bearer TOKEN with the view role mesh-wide)")
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = self._clock()
        if self._passed.get(digest, 0.0) > now:
            return
        principal = await self._whoami(token)
        principal.require(Role.VIEW, ALL, what)
        if len(self._passed) >= MAX_REMEMBERED:
            self._passed = {k: t for k, t in self._passed.items() if t > now}
            if len(self._passed) >= MAX_REMEMBERED:
                self._passed.clear()
        self._passed[digest] = now + self.remember

    async def _whoami(self, token: str) -> Principal:
        try:
            async with httpx.AsyncClient(timeout=5.0, trust_env=False,
                                         transport=self._transport) as http:
                r = await http.get(self.url, headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError as e:
            raise Unavailable(f"cannot check the credential with the control plane: {e}"
                              ) from None
        if r.status_code == 401:
            raise Unauthenticated("the control plane does not accept this credential")
        if r.status_code == 403:
            raise PermissionDenied("the control plane refused this credential")
        if r.status_code != 200:
            raise Unavailable(f"credential check: control plane answered HTTP {r.status_code}")
        body = r.json()
        grants = []
        for text in body.get("grants") or ():
            try:
                grants.append(Grant.parse(str(text)))
            except ValueError:
                continue  # a grant this version does not know gives nothing
        return Principal(str(body.get("user") or "?"), tuple(grants))
