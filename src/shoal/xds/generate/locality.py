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
* ``failoverPriority`` (label keys ``k1..kN``, or ``k=v``): an endpoint whose labels equal
  the client's (or ``v``) on k1..kN gets priority 0, on k1..kN-1 only 1, ..., on none N
  (a key counts only if all keys before it match). Each locality group is split by these
  priorities. Without ``failover`` that is the whole order (locality no longer counts,
  unless its labels are listed); with ``failover`` each label priority is further ordered
  by the locality priorities above (Istio: ``label priority * 5 + locality priority``).
  Labels of clients and endpoints are their workload labels plus, from the locality,
  ``topology.kubernetes.io/region``, ``topology.kubernetes.io/zone`` and
  ``topology.istio.io/subzone``; ``topology.istio.io/network`` / ``cluster`` are workload
  labels like any other. A client with no labels at all gets no label priorities.

Pure functions; the generation context memoizes per (cluster, client locality and the
client's values of the failoverPriority keys).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2 as ec_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

from shoal.api.mesh import split_locality
from shoal.api.traffic_policy import (
    REGION_LABEL,
    SUBZONE_LABEL,
    ZONE_LABEL,
    LocalityLbDistribute,
    LocalityLbSetting,
    TrafficPolicy,
)
from shoal.registry.snapshot import Endpoint

# (address, port) of an endpoint -> its workload labels (the locality's topology labels
# are added from the locality group it is in)
EndpointLabels = Mapping[tuple[str, int], Mapping[str, str]]
# What a localized load assignment depends on: the client's locality and its values of
# the failoverPriority label keys (None: the client has no labels at all)
ClientKey = tuple[str, tuple[tuple[str, str], ...] | None]

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


def matches(loc: base_pb2.Locality, pattern: str) -> bool:
    """Istio's LocalityMatch: ``*`` or a missing part matches anything."""
    region, zone, subzone = split_locality(pattern)
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


def topology_labels(labels: Mapping[str, str] | Iterable[tuple[str, str]], locality_text: str
                    ) -> dict[str, str]:
    """``labels`` plus the region / zone / subzone labels of ``locality_text`` (which win,
    as in Istio)."""
    out = dict(labels)
    for key, value in zip((REGION_LABEL, ZONE_LABEL, SUBZONE_LABEL), split_locality(locality_text),
                          strict=True):
        if value:
            out[key] = value
    return out


def endpoint_labels(endpoints: Iterable[Endpoint]) -> dict[tuple[str, int], dict[str, str]]:
    """(address, port) -> workload labels, for :func:`localize` (the first endpoint at an
    address wins; two workloads do not share one)."""
    out: dict[tuple[str, int], dict[str, str]] = {}
    for ep in endpoints:
        out.setdefault((ep.address, ep.port), dict(ep.labels))
    return out


def priority_keys(settings: Iterable[LocalityLbSetting]) -> frozenset[str]:
    """Every label key some failoverPriority compares with the client's."""
    return frozenset(k for s in settings for k, v in s.priority_labels() if v is None)


def client_key(client_locality: str, labels: Mapping[str, str] | None,
               keys: frozenset[str]) -> ClientKey:
    """The part of a client localized endpoints depend on (see :data:`ClientKey`)."""
    if labels is None:
        return client_locality, None
    full = topology_labels(labels, client_locality)
    return client_locality, tuple(sorted((k, v) for k, v in full.items() if k in keys))


def label_priority(client: Mapping[str, str], endpoint: Mapping[str, str],
                   wanted: list[tuple[str, str | None]]) -> int:
    """0 when the endpoint matches on every failoverPriority label, else N - (number of
    leading labels that match). A label both sides lack matches (Istio)."""
    for j, (key, value) in enumerate(wanted):
        if (client.get(key, "") if value is None else value) != endpoint.get(key, ""):
            return len(wanted) - j
    return 0


def localize(cla: endpoint_pb2.ClusterLoadAssignment, client_locality: str,
             setting: LocalityLbSetting, client_labels: Mapping[str, str] | None = None,
             labels_of: EndpointLabels | None = None) -> endpoint_pb2.ClusterLoadAssignment:
    """A new load assignment: ``cla`` as a client in ``client_locality`` should see it.
    failoverPriority compares ``client_labels`` (None: the client has none) with the
    endpoints' (``labels_of``). ``cla`` itself is not changed (it is shared), and is
    returned as is when there is nothing to order by (no locality, no label priorities)."""
    if not client_locality and (not setting.failover_priority or client_labels is None):
        return cla
    out = endpoint_pb2.ClusterLoadAssignment()
    out.CopyFrom(cla)
    client = base_pb2.Locality()
    client.region, client.zone, client.sub_zone = split_locality(client_locality)
    if setting.distribute:
        rule = next((d for d in setting.distribute if matches(client, d.from_)), None)
        _distribute(out, rule)
    elif setting.failover_priority and client_labels is not None:
        full = topology_labels(client_labels, client_locality)
        _split_by_labels(out, full, labels_of or {}, setting.priority_labels())
        if setting.failover:
            _failover(out, split_locality(client_locality), setting, scale=5)
        else:
            _reorder(out, [g.priority for g in out.endpoints])
    elif not setting.failover_priority or setting.failover:
        # (a client without labels gets no label priorities; Istio then applies only
        # the failover rules, if any)
        _failover(out, split_locality(client_locality), setting)
    return out


def _split_by_labels(cla: endpoint_pb2.ClusterLoadAssignment, client: Mapping[str, str],
                     labels_of: EndpointLabels, wanted: list[tuple[str, str | None]]) -> None:
    """Each locality group becomes one group per label priority of its endpoints."""
    groups: list[ec_pb2.LocalityLbEndpoints] = []
    for group in cla.endpoints:
        loc = group.locality
        where = "/".join((loc.region, loc.zone, loc.sub_zone)).rstrip("/")
        by_priority: dict[int, list[ec_pb2.LbEndpoint]] = {}
        for ep in group.lb_endpoints:
            sa = ep.endpoint.address.socket_address
            labels = topology_labels(labels_of.get((sa.address, sa.port_value), {}), where)
            by_priority.setdefault(label_priority(client, labels, wanted), []).append(ep)
        for p in sorted(by_priority):
            new = ec_pb2.LocalityLbEndpoints()
            new.CopyFrom(group)
            del new.lb_endpoints[:]
            new.lb_endpoints.extend(by_priority[p])
            new.priority = p
            groups.append(new)
    del cla.endpoints[:]
    cla.endpoints.extend(groups)


def _failover(cla: endpoint_pb2.ClusterLoadAssignment, client: tuple[str, str, str],
              setting: LocalityLbSetting, scale: int = 0) -> None:
    """Locality priorities; with ``scale``, under the priorities groups already have."""
    targets = frozenset(f.to for f in setting.failover if f.from_ == client[0])
    raw = [g.priority * scale + priority(client, g.locality, targets) for g in cla.endpoints]
    _reorder(cla, raw)


def _reorder(cla: endpoint_pb2.ClusterLoadAssignment, raw: list[int]) -> None:
    """Priorities ``raw`` made contiguous from 0 (Envoy wants that), groups in order."""
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
