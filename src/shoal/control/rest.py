"""The REST API: resources (apply/get/list/delete/watch), workload registration, proxies.

Routes (all JSON unless noted):
  GET    /healthz, /readyz
  POST   /api/v1/apply[?dryRun=true][&namespace=]  YAML/JSON documents -> {revision, results}
  GET    /api/v1/resources[?kind=&namespace=&labelSelector=]
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

Every route says who may call it (shoal.control.auth.RULES): operator routes need an
operator token whose roles allow them (shoal.control.rbac), and every change is written
to the audit log (shoal.control.audit).

With an :class:`IdentityApi` that requires tokens, registration, heartbeat and
deregistration carry ``Authorization: Bearer <token>`` for the workload's namespace (and,
on registration, its service account). A heartbeat body may carry the agent's identity
report ({"identity": {...}}); the answer carries the trust bundle version.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from shoal.api import (
    KINDS,
    in_namespace,
    load_documents,
    parse_document,
    parse_documents,
    resolve_kind,
)
from shoal.api.limits import MAX_APPLY_BODY_BYTES, loads_json
from shoal.api.meta import Resource, ResourceKey
from shoal.api.parse import documents_from_json
from shoal.api.selector import LabelSelector
from shoal.ca.rest import IdentityApi
from shoal.control.agent_listener import agent_listener_guard
from shoal.control.audit import DETAILS, AuditLog
from shoal.control.auth import OperatorAuth, principal_of
from shoal.control.errors import errors_middleware, json_body, read_text
from shoal.control.proxies import ProxyInspector
from shoal.control.rbac import Role
from shoal.errors import ValidationError, Violation
from shoal.registry.admission import admit_registration, owned_workload
from shoal.registry.leases import Registry, agent_workload
from shoal.registry.snapshot import MeshConfig
from shoal.store.base import Store

API = "/api/v1"


class RestApi:
    def __init__(self, store: Store, registry: Registry, proxies: ProxyInspector,
                 *, ready: asyncio.Event, auth: OperatorAuth,
                 identity: IdentityApi | None = None, audit: AuditLog | None = None,
                 pushed_revision: Callable[[], int] = lambda: 0,
                 mesh: MeshConfig | None = None,
                 admit: Callable[[list[Resource]], Awaitable[None]] | None = None,
                 status: Callable[[Resource], dict[str, Any] | None] | None = None):
        self._auth = auth
        self.audit = audit or AuditLog(None)
        self._identity = identity
        self._pushed_revision = pushed_revision
        self._store = store
        self._registry = registry
        self._proxies = proxies
        self._ready = ready
        self._mesh = mesh or MeshConfig()
        self._admit = admit  # checks with the mesh before storing (EnvoyFilter, ADR 0034)
        self._status = status  # a resource's status, computed on read (Gateway API routes)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.audit.middleware(), errors_middleware,
                                           agent_listener_guard, self._auth.middleware()],
                              client_max_size=MAX_APPLY_BODY_BYTES)
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
        r.add_get(f"{API}/meshconfig", self.mesh_config)
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
        # size, depth, values after alias expansion and integers held to api.limits
        text = await read_text(request, MAX_APPLY_BODY_BYTES)
        if request.content_type == "application/json":
            docs = documents_from_json(loads_json(text), request.query.get("source", ""))
        else:
            docs = load_documents(text, request.query.get("source", ""))
        if not docs:
            raise ValidationError([Violation("", "no documents to apply")])
        if namespace := request.query.get("namespace"):  # kubectl's -n
            docs = in_namespace(docs, namespace, request.query.get("source", ""))
        resources = [self._scoped(r) for r in
                     parse_documents(docs, request.query.get("source", ""))]
        principal = principal_of(request)
        for r in resources:  # every document allowed, or nothing is applied
            principal.require_write(r.kind, r.metadata.namespace, "apply")
        if self._admit is not None:
            await self._admit(resources)
        if request.query.get("dryRun") == "true":
            return web.json_response({"revision": None, "dryRun": True, "results": [
                {"kind": r.kind, "namespace": r.metadata.namespace, "name": r.metadata.name,
                 "outcome": "valid"} for r in resources]})
        result = await self._store.apply(resources)
        request[DETAILS] = {"action": "apply", "revision": result.revision, "resources": [
            f"{k.kind} {k.namespace}/{k.name} {outcome}" for k, outcome in result.results]}
        return web.json_response({"revision": result.revision, "results": [
            {"kind": k.kind, "namespace": k.namespace, "name": k.name, "outcome": outcome}
            for k, outcome in result.results]})

    async def list(self, request: web.Request) -> web.Response:
        kind = request.query.get("kind")
        kind_name = resolve_kind(kind).name if kind else None
        namespace = request.query.get("namespace")
        if kind_name is not None and KINDS[kind_name].cluster_scoped and namespace:
            namespace = self._root  # (where cluster-scoped kinds are kept)
        principal = principal_of(request)
        if namespace and not principal.sees(namespace):
            principal.require(Role.VIEW, namespace, f"list config in {namespace}")
        selector = LabelSelector.parse(request.query.get("labelSelector", ""))
        items, revision = await self._store.list(kind_name, namespace)
        return web.json_response({"revision": revision, "items": [
            self._doc(r) for r in items
            if principal.can(Role.VIEW, r.metadata.namespace, r.kind)
            and selector.matches(r.metadata.labels)]})

    def _doc(self, r: Resource) -> dict[str, Any]:
        doc = r.dump()
        if self._status is not None and (status := self._status(r)) is not None:
            doc["status"] = status
        return doc

    def _scoped(self, r: Resource) -> Resource:
        """A cluster-scoped kind (GatewayClass, Namespace) is kept in the mesh root
        namespace, whatever namespace its document names (docs/adr/0039)."""
        if not KINDS[r.kind].cluster_scoped or r.metadata.namespace == self._root:
            return r
        return r.model_copy(update={"metadata": r.metadata.model_copy(
            update={"namespace": self._root})})

    @property
    def _root(self) -> str:
        return self._mesh.root_namespace

    def _key(self, request: web.Request) -> ResourceKey:
        m = request.match_info
        kind = resolve_kind(m["kind"])
        return ResourceKey(kind.name, self._root if kind.cluster_scoped else m["namespace"],
                           m["name"])

    async def get(self, request: web.Request) -> web.Response:
        key = self._key(request)
        principal_of(request).require(Role.VIEW, key.namespace,
                                      f"read {key.kind} in {key.namespace}", key.kind)
        return web.json_response(self._doc(await self._store.get(key)))

    async def delete(self, request: web.Request) -> web.Response:
        key = self._key(request)
        principal_of(request).require_write(key.kind, key.namespace, "delete")
        revision = await self._store.delete([key])
        request[DETAILS] = {"action": "delete", "revision": revision,
                            "resources": [f"{key.kind} {key.namespace}/{key.name} deleted"]}
        return web.json_response({"revision": revision, "deleted": {
            "kind": key.kind, "namespace": key.namespace, "name": key.name}})

    async def watch(self, request: web.Request) -> web.StreamResponse:
        since = request.query.get("since")
        kind = request.query.get("kind")
        principal = principal_of(request)
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        async for event in self._store.watch(
            since=int(since) if since else None,
            kind=resolve_kind(kind).name if kind else None,
        ):
            if not principal.can(Role.VIEW, event.key.namespace, event.key.kind):
                continue  # only what the caller may read
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
        agent_workload(workload, service)  # kinds checked before any field is read
        expect = None
        if self._identity is not None:
            sa = str(workload.spec.service_account)  # type: ignore[attr-defined]
            claims = self._identity.authorize(request, workload.metadata.namespace, sa)
            if claims is not None:  # bound to the token's identity (ADR 0021)
                await self._registry.expire_once()  # an expired lease frees its name
                expect = await admit_registration(self._store, claims, workload, service)
        stored = await self._registry.register(workload, service, expect=expect)
        request[DETAILS] = {"action": "register", "resources": [
            f"Workload {stored.metadata.namespace}/{stored.metadata.name} registered"]}
        return web.json_response({"workload": stored.dump(), "leaseSeconds": self._registry.ttl})

    async def heartbeat(self, request: web.Request) -> web.Response:
        m = request.match_info
        if self._identity is not None:
            claims = self._identity.authorize(request, m["namespace"])
            if claims is not None:  # only the workload's own service account renews it
                await owned_workload(self._store, claims, m["namespace"], m["name"])
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
        revision = None
        if self._identity is not None:
            claims = self._identity.authorize(request, m["namespace"])
            if claims is not None:  # only the workload's own service account removes it
                revision = (await owned_workload(self._store, claims, m["namespace"],
                                                 m["name"])).revision
        await self._registry.deregister(m["namespace"], m["name"], revision=revision)
        request[DETAILS] = {"action": "deregister", "resources": [
            f"Workload {m['namespace']}/{m['name']} deregistered"]}
        return web.json_response({"deregistered": f"{m['namespace']}/{m['name']}"})

    # -- proxies --------------------------------------------------------------------------

    def proxy_status(self) -> list[dict[str, Any]]:
        """Each connected (or recently gone) proxy's sync status, as GET /proxies has it."""
        return self._proxies.status()

    async def mesh_config(self, request: web.Request) -> web.Response:
        """The mesh-wide settings policies are judged by (``shoal analyze``)."""
        m = self._mesh
        return web.json_response({
            "rootNamespace": m.root_namespace, "istioRootNamespace": m.istio_root_namespace,
            "trustDomain": m.trust_domain, "domain": m.domain,
            "extensionProviders": [p.dump() for p in m.extension_providers]})

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
