"""Locality load balancing: EDS priorities / weights per client locality (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest
from envoy.config.endpoint.v3 import endpoint_pb2

from shoal.api.parse import parse_yaml
from shoal.errors import ValidationError
from shoal.registry.snapshot import MeshSnapshot
from shoal.xds.generate import GenerationContext, generate, outbound
from shoal.xds.types import CLUSTER, ENDPOINT
from tests.generate.conftest import proxy
from tests.generate.envoy_check import envoy_binary, envoy_validate, static_bootstrap

WEB = "outbound|8080||web.default.svc.cluster.local"
API = "outbound|8080||api.default.svc.cluster.local"

# web endpoints: name -> locality (addresses 10.0.0.<i>)
WEB_AT = {"w-z1": "r1/z1", "w-s1": "r1/z1/s1", "w-z2": "r1/z2", "w-r2": "r2/z1",
          "w-r3": "r3/z1"}
CLIENTS = {"c11": "r1/z1", "c11b": "r1/z1", "c12": "r1/z2", "c2": "r2/z1", "cnone": ""}


def _mesh(dr: str = "") -> MeshSnapshot:
    docs = ["""apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {name: NAME}
spec: {selector: {app: NAME}, ports: [{name: http, port: 8080}]}""".replace("NAME", s)
            for s in ("web", "api")]
    workloads = [(n, "web", loc) for n, loc in WEB_AT.items()]
    workloads += [(n, "client", loc) for n, loc in CLIENTS.items()]
    workloads += [("api-1", "api", "r1/z2")]
    for i, (name, app, loc) in enumerate(workloads, start=1):
        docs.append(f"""apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {{name: {name}}}
spec: {{address: 10.0.0.{i}, labels: {{app: {app}}}, ports: {{http: 8080}},
        locality: "{loc}"}}""")
    if dr:
        docs.append("apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
                    "metadata: {name: web}\nspec:\n  host: web\n" + dr)
    return MeshSnapshot.build(parse_yaml("\n---\n".join(docs)), revision=1)


FAILOVER = """  trafficPolicy:
    loadBalancer:
      localityLbSetting: {enabled: true, failover: [{from: r1, to: r3}]}
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 5s}
"""
DISTRIBUTE = """  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        distribute: [{from: "r1/z1/*", to: {"r1/z1/*": 80, "r1/z2/*": 20}}]
"""
_ADDRESS = {f"10.0.0.{i}": n for i, n in enumerate([*WEB_AT, *CLIENTS, "api-1"], start=1)}


def eds_of(ctx: GenerationContext, client: str) -> dict[str, endpoint_pb2.ClusterLoadAssignment]:
    return dict(generate(ctx, proxy(client)).get(ENDPOINT).items)


def by_priority(cla: endpoint_pb2.ClusterLoadAssignment) -> list[tuple[int, list[str]]]:
    return [(g.priority, [_ADDRESS[e.endpoint.address.socket_address.address]
                          for e in g.lb_endpoints]) for g in cla.endpoints]


def weights(cla: endpoint_pb2.ClusterLoadAssignment) -> dict[str, int]:
    out = {}
    for g in cla.endpoints:
        assert g.priority == 0
        for e in g.lb_endpoints:
            out[_ADDRESS[e.endpoint.address.socket_address.address]] = \
                g.load_balancing_weight.value
    return out


def test_priorities_follow_the_client_locality() -> None:
    ctx = GenerationContext(_mesh(FAILOVER))
    assert by_priority(eds_of(ctx, "c11")[WEB]) == [
        (0, ["w-z1"]), (1, ["w-s1"]), (2, ["w-z2"]), (3, ["w-r3"]), (4, ["w-r2"])]
    assert by_priority(eds_of(ctx, "c12")[WEB]) == [
        (0, ["w-z2"]), (1, ["w-z1"]), (1, ["w-s1"]), (2, ["w-r3"]), (3, ["w-r2"])]
    # no failover rule from r2: only its own region first, the rest one level down
    assert by_priority(eds_of(ctx, "c2")[WEB]) == [
        (0, ["w-r2"]), (1, ["w-z1"]), (1, ["w-s1"]), (1, ["w-z2"]), (1, ["w-r3"])]


def test_proxies_of_one_locality_share_their_endpoints() -> None:
    ctx = GenerationContext(_mesh(FAILOVER))
    a, b, c = (generate(ctx, proxy(n)).get(ENDPOINT) for n in ("c11", "c11b", "c12"))
    assert a is b and a is not c
    # no locality LB
    assert a.items[API] is c.items[API] is outbound.table(ctx).load_assignments[API]
    assert a.version != c.version
    # a client without a locality keeps the mesh-wide set
    assert generate(ctx, proxy("cnone")).get(ENDPOINT) is outbound.table(ctx).endpoint_resources


@pytest.mark.parametrize("dr", ["", "  trafficPolicy: {loadBalancer: {localityLbSetting: "
                                "{enabled: false, failover: [{from: r1, to: r2}]}}}\n"])
def test_without_locality_lb_the_endpoints_stay_shared(dr: str) -> None:
    ctx = GenerationContext(_mesh(dr))
    table = outbound.table(ctx)
    for client in CLIENTS:
        assert generate(ctx, proxy(client)).get(ENDPOINT) is table.endpoint_resources
    assert not table.clusters[WEB].common_lb_config.HasField("locality_weighted_lb_config")


def test_distribute_sets_locality_weights() -> None:
    ctx = GenerationContext(_mesh(DISTRIBUTE))
    lb = outbound.table(ctx).clusters[WEB].common_lb_config
    assert lb.HasField("locality_weighted_lb_config")
    # r1/z1/* matches two groups of one endpoint each: 80 shared; unmatched groups dropped
    assert weights(eds_of(ctx, "c11")[WEB]) == {"w-z1": 40, "w-s1": 40, "w-z2": 20}
    # no rule for r2 clients: every locality by its endpoint weights
    assert weights(eds_of(ctx, "c2")[WEB]) == {n: 1 for n in WEB_AT}


@pytest.mark.envoy
@pytest.mark.skipif(not envoy_binary().is_file(), reason="no Envoy binary")
@pytest.mark.parametrize("dr", [FAILOVER, DISTRIBUTE])
def test_envoy_accepts_localized_config(dr: str, tmp_path: Path) -> None:
    snap = generate(GenerationContext(_mesh(dr)), proxy("c11"))
    assert snap.get(CLUSTER).items[WEB]
    res = envoy_validate(static_bootstrap(snap, "c11.default"), tmp_path / "boot.json")
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]


def _violations(setting: str) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as e:
        parse_yaml("apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
                   "metadata: {name: r}\nspec:\n  host: web\n  trafficPolicy: {loadBalancer: "
                   "{localityLbSetting: " + setting + "}}\n")
    return [(v.path, v.message) for v in e.value.violations]


PREFIX = "spec.trafficPolicy.loadBalancer.localityLbSetting"


@pytest.mark.parametrize("setting, path, message", [
    ("{failoverPriority: ['not a key']}", ".failoverPriority", "expected a label key"),
    ("{failoverPriority: [a=b=c]}", ".failoverPriority", "expected a label key"),
    ("{failoverPriority: [rack, rack=r1]}", ".failoverPriority", "appears twice"),
    ("{failoverPriority: [rack], distribute: [{from: r1, to: {r1: 100}}]}", "",
     "distribute or failoverPriority"),
    ("{failoverPriority: [topology.kubernetes.io/zone], failover: [{from: r1, to: r2}]}",
     "", "topology.kubernetes.io/zone"),
    ("{failover: [{from: r1, to: r2}], distribute: [{from: r1, to: {r2: 100}}]}", "",
     "not both"),
    ("{failover: [{from: r1, to: r1}]}", ".failover[0]", "must differ"),
    ("{failover: [{from: r1/z1, to: r2}]}", ".failover[0]", "not a region"),
    ("{distribute: [{from: 'r1/*/s', to: {r1: 100}}]}", ".distribute[0].from",
     "last part"),
    ("{distribute: [{from: r1, to: {r1: 70, r2: 20}}]}", ".distribute[0].to", "sum to 100"),
])
def test_invalid_settings_name_the_field(setting: str, path: str, message: str) -> None:
    found = _violations(setting)
    assert any(p == PREFIX + path and message in m for p, m in found), found


# -- failoverPriority -----------------------------------------------------------------

CLUSTER_LABEL = "topology.istio.io/cluster"
# name -> (cluster label, locality); clients are workloads of service "client"
PRIO_WEB = {"p-1": ("c1", "r1/z1"), "p-2": ("c1", "r1/z2"), "p-3": ("c2", "r1/z1"),
            "p-4": ("c2", "r2/z3")}
PRIO_CLIENTS = {"pc-1": ("c1", "r1/z1"), "pc-1b": ("c1", "r1/z1"), "pc-2": ("c2", "r2/z3"),
                "pc-nl": ("c1", "")}
_PRIO_ADDRESS = {f"10.1.0.{i}": n for i, n in enumerate([*PRIO_WEB, *PRIO_CLIENTS], start=1)}


def _prio_mesh(setting: str) -> MeshSnapshot:
    docs = ["""apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{name: http, port: 8080}]}"""]
    members = [(n, "web", *v) for n, v in PRIO_WEB.items()]
    members += [(n, "client", *v) for n, v in PRIO_CLIENTS.items()]
    for i, (name, app, cluster, loc) in enumerate(members, start=1):
        docs.append(f"""apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {{name: {name}}}
spec: {{address: 10.1.0.{i}, labels: {{app: {app}, {CLUSTER_LABEL}: {cluster}, rack: {name}}},
        ports: {{http: 8080}}, locality: "{loc}"}}""")
    docs.append("apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
                "metadata: {name: web}\nspec:\n  host: web\n  trafficPolicy:\n"
                "    loadBalancer:\n      localityLbSetting: " + setting + "\n"
                "    outlierDetection: {consecutive5xxErrors: 1}\n")
    return MeshSnapshot.build(parse_yaml("\n---\n".join(docs)), revision=1)


def prio(ctx: GenerationContext, client: str) -> list[tuple[int, list[str]]]:
    cla = eds_of(ctx, client)[WEB]
    return [(g.priority, [_PRIO_ADDRESS[e.endpoint.address.socket_address.address]
                          for e in g.lb_endpoints]) for g in cla.endpoints]


def test_failover_priority_orders_by_matching_labels() -> None:
    ctx = GenerationContext(_prio_mesh(
        f"{{failoverPriority: [{CLUSTER_LABEL}, topology.kubernetes.io/zone]}}"))
    # same cluster and zone 0; same cluster only 1; other cluster 2 (locality not used)
    assert prio(ctx, "pc-1") == [(0, ["p-1"]), (1, ["p-2"]), (2, ["p-3"]), (2, ["p-4"])]
    assert prio(ctx, "pc-2") == [(0, ["p-4"]), (1, ["p-3"]), (2, ["p-1"]), (2, ["p-2"])]
    # no locality: the zone label is missing on the client; the cluster still counts
    assert prio(ctx, "pc-nl") == [(0, ["p-1"]), (0, ["p-2"]), (1, ["p-3"]), (1, ["p-4"])]


def test_failover_priority_with_a_value_compares_with_that_value() -> None:
    ctx = GenerationContext(_prio_mesh(f"{{failoverPriority: [{CLUSTER_LABEL}=c2]}}"))
    # every client prefers cluster c2's endpoints, whatever its own cluster
    expected = [(0, ["p-3"]), (0, ["p-4"]), (1, ["p-1"]), (1, ["p-2"])]
    assert sorted(prio(ctx, "pc-1")) == sorted(expected)
    assert sorted(prio(ctx, "pc-2")) == sorted(expected)


def test_failover_priority_then_locality_failover() -> None:
    ctx = GenerationContext(_prio_mesh(
        f"{{failoverPriority: [{CLUSTER_LABEL}], failover: [{{from: r1, to: r2}}]}}"))
    # label priority first (c1 before c2), then locality within each (Istio: p * 5 + l)
    assert prio(ctx, "pc-1") == [(0, ["p-1"]), (1, ["p-2"]), (2, ["p-3"]), (3, ["p-4"])]


def test_failover_priority_sharing_follows_the_labels_it_reads() -> None:
    ctx = GenerationContext(_prio_mesh(f"{{failoverPriority: [{CLUSTER_LABEL}]}}"))
    a, b, c = (generate(ctx, proxy(n)).get(ENDPOINT) for n in ("pc-1", "pc-1b", "pc-2"))
    assert a is b  # different "rack" label, same cluster and locality: shared
    assert a is not c and a.version != c.version


@pytest.mark.envoy
@pytest.mark.skipif(not envoy_binary().is_file(), reason="no Envoy binary")
def test_envoy_accepts_failover_priority(tmp_path: Path) -> None:
    ctx = GenerationContext(_prio_mesh(
        f"{{failoverPriority: [{CLUSTER_LABEL}], failover: [{{from: r1, to: r2}}]}}"))
    snap = generate(ctx, proxy("pc-1"))
    res = envoy_validate(static_bootstrap(snap, "pc-1.default"), tmp_path / "boot.json")
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]
