"""A generated ProxySnapshot as one static Envoy bootstrap, for ``envoy --mode validate``.

EDS clusters become STATIC with their load assignment inlined; RDS references become
inline route configurations, and SRDS scoped routes an inline list of scopes, each with
its route configuration inline. Static route tables make Envoy check that every cluster a
route names exists, which is exactly what the generators promise. Used where config must
be proven acceptable before any proxy gets it (EnvoyFilter admission, ADR 0034) and by
the generator tests.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import cache

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf import any_pb2, symbol_database
from google.protobuf.message import Message

from shoal.xds.generate.protocol import http2_protocol_options, socket_address
from shoal.xds.types import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    SCOPED_ROUTE,
    SDS_CLUSTER,
    ProxySnapshot,
)


def sds_cluster(port: int = 15012) -> cluster_pb2.Cluster:
    """The bootstrap cluster the agent provides: the secrets' source (here 127.0.0.1:port,
    e.g. a :mod:`shoal.testing.sds` server)."""
    c = cluster_pb2.Cluster(name=SDS_CLUSTER, type=cluster_pb2.Cluster.STATIC)
    c.connect_timeout.FromMilliseconds(1000)
    for key, value in http2_protocol_options().items():
        c.typed_extension_protocol_options[key].CopyFrom(value)
    ep = c.load_assignment.endpoints.add().lb_endpoints.add()
    ep.endpoint.address.CopyFrom(socket_address("127.0.0.1", port))
    c.load_assignment.cluster_name = SDS_CLUSTER
    return c


def static_bootstrap(snap: ProxySnapshot, node_id: str, sds_port: int = 15012
                     ) -> bootstrap_pb2.Bootstrap:
    boot = bootstrap_pb2.Bootstrap()
    boot.static_resources.clusters.add().CopyFrom(sds_cluster(sds_port))
    boot.node.id = node_id
    boot.node.cluster = "shoal-validate"
    routes = snap.get(ROUTE).items
    scopes = snap.get(SCOPED_ROUTE).items
    for listener in snap.get(LISTENER).items.values():
        lis = boot.static_resources.listeners.add()
        lis.CopyFrom(listener)
        for chain in lis.filter_chains:
            for f in chain.filters:
                hcm = hcm_pb2.HttpConnectionManager()
                if not f.typed_config.Unpack(hcm):
                    continue
                if hcm.HasField("rds"):
                    hcm.route_config.CopyFrom(routes[hcm.rds.route_config_name])
                elif hcm.HasField("scoped_routes"):
                    _inline_scopes(hcm.scoped_routes, scopes, routes)
                else:
                    continue
                f.typed_config.Pack(hcm)
    cla = snap.get(ENDPOINT).items
    for cluster in snap.get(CLUSTER).items.values():
        c = boot.static_resources.clusters.add()
        c.CopyFrom(cluster)
        if c.type == cluster_pb2.Cluster.EDS:
            c.type = cluster_pb2.Cluster.STATIC
            c.ClearField("eds_cluster_config")
            c.load_assignment.CopyFrom(cla[c.name])
    return boot


def _inline_scopes(sr: hcm_pb2.ScopedRoutes, scopes: Mapping[str, Message],
                   routes: Mapping[str, Message]) -> None:
    sr.ClearField("scoped_rds")
    listed = sr.scoped_route_configurations_list.scoped_route_configurations
    for name in sorted(scopes):
        scope = listed.add()
        scope.CopyFrom(scopes[name])
        scope.route_configuration.CopyFrom(routes[scope.route_configuration_name])
        scope.ClearField("route_configuration_name")


# -- secrets a proxy gets from its bootstrap (gateway credentials) ----------------------------

def _referenced(msg: Message, field_name: str = "") -> Iterator[tuple[str, bool]]:
    """(name, is a validation context) of every SdsSecretConfig in ``msg`` without an
    ``sds_config``: a secret the proxy's bootstrap must hold (``shoal gateway run``'s
    credentials), typed configs in Any included."""
    if isinstance(msg, secret_pb2.SdsSecretConfig):
        if not msg.HasField("sds_config"):
            yield msg.name, "validation" in field_name
        return
    if isinstance(msg, any_pb2.Any):
        try:
            inner = symbol_database.Default().GetSymbol(msg.TypeName())()
        except KeyError:
            return
        if msg.Unpack(inner):
            yield from _referenced(inner, field_name)
        return
    for fd, value in msg.ListFields():
        if fd.message_type is None:
            continue
        if fd.is_repeated and fd.message_type.GetOptions().map_entry:
            values = [v for v in value.values() if isinstance(v, Message)]
        else:
            values = list(value) if fd.is_repeated else [value]
        for v in values:
            yield from _referenced(v, fd.name)


@cache
def _placeholder_pem() -> tuple[str, str]:
    """A throwaway self-signed certificate and key (PEM) standing in for secrets that
    only exist on the proxy's host."""
    from shoal.ca import pki

    key = pki.new_key()
    cert = pki.make_root(key, "shoal-validate.invalid")
    return pki.cert_pem(cert), pki.key_pem(key).decode()


def add_placeholder_secrets(boot: bootstrap_pb2.Bootstrap) -> None:
    """Static secrets for the names the config expects from its bootstrap, so
    ``envoy --mode validate`` checks the config, not the host's certificate files."""
    wanted: dict[str, bool] = {}
    for msg in (*boot.static_resources.listeners, *boot.static_resources.clusters):
        for name, validation in _referenced(msg):
            wanted[name] = wanted.get(name, False) or validation
    have = {s.name for s in boot.static_resources.secrets}
    cert, key = _placeholder_pem()
    for name, validation in sorted(wanted.items()):
        if name in have:
            continue
        secret = boot.static_resources.secrets.add(name=name)
        if validation:
            secret.validation_context.trusted_ca.inline_string = cert
        else:
            secret.tls_certificate.certificate_chain.inline_string = cert
            secret.tls_certificate.private_key.inline_string = key
