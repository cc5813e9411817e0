"""Locality load balancing: EDS priorities / weights per client locality (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest
from envoy.config.endpoint.v3 import endpoint_pb2

from shoal.api.parse import parse_yaml
from shoal.errors import ValidationError
from shoal.registry.snapshot import MeshSnapshot
from shoal.xds.generate import GenerationContext, generate
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
    assert a.items[API] is c.items[API] is ctx.load_assignments[API]  # no locality LB
    assert a.version != c.version
    # a client without a locality keeps the mesh-wide set
    assert generate(ctx, proxy("cnone")).get(ENDPOINT) is ctx.endpoint_resources


@pytest.mark.parametrize("dr", ["", "  trafficPolicy: {loadBalancer: {localityLbSetting: "
                                "{enabled: false, failover: [{from: r1, to: r2}]}}}\n"])
def test_without_locality_lb_the_endpoints_stay_shared(dr: str) -> None:
    ctx = GenerationContext(_mesh(dr))
    for client in CLIENTS:
        assert generate(ctx, proxy(client)).get(ENDPOINT) is ctx.endpoint_resources
    assert not ctx.clusters[WEB].common_lb_config.HasField("locality_weighted_lb_config")


def test_distribute_sets_locality_weights() -> None:
    ctx = GenerationContext(_mesh(DISTRIBUTE))
    assert ctx.clusters[WEB].common_lb_config.HasField("locality_weighted_lb_config")
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
    ("{failoverPriority: [topology.istio.io/network]}", ".failoverPriority", "not supported"),
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
