"""Shared vocabulary of the xDS layer: type URLs, push order, proxy identity, snapshots.

The server (transport) and the generators (content) both speak these types and nothing
else of each other: the server knows nothing of Istio kinds, the generators nothing of
gRPC.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property

from google.protobuf.message import Message

_PREFIX = "type.googleapis.com/"
LISTENER = _PREFIX + "envoy.config.listener.v3.Listener"
ROUTE = _PREFIX + "envoy.config.route.v3.RouteConfiguration"
SCOPED_ROUTE = _PREFIX + "envoy.config.route.v3.ScopedRouteConfiguration"
CLUSTER = _PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = _PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"

# Make-before-break: what is referenced is sent before what references it.
PUSH_ORDER: tuple[str, ...] = (SECRET, CLUSTER, ENDPOINT, LISTENER, SCOPED_ROUTE, ROUTE)
# In state-of-the-world, an empty resource_names subscription means "everything" only
# for these types, and each response carries the whole set (Envoy subscribes to SRDS
# without names and drops the scopes a response leaves out).
WILDCARD_TYPES = frozenset({LISTENER, CLUSTER, SCOPED_ROUTE})
SHORT_NAMES = {LISTENER: "LDS", ROUTE: "RDS", SCOPED_ROUTE: "SRDS", CLUSTER: "CDS",
               ENDPOINT: "EDS", SECRET: "SDS"}


@dataclass(frozen=True)
class Upstream:
    """A local port on which the sidecar forwards to one service port (TCP, gRPC...)."""

    host: str  # service host as the app names it, e.g. "ratings" or "ratings.default"
    port: int  # service port
    local_port: int  # 127.0.0.1:local_port on the sidecar


@dataclass(frozen=True)
class ProxyMetadata:
    """What the agent tells the control plane about its sidecar (Envoy node metadata)."""

    workload: str  # name of the Workload resource this sidecar fronts
    outbound_port: int  # HTTP proxy listener for the app (HTTP_PROXY=127.0.0.1:port)
    app_ports: Mapping[str, int] = field(default_factory=dict)  # service port name -> app port
    upstreams: tuple[Upstream, ...] = ()
    admin_port: int = 0
    # unprivileged `shoal run --app-socket`: the app listens on this Unix socket (an
    # absolute path) instead of 127.0.0.1:<app port> (docs/adr/0026-app-unix-socket.md)
    app_socket: str = ""

    def key(self) -> tuple[object, ...]:
        """Every field, hashable (mappings as sorted items): equal keys, equal metadata."""
        return tuple(tuple(sorted(v.items())) if isinstance(v, Mapping) else v
                     for v in (getattr(self, f.name) for f in fields(self)))


@dataclass(frozen=True)
class Proxy:
    """A connected sidecar, as identified by its xDS node."""

    node_id: str  # "<workload>.<namespace>"
    namespace: str
    metadata: ProxyMetadata

    @property
    def workload(self) -> str:
        return self.metadata.workload

    @cached_property
    def config_key(self) -> tuple[object, ...]:
        """What a proxy's configuration depends on besides the mesh: its namespace and
        metadata, not its node id (replicas of a workload share one snapshot)."""
        return (self.namespace, *self.metadata.key())


def resource_hash(resources: Mapping[str, Message]) -> str:
    """A content version: equal contents give equal versions, across restarts too."""
    h = hashlib.sha256()
    for name in sorted(resources):
        h.update(name.encode())
        h.update(b"\0")
        h.update(resources[name].SerializeToString(deterministic=True))
        h.update(b"\0")
    return h.hexdigest()[:16]


class Overlay(Mapping[str, Message]):
    """A mapping shared by many proxies with a few items of one proxy on top (``own``
    wins), read in place: a proxy's thousand shared clusters are not copied into a
    dict of its own (that copy was ~100 kB per proxy at 1,000 services). Iterates in
    the order of ``{**base, **own}``. Read-only, like every mapping in a snapshot."""

    __slots__ = ("_len", "base", "own")

    def __init__(self, base: Mapping[str, Message], own: Mapping[str, Message]) -> None:
        if isinstance(base, Overlay):  # flatten: one level of sharing
            base, own = base.base, {**base.own, **own}
        self.base = base
        self.own = own
        self._len = len(base) + sum(1 for n in own if n not in base)

    def __getitem__(self, name: str) -> Message:
        own = self.own
        return own[name] if name in own else self.base[name]

    def get(self, name: str, default: Message | None = None) -> Message | None:  # type: ignore[override]
        own = self.own
        return own[name] if name in own else self.base.get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self.own or name in self.base

    def __iter__(self) -> Iterator[str]:
        yield from self.base
        base = self.base
        yield from (n for n in self.own if n not in base)

    def __len__(self) -> int:
        return self._len

    def __repr__(self) -> str:
        return f"Overlay({len(self.base)} shared, own={sorted(self.own)})"


def split(items: Mapping[str, Message]) -> tuple[Mapping[str, Message], Mapping[str, Message]]:
    """(the shared mapping, the own items on top): an Overlay's parts, or ``items``
    with nothing on top."""
    if isinstance(items, Overlay):
        return items.base, items.own
    return items, {}


def names_within(old: Mapping[str, Message], new: Mapping[str, Message]) -> bool:
    """Is every name of ``old`` in ``new``? The shared parts of overlays compared as key
    views (in C), so the common case -- nothing removed -- costs no Python loop over a
    thousand names per proxy and push."""
    old_base, old_own = split(old)
    new_base, _ = split(new)
    if not all(n in new for n in old_own):
        return False
    return old_base.keys() <= new_base.keys() or all(n in new for n in old_base)


@dataclass(frozen=True)
class Resources:
    """All resources of one type for one proxy, with a content version."""

    items: Mapping[str, Message]  # an Overlay when shared with a few own items on top
    version: str = ""

    @staticmethod
    def of(items: Mapping[str, Message]) -> Resources:
        return Resources(items=dict(items), version=resource_hash(items))

    @staticmethod
    def over(base: Resources, own: Mapping[str, Message], own_version: str) -> Resources:
        """``base`` (shared by many proxies) with one proxy's ``own`` items on top;
        ``own_version``: the version of ``own`` hashed on top of ``base.version``."""
        return Resources(items=Overlay(base.items, own), version=own_version)


@dataclass(frozen=True)
class ProxySnapshot:
    """Everything one proxy should have, by type URL."""

    resources: Mapping[str, Resources]
    mesh_revision: int = 0  # store revision this snapshot was computed from

    def get(self, type_url: str) -> Resources:
        return self.resources.get(type_url) or Resources(items={}, version=resource_hash({}))

    @cached_property
    def version(self) -> str:
        """(read by every stream the snapshot reaches, on every change: computed once)"""
        return "-".join(self.get(t).version[:6] for t in PUSH_ORDER)


# -- workload identity (SDS) ------------------------------------------------------------------
# Each sidecar gets its certificate and the trust bundle from ITS OWN AGENT over SDS on a
# local Unix socket (the private key never leaves the host). Bootstrap defines the
# cluster; the control plane's generated config only refers to these names.
SDS_CLUSTER = "sds-grpc"
XDS_CLUSTER = "xds_cluster"  # the bootstrap's cluster to the control plane (ADS, OTLP)
SECRET_WORKLOAD_CERT = "default"  # TlsCertificate: SVID chain + key
SECRET_ROOT_CA = "ROOTCA"  # CertificateValidationContext: the trust bundle (old + new roots)
