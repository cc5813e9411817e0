"""The generator interface: one generator per concern, each declaring its inputs.

A :class:`Generator` turns one proxy (seen through a :class:`ProxyView`, worked out once
per proxy) into :class:`Part` s of its snapshot; :func:`shoal.xds.generate.generate` is a
loop over the generators in precedence order that puts the parts together. Generators
build their messages through the :class:`~shoal.xds.generate.context.GenerationContext`
of the mesh snapshot, which shares whatever does not depend on the proxy.

``inputs`` are the kinds whose change can change a generator's output. The context
takes over a generator's tables from the previous snapshot's when a change touches none
of them (:meth:`GenerationContext.table`), and the sync loop recomputes no proxy for a
change of a kind that is nobody's input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2

from shoal.api.meta import Resource
from shoal.xds.node import CaptureMetadata
from shoal.xds.types import Proxy, Resources

if TYPE_CHECKING:
    from shoal.xds.generate.context import GenerationContext
    from shoal.xds.generate.scope import Scope

# The part of a proxy's workload labels its routes depend on (see routes.route_labels).
Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ProxyView:
    """What the generators need to know of one proxy, worked out once per proxy."""

    proxy: Proxy
    workload: Resource | None  # its registered Workload (None until it registers)
    labels: Labels  # the workload labels some VirtualService's sourceLabels mention
    within: Scope  # the services it sees (its Sidecar resource)
    capture: CaptureMetadata | None  # transparent capture (pods), or None
    services: Sequence[Resource]  # the services selecting its workload


@dataclass(frozen=True)
class Part:
    """Some resources of one proxy's snapshot, from one generator.

    A part with a ``listener`` is taken only if its listener is: one whose name or
    address an earlier part's listener holds is left out, and with it the part's routes
    and clusters (they serve that listener only). ``scopes``, ``service_routes`` (route
    configurations shared by every proxy of a scope), ``clusters_shared`` and
    ``endpoints`` are shared :class:`Resources` objects, handed on as they are.
    """

    listener: listener_pb2.Listener | None = None
    routes: Mapping[str, route_pb2.RouteConfiguration] = field(default_factory=dict)
    clusters: Mapping[str, cluster_pb2.Cluster] = field(default_factory=dict)
    scopes: Resources | None = None
    service_routes: Resources | None = None
    clusters_shared: Resources | None = None
    endpoints: Resources | None = None


@dataclass(frozen=True)
class Generator:
    """One concern of a proxy's configuration (inbound, gateway, capture ...)."""

    name: str
    inputs: frozenset[str]  # kinds whose change can change its output
    parts: Callable[[GenerationContext, ProxyView], Iterable[Part]]
