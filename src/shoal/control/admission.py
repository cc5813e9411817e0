"""Admission: what cannot work is refused when applied, never stored. A Gateway API route
must translate into the VirtualService it means (docs/adr/0035); an EnvoyFilter patch Envoy
would reject is refused with Envoy's reason and never pushed (docs/adr/0034).

Before an ``EnvoyFilter`` is stored, the config of the proxies it would change is
generated with it and the bundled Envoy validates each (``envoy --mode validate`` on the
config made static, :mod:`shoal.xds.static`). Which proxies: the connected ones it
selects, one per kind of proxy (namespace, labels, ports, gateway or not), at most
:data:`MAX_PROXIES`; when none is connected, the registered workloads it selects; when it
selects none, a sidecar with only outbound config in its namespace. A refusal is a
422 naming the EnvoyFilter, the proxy and Envoy's own message.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from google.protobuf import json_format

from shoal.api.meta import Resource
from shoal.errors import EnvoyError, ValidationError, Violation
from shoal.registry import gamma
from shoal.registry.snapshot import MeshSnapshot
from shoal.xds.generate import GenerationContext, generate
from shoal.xds.generate.envoyfilter import KIND, filters_for
from shoal.xds.static import add_placeholder_secrets, static_bootstrap
from shoal.xds.types import Proxy, ProxyMetadata

MAX_PROXIES = 3
ADMISSION_NODE = "shoal-admission"


def _with(mesh: MeshSnapshot, resources: Iterable[Resource]) -> MeshSnapshot:
    by_key = {r.key: r for r in mesh.resources}
    by_key.update({r.key: r for r in resources})
    return MeshSnapshot.of(by_key, mesh.revision, mesh.config)


def _kind_of(p: Proxy, wl: Resource | None) -> tuple[object, ...]:
    labels = tuple(sorted(wl.spec.labels.items())) if wl is not None else ()
    annotations = tuple(sorted(wl.metadata.annotations.items())) if wl is not None else ()
    return (p.namespace, labels, annotations, tuple(sorted(p.metadata.app_ports.items())),
            p.metadata.outbound_port != 0, tuple(p.metadata.upstreams))


def proxies_to_check(mesh: MeshSnapshot, envoy_filter: Resource,
                     connected: Mapping[str, Proxy]) -> list[Proxy]:
    """The proxies whose config ``envoy_filter`` changes, one per kind, bounded."""
    def selected(namespace: str, wl: Resource | None) -> bool:
        return any(r.key == envoy_filter.key for r in filters_for(mesh, namespace, wl))

    out: dict[tuple[object, ...], Proxy] = {}
    for p in connected.values():
        wl = mesh.workload(p.namespace, p.workload)
        if selected(p.namespace, wl):
            out.setdefault(_kind_of(p, wl), p)
    if not out:
        for wl in mesh.workloads:
            ns = wl.metadata.namespace
            if selected(ns, wl):
                ports = dict(wl.spec.ports)
                p = Proxy(node_id=f"{wl.metadata.name}.{ns}", namespace=ns,
                          metadata=ProxyMetadata(workload=wl.metadata.name,
                                                 outbound_port=15001, app_ports=ports))
                out.setdefault(_kind_of(p, wl), p)
    if not out:
        ns = envoy_filter.metadata.namespace
        if ns in mesh.config.policy_roots:
            ns = "default"
        out[()] = Proxy(node_id=f"{ADMISSION_NODE}.{ns}", namespace=ns,
                        metadata=ProxyMetadata(workload=ADMISSION_NODE, outbound_port=15001))
    return list(out.values())[:MAX_PROXIES]


def _validate(boot_json: str) -> str | None:
    """Envoy's reason for refusing the bootstrap, or None when it accepts it."""
    from shoal.envoy import validate_bootstrap

    with tempfile.TemporaryDirectory(prefix="shoal-admission-") as tmp:
        path = Path(tmp) / "bootstrap.json"
        path.write_text(boot_json)
        try:
            validate_bootstrap(path)
        except EnvoyError as e:
            return _reason(str(e).split(": ", 1)[-1])
    return None


_LOG_PREFIX = re.compile(r"^(\[[^\]]*\])+\s*(\[[^\]]*\]\s*)?")
_CONFIG_FILE = re.compile(r"error initializing configuration '[^']*':\s*")


def _reason(text: str) -> str:
    """Envoy's message without its log prefix and the temporary file's name."""
    lines = [_CONFIG_FILE.sub("", _LOG_PREFIX.sub("", line.strip()))
             for line in text.split(" | ")]
    return " | ".join(line for line in lines if line)


class Admission:
    """``check(resources)`` before an apply stores them (RestApi's ``admit``): Gateway API
    routes must translate (ADR 0035), EnvoyFilters must give configs Envoy accepts."""

    def __init__(self, mesh: Callable[[], MeshSnapshot],
                 proxies: Callable[[], Mapping[str, Proxy]]) -> None:
        self._mesh = mesh
        self._proxies = proxies

    async def check(self, resources: list[Resource]) -> None:
        routes = [Violation("spec.rules", problem, f"{r.kind} {r.metadata.namespace}/"
                                                   f"{r.metadata.name}")
                  for r in resources if r.kind in gamma.KINDS_ROUTES
                  for problem in gamma.check_translation(r)]
        if routes:
            raise ValidationError(routes)
        filters = [r for r in resources if r.kind == KIND]
        if not filters:
            return
        mesh = _with(self._mesh(), resources)
        ctx = GenerationContext(mesh)
        problems = []
        for ef in filters:
            for proxy in proxies_to_check(mesh, ef, self._proxies()):
                try:
                    boot = static_bootstrap(generate(ctx, proxy), proxy.node_id)
                    add_placeholder_secrets(boot)  # gateways' credentials are host files
                except (KeyError, ValueError, TypeError) as e:  # e.g. a merge of wrong types
                    reason = f"the patches cannot be applied: {e!r}"
                else:
                    reason = await asyncio.to_thread(_validate,
                                                     json_format.MessageToJson(boot))
                if reason is not None:
                    problems.append(Violation(
                        "spec.configPatches",
                        f"Envoy rejects the config of proxy {proxy.node_id} with this "
                        f"EnvoyFilter: {reason}", f"{KIND} {ef.metadata.namespace}/"
                                                  f"{ef.metadata.name}"))
                    break
        if problems:
            raise ValidationError(problems)
