"""One mesh to look at: traffic and traces from every cluster, not only this one.

Each control plane collects the telemetry of its own sidecars. To show a multi-cluster
mesh as one, a control plane asks each remote cluster it follows (over the same remote
secret and TLS listener as discovery) for that cluster's *own* measurements:

  GET /api/v1/discovery/edges?window=S        {"cluster", "edges": [EdgeRates...]}
  GET /api/v1/discovery/traces?service=&limit=&ids=  {"cluster", "traces": [summaries]}
  GET /api/v1/discovery/traces/{trace_id}     {"cluster", "spans": [...]}

A cluster only ever serves what its own sidecars reported, never what it learned from
others, so nothing is counted twice. Remotes are asked in parallel with a short timeout;
one that does not answer is reported as such and the view is partial, never blocked.
Edge answers are reused for two seconds (a dashboard polls; remotes are not hammered).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from shoal.multicluster.remote import DISCOVERY_PATH, RemoteClusters
from shoal.multicluster.secrets import RemoteSecret
from shoal.telemetry.model import EdgeRates, edge_rates_from_dict

EDGES_PATH = f"{DISCOVERY_PATH}/edges"
TRACES_PATH = f"{DISCOVERY_PATH}/traces"
TIMEOUT = 2.0
CACHE_SECONDS = 2.0


@dataclass
class RemoteEdges:
    rates: list[EdgeRates] = field(default_factory=list)
    clusters: dict[str, str] = field(default_factory=dict)  # name -> "ok" or the error


class Federation:
    """Asks the remote clusters of a :class:`RemoteClusters` for their telemetry."""

    def __init__(self, remotes: RemoteClusters,
                 ssl_context: Callable[[], ssl.SSLContext | None], *,
                 timeout: float = TIMEOUT, cache_seconds: float = CACHE_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self._remotes = remotes
        self._ssl = ssl_context
        self._timeout = timeout
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._edges: dict[float, tuple[float, RemoteEdges]] = {}  # window -> (at, answer)

    async def _get(self, secret: RemoteSecret, path: str,
                   params: dict[str, Any] | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {secret.token}"} if secret.token else {}
        verify: ssl.SSLContext | bool = self._ssl() or True
        async with httpx.AsyncClient(timeout=self._timeout, trust_env=False,
                                     verify=verify) as http:
            r = await http.get(secret.url + path, params=params, headers=headers)
            r.raise_for_status()
            return dict(r.json())

    async def _all(self, path: str, params: dict[str, Any] | None = None
                   ) -> list[tuple[str, dict[str, Any] | BaseException]]:
        secrets = self._remotes.secrets()
        answers = await asyncio.gather(*(self._get(s, path, params) for s in secrets),
                                       return_exceptions=True)
        return [(s.name, a) for s, a in zip(secrets, answers, strict=True)]

    async def edges(self, window: float) -> RemoteEdges:
        """Every remote's edges over ``window``; an answer is reused for
        ``cache_seconds`` (dashboards poll; remotes are asked once per period)."""
        now = self._clock()
        cached = self._edges.get(window)
        if cached is not None and now - cached[0] < self._cache_seconds:
            return cached[1]
        out = await self._fetch_edges(window)
        self._edges = {w: v for w, v in self._edges.items()
                       if now - v[0] < self._cache_seconds}
        self._edges[window] = (now, out)
        return out

    async def _fetch_edges(self, window: float) -> RemoteEdges:
        out = RemoteEdges()
        for name, answer in await self._all(EDGES_PATH, {"window": window}):
            if isinstance(answer, BaseException):
                out.clusters[name] = _error(answer)
                continue
            try:
                out.rates += [edge_rates_from_dict(e) for e in answer.get("edges", [])]
            except (TypeError, KeyError) as e:
                out.clusters[name] = f"unreadable edges: {e}"
                continue
            out.clusters[name] = "ok"
        return out

    async def traces(self, service: str | None, limit: int, ids: Iterable[str] = ()
                     ) -> list[dict[str, Any]]:
        """The remotes' recent trace summaries (with ``service``, at most ``limit`` each),
        plus their parts of the traces ``ids``; each marked with its ``cluster``."""
        params: dict[str, Any] = {"limit": limit, **({"service": service} if service else {})}
        if ids:
            params["ids"] = ",".join(ids)
        out: list[dict[str, Any]] = []
        for name, answer in await self._all(TRACES_PATH, params):
            if not isinstance(answer, BaseException):
                out += [{**t, "cluster": name} for t in answer.get("traces", [])]
        return out

    async def spans(self, trace_id: str) -> list[dict[str, Any]]:
        spans: list[dict[str, Any]] = []
        for name, answer in await self._all(f"{TRACES_PATH}/{trace_id}"):
            if not isinstance(answer, BaseException):
                spans += [{**s, "cluster": name} for s in answer.get("spans", [])]
        return spans


def _error(e: BaseException) -> str:
    if isinstance(e, httpx.HTTPStatusError):
        return f"HTTP {e.response.status_code}"
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def edges_answer(cluster: str, window: float, rates: list[EdgeRates]) -> dict[str, Any]:
    """What this cluster serves on EDGES_PATH."""
    return {"cluster": cluster, "window": window,
            "edges": [dataclasses.asdict(r) for r in rates]}
