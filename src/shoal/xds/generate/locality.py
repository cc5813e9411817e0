"""Locality load balancing (DestinationRule ``loadBalancer.localityLbSetting``), Istio's way.

The shared load assignment of a cluster (endpoints grouped by locality, see
:mod:`shoal.xds.generate.endpoints`) is rewritten for one *client* locality:

* failover (the default): each locality group gets an EDS priority by how close it is
  to the client -- same region/zone/subzone 0, same region/zone 1, same region 2, a
  ``failover`` target region of the client's region 3, anything else 4 -- with unused
  levels removed, because Envoy wants priorities contiguous from 0. Envoy moves traffic
  to the next priority as the hosts of one become unhealthy or are ejected by outlier
  detection, and back as they recover. Without ``outlierDetection`` a failing endpoint
  is never ejected, so traffic moves only when endpoints are removed.
* ``distribute``: for clients matching a rule's ``from``, locality groups get the weights
  of the ``to`` patterns they match (a pattern's weight shared by the groups it matches,
  in proportion to their endpoint weights); groups no pattern matches are left out. The
  cluster then needs ``common_lb_config.locality_weighted_lb_config`` (:func:`apply`).

Pure functions; the generation context memoizes per (cluster, client locality).
"""

from __future__ import annotations

import math

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2 as ec_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

from shoal.api.traffic_policy import LocalityLbDistribute, LocalityLbSetting, TrafficPolicy

_FAILOVER_PRIORITY = 3
_OTHER_PRIORITY = 4


def setting_of(policy: TrafficPolicy | None) -> LocalityLbSetting | None:
    """The enabled locality setting of a (port-resolved) policy, or None."""
    lb = policy.load_balancer if policy is not None else None
    setting = lb.locality_lb_setting if lb is not None else None
    return setting if setting is not None and setting.is_enabled else None


def apply(cluster: cluster_pb2.Cluster, setting: LocalityLbSetting | None
          ) -> cluster_pb2.Cluster:
    """``cluster`` with locality-weighted LB when ``setting`` distributes (a copy), else
    ``cluster`` itself. Failover needs nothing on the cluster: priorities are in EDS."""
    if setting is None or not setting.distribute:
        return cluster
    out = cluster_pb2.Cluster()
    out.CopyFrom(cluster)
    out.common_lb_config.locality_weighted_lb_config.SetInParent()
    return out


def parse(text: str) -> tuple[str, str, str]:
    parts = [*text.split("/"), "", "", ""][:3] if text else ["", "", ""]
    return parts[0], parts[1], parts[2]


def matches(loc: base_pb2.Locality, pattern: str) -> bool:
    """Istio's LocalityMatch: ``*`` or a missing part matches anything."""
    region, zone, subzone = parse(pattern)
    return (region in ("*", loc.region) and zone in ("*", "", loc.zone)
            and subzone in ("*", "", loc.sub_zone))


def _group_weight(group: ec_pb2.LocalityLbEndpoints) -> int:
    return sum(ep.load_balancing_weight.value or 1 for ep in group.lb_endpoints)


def priority(client: tuple[str, str, str], loc: base_pb2.Locality,
             failover_to: frozenset[str]) -> int:
    region, zone, subzone = client
    if loc.region == region:
        if loc.zone == zone:
            return 0 if loc.sub_zone == subzone else 1
        return 2
    return _FAILOVER_PRIORITY if loc.region in failover_to else _OTHER_PRIORITY


def localize(cla: endpoint_pb2.ClusterLoadAssignment, client_locality: str,
             setting: LocalityLbSetting) -> endpoint_pb2.ClusterLoadAssignment:
    """A new load assignment: ``cla`` as a client in ``client_locality`` should see it.
    ``cla`` itself is not changed (it is shared)."""
    out = endpoint_pb2.ClusterLoadAssignment()
    out.CopyFrom(cla)
    client = base_pb2.Locality()
    client.region, client.zone, client.sub_zone = parse(client_locality)
    if setting.distribute:
        rule = next((d for d in setting.distribute if matches(client, d.from_)), None)
        _distribute(out, rule)
    else:
        _failover(out, parse(client_locality), setting)
    return out


def _failover(cla: endpoint_pb2.ClusterLoadAssignment, client: tuple[str, str, str],
              setting: LocalityLbSetting) -> None:
    targets = frozenset(f.to for f in setting.failover if f.from_ == client[0])
    raw = [priority(client, g.locality, targets) for g in cla.endpoints]
    dense = {p: i for i, p in enumerate(sorted(set(raw)))}  # contiguous from 0
    for group, p in zip(cla.endpoints, raw, strict=True):
        group.priority = dense[p]
    ordered = sorted(cla.endpoints, key=lambda g: g.priority)  # stable: keeps locality order
    groups = [ec_pb2.LocalityLbEndpoints() for _ in ordered]
    for new, old in zip(groups, ordered, strict=True):
        new.CopyFrom(old)
    del cla.endpoints[:]
    cla.endpoints.extend(groups)


def _distribute(cla: endpoint_pb2.ClusterLoadAssignment,
                rule: LocalityLbDistribute | None) -> None:
    """Locality weights: from ``rule``; every group by its endpoint weights without one
    (locality-weighted LB ignores groups without a weight)."""
    weights: dict[int, int] = {}
    if rule is None:
        weights = {i: _group_weight(g) for i, g in enumerate(cla.endpoints)}
    else:
        for pattern, share in rule.to.items():  # first matching pattern wins a group
            hit = {i: _group_weight(g) for i, g in enumerate(cla.endpoints)
                   if i not in weights and matches(g.locality, pattern)}
            total = sum(hit.values())
            for i, w in hit.items():
                weights[i] = max(1, math.ceil(w * share / total))
    kept = [ec_pb2.LocalityLbEndpoints() for _ in weights]
    for new, i in zip(kept, sorted(weights), strict=True):
        new.CopyFrom(cla.endpoints[i])
        new.load_balancing_weight.value = weights[i]
    del cla.endpoints[:]
    cla.endpoints.extend(kept)
