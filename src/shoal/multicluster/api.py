"""REST routes of multi-cluster (mounted on the control plane's app).

  GET    /api/v1/clusters              this cluster and every remote one, with health
  POST   /api/v1/clusters              a remote secret {name, url, token, network?}: follow it
  DELETE /api/v1/clusters/{name}       stop following a remote cluster (its endpoints go)
  GET    /api/v1/discovery             for remote control planes: NDJSON, a SYNC of our
                                       Workloads/Services/Gateways, then changes, BOOKMARKs
  GET    /api/v1/discovery/edges       for remote control planes: our own traffic per edge
  GET    /api/v1/discovery/traces/{id} for remote control planes: our own spans of a trace

Adding and removing remotes are operator actions (refused on the agent TLS listener).
The discovery routes need a token for ``<root namespace>/cluster-reader`` when the
control plane requires tokens (a remote secret carries one: ``shoal cluster
remote-secret``); only our own resources are served, never what we learned from others.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from shoal.ca.rest import IdentityApi
from shoal.control.errors import json_body
from shoal.errors import NotFound, PermissionDenied, ValidationError, Violation, WatchExpired
from shoal.multicluster.federation import EDGES_PATH, TRACES_PATH, edges_answer
from shoal.multicluster.labels import DISCOVERED_KINDS, east_west_port
from shoal.multicluster.remote import DISCOVERY_PATH, RemoteClusters
from shoal.multicluster.secrets import READER_SERVICE_ACCOUNT, RemoteSecret
from shoal.registry.snapshot import MeshConfig
from shoal.store.base import Store
from shoal.telemetry.model import EdgeRates

API = "/api/v1"
BOOKMARK_SECONDS = 5.0


class ClusterApi:
    def __init__(self, store: Store, mesh: MeshConfig, remotes: RemoteClusters,
                 identity: IdentityApi | None, urls: Callable[[], dict[str, str]], *,
                 local_rates: Callable[[float], list[EdgeRates]] = lambda window: [],
                 local_spans: Callable[[str], list[dict[str, Any]] | None] = lambda t: None,
                 local_traces: Callable[[str | None, int, list[str]], list[dict[str, Any]]]
                 = lambda service, limit, ids: []):
        """``store``: the local store (never the merged view); ``urls``: where this
        control plane is reachable ({"api": ..., "agentApi": ...}); ``local_rates`` and
        ``local_spans``: what this control plane's own sidecars reported."""
        self._store = store
        self._mesh = mesh
        self._remotes = remotes
        self._identity = identity
        self._urls = urls
        self._local_rates = local_rates
        self._local_spans = local_spans
        self._local_traces = local_traces

    def mount(self, app: web.Application) -> None:
        r = app.router
        r.add_get(f"{API}/clusters", self.list)
        r.add_post(f"{API}/clusters", self.add)
        r.add_delete(f"{API}/clusters/{{name}}", self.remove)
        r.add_get(DISCOVERY_PATH, self.discovery)
        r.add_get(EDGES_PATH, self.edges)
        r.add_get(TRACES_PATH, self.traces)
        r.add_get(f"{TRACES_PATH}/{{trace_id}}", self.trace)

    async def _local_summary(self) -> dict[str, Any]:
        items, revision = await self._store.list("Workload")
        gateways = []
        gws, _ = await self._store.list("Gateway")
        for w in items:
            if (port := east_west_port(w, gws)) is not None:
                gateways.append(f"{w.spec.address}:{port}")
        services, _ = await self._store.list("Service")
        urls = self._urls()
        return {"name": self._mesh.cluster, "local": True,
                "url": urls.get("agentApi") or urls.get("api", ""),
                "network": self._mesh.network, "state": "local",
                "workloads": len(items) - len(gateways), "services": len(services),
                "gateways": gateways, "lastError": "", "since": 0.0, "revision": revision}

    async def list(self, request: web.Request) -> web.Response:
        return web.json_response({
            "cluster": self._mesh.cluster, "network": self._mesh.network,
            "rootNamespace": self._mesh.root_namespace, "urls": self._urls(),
            "clusters": [await self._local_summary(), *self._remotes.summaries()]})

    async def add(self, request: web.Request) -> web.Response:
        secret = RemoteSecret.parse(await json_body(request))
        if secret.name == self._mesh.cluster:
            raise PermissionDenied(f"{secret.name!r} is this cluster's own name")
        self._remotes.add(secret)
        return web.json_response({"added": secret.public()})

    async def remove(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if not self._remotes.remove(name):
            raise NotFound(f"no remote cluster {name!r}")
        return web.json_response({"removed": name})

    # -- the discovery stream (served to remote control planes) -------------------------

    def _reader_only(self, request: web.Request) -> None:
        if self._identity is not None:
            self._identity.authorize(request, self._mesh.root_namespace,
                                     READER_SERVICE_ACCOUNT)

    async def edges(self, request: web.Request) -> web.Response:
        """This cluster's own traffic per edge over ``window`` seconds (federation)."""
        self._reader_only(request)
        try:
            window = min(max(float(request.query.get("window", "60")), 1.0), 6 * 3600.0)
        except ValueError:
            raise ValidationError([Violation("window", "must be a number of seconds")]) \
                from None
        return web.json_response(edges_answer(self._mesh.cluster, window,
                                              self._local_rates(window)))

    async def traces(self, request: web.Request) -> web.Response:
        """This cluster's own recent trace summaries, and its parts of the traces ``ids``
        (federation)."""
        self._reader_only(request)
        try:
            limit = min(max(int(request.query.get("limit", "20")), 1), 200)
        except ValueError:
            raise ValidationError([Violation("limit", "must be a whole number")]) from None
        ids = [i for i in request.query.get("ids", "").split(",") if i][:200]
        return web.json_response({"cluster": self._mesh.cluster, "traces": self._local_traces(
            request.query.get("service") or None, limit, ids)})

    async def trace(self, request: web.Request) -> web.Response:
        """The spans this cluster's sidecars reported for one trace (federation)."""
        self._reader_only(request)
        spans = self._local_spans(request.match_info["trace_id"]) or []
        return web.json_response({"cluster": self._mesh.cluster, "spans": spans})

    async def discovery(self, request: web.Request) -> web.StreamResponse:
        self._reader_only(request)
        resources, revision = await self._store.list()
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)

        async def send(msg: dict[str, Any]) -> None:
            await resp.write(json.dumps(msg).encode() + b"\n")

        await send({"type": "SYNC", "cluster": self._mesh.cluster,
                    "network": self._mesh.network, "revision": revision,
                    "resources": [r.dump() for r in resources if r.kind in DISCOVERED_KINDS]})
        events = self._store.watch(since=revision)
        pending: asyncio.Future[Any] | None = None
        try:
            while True:
                pending = pending or asyncio.ensure_future(anext(events))
                done, _ = await asyncio.wait({pending}, timeout=BOOKMARK_SECONDS)
                if not done:
                    await send({"type": "BOOKMARK", "revision": revision})
                    continue
                try:
                    event = pending.result()
                except (WatchExpired, StopAsyncIteration):
                    break  # the remote reconnects and gets a fresh SYNC
                pending = None
                revision = event.revision
                if event.key.kind in DISCOVERED_KINDS:
                    await send({"type": event.type.value, "revision": revision,
                                "resource": event.resource.dump()})
        finally:
            if pending is not None:
                pending.cancel()
            await events.aclose()
        return resp

