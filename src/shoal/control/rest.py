"""The REST API: resources (apply/get/list/delete/watch), workload registration, proxies.

Routes (all JSON unless noted):
  GET    /healthz, /readyz
  POST   /api/v1/apply[?dryRun=true]        YAML/JSON documents -> {revision, results}
  GET    /api/v1/resources[?kind=&namespace=]
  GET    /api/v1/resources/{kind}/{namespace}/{name}
  DELETE /api/v1/resources/{kind}/{namespace}/{name}
  GET    /api/v1/watch[?since=&kind=]        NDJSON stream of events
  POST   /api/v1/workloads                   agent registration
  PUT    /api/v1/workloads/{namespace}/{name}/heartbeat
  DELETE /api/v1/workloads/{namespace}/{name}
  GET    /api/v1/proxies                     xDS sync status per proxy, store revision
                                             and the revision pushed to proxies
  GET    /api/v1/proxies/{node}/config[?type=]   live Envoy config (from its admin API)
  ...and the CA's routes (tokens, certificates, ca): see shoal.ca.rest.

With an :class:`IdentityApi` that requires tokens, registration, heartbeat and
deregistration carry ``Authorization: Bearer <token>`` for the workload's namespace (and,
on registration, its service account). A heartbeat body may carry the agent's identity
report ({"identity": {...}}); the answer carries the trust bundle version.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from shoal.api import load_documents, parse_document, parse_documents, resolve_kind
from shoal.api.meta import ResourceKey
from shoal.ca.rest import IdentityApi
from shoal.control.agent_listener import agent_listener_guard
from shoal.control.errors import errors_middleware, json_body
from shoal.control.proxies import ProxyInspector
from shoal.errors import ValidationError, Violation
from shoal.registry.leases import Registry
from shoal.store.base import Store

API = "/api/v1"


class RestApi:
    def __init__(self, store: Store, registry: Registry, proxies: ProxyInspector,
                 *, ready: asyncio.Event, identity: IdentityApi | None = None,
                 pushed_revision: Callable[[], int] = lambda: 0):
        self._identity = identity
        self._pushed_revision = pushed_revision
        self._store = store
        self._registry = registry
        self._proxies = proxies
        self._ready = ready

    def app(self) -> web.Application:
        app = web.Application(middlewares=[errors_middleware, agent_listener_guard],
                              client_max_size=8 * 1024 * 1024)
        r = app.router
        r.add_get("/healthz", self.healthz)
        r.add_get("/readyz", self.readyz)
        r.add_post(f"{API}/apply", self.apply)
        r.add_get(f"{API}/resources", self.list)
        r.add_get(f"{API}/resources/{{kind}}/{{namespace}}/{{name}}", self.get)
        r.add_delete(f"{API}/resources/{{kind}}/{{namespace}}/{{name}}", self.delete)
        r.add_get(f"{API}/watch", self.watch)
        r.add_post(f"{API}/workloads", self.register)
        r.add_put(f"{API}/workloads/{{namespace}}/{{name}}/heartbeat", self.heartbeat)
        r.add_delete(f"{API}/workloads/{{namespace}}/{{name}}", self.deregister)
        r.add_get(f"{API}/proxies", self.proxies)
        r.add_get(f"{API}/proxies/{{node}}/config", self.proxy_config)
        if self._identity is not None:
            self._identity.add_routes(r)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        if not self._ready.is_set():
            return web.json_response({"status": "starting"}, status=503)
        return web.json_response({"status": "ready", "revision": await self._store.revision()})

    # -- resources ------------------------------------------------------------------------

    async def apply(self, request: web.Request) -> web.Response:
        text = await request.text()
        if request.content_type == "application/json":
            try:
                body = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValidationError([Violation("", f"invalid JSON: {e}")]) from None
            docs = body.get("documents") if isinstance(body, dict) else body
            docs = docs if isinstance(docs, list) else [docs]
        else:
            docs = load_documents(text, request.query.get("source", ""))
        if not docs:
            raise ValidationError([Violation("", "no documents to apply")])
        resources = parse_documents(docs, request.query.get("source", ""))
        if request.query.get("dryRun") == "true":
            return web.json_response({"revision": None, "dryRun": True, "results": [
                {"kind": r.kind, "namespace": r.metadata.namespace, "name": r.metadata.name,
                 "outcome": "valid"} for r in resources]})
        result = await self._store.apply(resources)
        return web.json_response({"revision": result.revision, "results": [
            {"kind": k.kind, "namespace": k.namespace, "name": k.name, "outcome": outcome}
            for k, outcome in result.results]})

    async def list(self, request: web.Request) -> web.Response:
        kind = request.query.get("kind")
        kind_name = resolve_kind(kind).name if kind else None
        items, revision = await self._store.list(kind_name, request.query.get("namespace"))
        return web.json_response({"revision": revision, "items": [r.dump() for r in items]})

    def _key(self, request: web.Request) -> ResourceKey:
        m = request.match_info
        return ResourceKey(resolve_kind(m["kind"]).name, m["namespace"], m["name"])

    async def get(self, request: web.Request) -> web.Response:
        return web.json_response((await self._store.get(self._key(request))).dump())

    async def delete(self, request: web.Request) -> web.Response:
        key = self._key(request)
        revision = await self._store.delete([key])
        return web.json_response({"revision": revision, "deleted": {
            "kind": key.kind, "namespace": key.namespace, "name": key.name}})

    async def watch(self, request: web.Request) -> web.StreamResponse:
        since = request.query.get("since")
        kind = request.query.get("kind")
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        async for event in self._store.watch(
            since=int(since) if since else None,
            kind=resolve_kind(kind).name if kind else None,
        ):
            line = {"type": event.type.value, "revision": event.revision,
                    "resource": event.resource.dump()}
            await resp.write(json.dumps(line).encode() + b"\n")
        return resp

    # -- workloads (agents) ---------------------------------------------------------------

    async def register(self, request: web.Request) -> web.Response:
        if self._identity is not None:  # who asks, before what they ask is looked at
            self._identity.authenticate(request)
        body = await json_body(request)
        problems: list[Violation] = []
        workload = service = None
        for field in ("workload", "service"):
            doc = body.get(field)
            if doc is None:
                if field == "workload":
                    problems.append(Violation("workload", "is required"))
                continue
            try:
                parsed = parse_document(doc, 0, field)
            except ValidationError as e:
                problems += e.violations
                continue
            if field == "workload":
                workload = parsed
            else:
                service = parsed
        if problems:
            raise ValidationError(problems)
        assert workload is not None
        if self._identity is not None:
            sa = str(workload.spec.service_account)  # type: ignore[attr-defined]
            self._identity.authorize(request, workload.metadata.namespace, sa)
        stored = await self._registry.register(workload, service)
        return web.json_response({"workload": stored.dump(), "leaseSeconds": self._registry.ttl})

    async def heartbeat(self, request: web.Request) -> web.Response:
        m = request.match_info
        if self._identity is not None:
            self._identity.authorize(request, m["namespace"])
        ttl = await self._registry.heartbeat(m["namespace"], m["name"])
        out: dict[str, Any] = {"leaseSeconds": ttl}
        if self._identity is not None:
            if request.can_read_body:
                body = await json_body(request)
                self._identity.record_report(m["namespace"], m["name"], body.get("identity"))
            out["bundleVersion"] = self._identity.ca.bundle_version
        return web.json_response(out)

    async def deregister(self, request: web.Request) -> web.Response:
        m = request.match_info
        if self._identity is not None:
            self._identity.authorize(request, m["namespace"])
        await self._registry.deregister(m["namespace"], m["name"])
        return web.json_response({"deregistered": f"{m['namespace']}/{m['name']}"})

    # -- proxies --------------------------------------------------------------------------

    def proxy_status(self) -> list[dict[str, Any]]:
        """Each connected (or recently gone) proxy's sync status, as GET /proxies has it."""
        return self._proxies.status()

    async def proxies(self, request: web.Request) -> web.Response:
        # pushedRevision: every proxy's config reflects the store up to this revision
        # (it is SYNCED with it once its sync says so); revision: the store's now.
        return web.json_response({"proxies": self.proxy_status(),
                                  "revision": await self._store.revision(),
                                  "pushedRevision": self._pushed_revision()})

    async def proxy_config(self, request: web.Request) -> web.Response:
        dump = await self._proxies.config_dump(request.match_info["node"],
                                               request.query.get("type"))
        return web.json_response(dump)
