"""What the agents' TLS listener serves, and nothing more.

The control plane's one REST app is served on two listeners: the operator API (plain
HTTP, keep it on loopback) and the agent API (TLS, reachable by every workload, e.g. on a
pod network's bridge). The agent API answers only the routes that agents and remote
control planes need, each of which checks a token where it matters: registration,
heartbeat and deregistration, certificate signing, the trust bundle, the discovery
stream of remote clusters, health, and the sidecars' Zipkin spans (which need the
workload certificate: shoal.telemetry.zipkin.request_peer, docs/adr/0025). Everything
else — applying or reading config, tokens, CA operations, proxies, reading telemetry,
the dashboard — is the operator's and is refused there with 403, so a workload cannot
rewrite the mesh's policy or read it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from shoal.errors import PermissionDenied
from shoal.multicluster.federation import EDGES_PATH, TRACES_PATH
from shoal.multicluster.remote import DISCOVERY_PATH
from shoal.telemetry.report import STATS_PATH
from shoal.telemetry.zipkin import SPANS_PATH

API = "/api/v1"
AGENT_ROUTES: frozenset[tuple[str, str]] = frozenset({
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("POST", f"{API}/workloads"),
    ("PUT", f"{API}/workloads/{{namespace}}/{{name}}/heartbeat"),
    ("DELETE", f"{API}/workloads/{{namespace}}/{{name}}"),
    ("POST", f"{API}/certificates"),
    ("GET", f"{API}/ca/bundle"),
    ("GET", DISCOVERY_PATH),
    ("GET", EDGES_PATH),
    ("GET", TRACES_PATH),
    ("GET", f"{TRACES_PATH}/{{trace_id}}"),
    ("POST", SPANS_PATH),  # sidecars' Zipkin tracer, with the workload certificate
    ("POST", STATS_PATH),  # agents' stats reports (shoal.telemetry.report)
})


def served_to_agents(method: str, route: str) -> bool:
    """Is METHOD ROUTE (the route's pattern, e.g. ``/api/v1/workloads/{namespace}/...``)
    answered on the agent listener?"""
    return ("GET" if method == "HEAD" else method, route) in AGENT_ROUTES


@web.middleware
async def agent_listener_guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Refuse operator routes on the TLS (agent) listener. Unknown paths stay 404."""
    if request.secure and request.match_info.http_exception is None:
        resource = request.match_info.route.resource
        pattern = resource.canonical if resource is not None else ""
        if not served_to_agents(request.method, pattern):
            raise PermissionDenied(
                f"{request.method} {request.path} is served on the operator API only "
                "(the loopback listener), not on the agents' listener")
    return await handler(request)
