"""Consistent hashing: the route-side hash key of a DestinationRule's consistentHash
(the cluster side, ring hash or Maglev, is in :mod:`shoal.xds.generate.traffic_policy`)."""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc_pb2

from shoal.api.traffic_policy import TrafficPolicy
from shoal.xds.generate.protocol import duration

HashPolicy = rc_pb2.RouteAction.HashPolicy


def hash_policies(policy: TrafficPolicy | None) -> list[HashPolicy]:
    """The route's hash_policy for a destination whose (port-resolved) policy is given."""
    lb = policy.load_balancer if policy is not None else None
    ch = lb.consistent_hash if lb is not None else None
    if ch is None:
        return []
    if ch.http_header_name is not None:
        return [HashPolicy(header=HashPolicy.Header(header_name=ch.http_header_name))]
    if ch.http_cookie is not None:
        cookie = HashPolicy.Cookie(name=ch.http_cookie.name, path=ch.http_cookie.path or "")
        if ch.http_cookie.ttl is not None:  # Envoy sets the cookie when it is missing
            cookie.ttl.CopyFrom(duration(ch.http_cookie.ttl.seconds))
        return [HashPolicy(cookie=cookie)]
    if ch.use_source_ip:
        return [HashPolicy(connection_properties=HashPolicy.ConnectionProperties(
            source_ip=True))]
    assert ch.http_query_parameter_name is not None
    return [HashPolicy(query_parameter=HashPolicy.QueryParameter(
        name=ch.http_query_parameter_name))]
