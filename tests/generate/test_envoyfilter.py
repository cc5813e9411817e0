"""EnvoyFilter (docs/adr/0034): each applyTo and operation on a proxy's typed config, the
contexts, the matches, Istio's order, shared resources never changed in place, Istio's
rate-limit sample on a gateway, and Envoy accepting what the patches produce."""

from __future__ import annotations

from pathlib import Path

import pytest
from envoy.extensions.filters.http.ratelimit.v3 import rate_limit_pb2 as ratelimit_pb2

from shoal.api.parse import parse_yaml
from shoal.errors import ValidationError
from shoal.registry.snapshot import MeshSnapshot
from shoal.xds.generate import GenerationContext, generate
from shoal.xds.types import CLUSTER, LISTENER, ROUTE, ProxySnapshot

from .conftest import GOLDEN_PROXIES, http_connection_managers, load_mesh, proxy
from .envoy_check import envoy_binary, envoy_validate, static_bootstrap
from .tables import outbound_table

SHARED = Path(__file__).resolve().parents[3] / "shared" / "istio-upstream"
RATELIMIT_SAMPLE = SHARED / "samples" / "bookinfo" / "policy" / "productpage_envoy_ratelimit.yaml"
HCM = "envoy.filters.network.http_connection_manager"
ROUTER = "envoy.filters.http.router"
HCM_TYPE = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
            "HttpConnectionManager")
GATEWAY = """apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata:
  name: ingress-1
  annotations: {networking.shoal.io/gateway: ingress, networking.shoal.io/gateway-ports: "8080",
                shoal.io/registered-by: agent}
spec: {address: 127.0.0.1, labels: {istio: ingressgateway}, serviceAccount: ingress}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo}
spec:
  hosts: ["*"]
  gateways: [bookinfo-gateway]
  http: [{route: [{destination: {host: productpage, port: {number: 9080}}}]}]
"""
INGRESS = proxy("ingress-1", outbound_port=0)  # as `shoal gateway run`


def envoy_filter(patches: str, name: str = "ef", namespace: str = "default",
                 selector: str = "{labels: {app: productpage}}", priority: int = 0) -> str:
    return f"""apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  workloadSelector: {selector}
  priority: {priority}
  configPatches:
{patches}
"""


LUA = """
  - applyTo: HTTP_FILTER
    match:
      context: {context}
      listener:
        filterChain: {{filter: {{name: {hcm}, subFilter: {{name: {router}}}}}}}
    patch:
      operation: INSERT_BEFORE
      value:
        name: {name}
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
          default_source_code: {{inline_string: "function envoy_on_request(h) end"}}
"""


def lua(name: str = "lua-1", context: str = "SIDECAR_INBOUND") -> str:
    return LUA.format(context=context, hcm=HCM, router=ROUTER, name=name)


def snap_of(mesh: MeshSnapshot, node_id: str) -> ProxySnapshot:
    p = INGRESS if node_id == INGRESS.node_id else GOLDEN_PROXIES[node_id]
    return generate(GenerationContext(mesh), p)


def filter_names(s: ProxySnapshot, prefix: str) -> list[list[str]]:
    return [[f.name for f in h.http_filters] for h in http_connection_managers(s)
            if h.stat_prefix.startswith(prefix)]


def test_http_filter_inserted_before_the_router_in_the_chosen_context_only() -> None:
    m = load_mesh(envoy_filter(lua()))
    s = snap_of(m, "productpage-v1.default")
    inbound = filter_names(s, "inbound_")
    assert inbound and all(c[-2:] == ["lua-1", ROUTER] for c in inbound)
    assert all("lua-1" not in c for c in filter_names(s, "outbound_http"))
    # another workload is not selected
    assert all("lua-1" not in c for c in filter_names(snap_of(m, "reviews-v2.default"), ""))


def test_shared_resources_are_never_changed_in_place() -> None:
    m = load_mesh(envoy_filter(lua(context="SIDECAR_OUTBOUND")))
    ctx = GenerationContext(m)
    patched = generate(ctx, GOLDEN_PROXIES["productpage-v1.default"])
    other = generate(ctx, GOLDEN_PROXIES["reviews-v2.default"])  # same shared objects
    assert "lua-1" in filter_names(patched, "outbound_http")[0]
    assert "lua-1" not in filter_names(other, "outbound_http")[0]
    assert patched.get(LISTENER).version != other.get(LISTENER).version


def test_istio_order_root_namespace_first_then_priority() -> None:
    m = load_mesh("---\n".join([
        envoy_filter(lua("ns-late"), "b", priority=5),
        envoy_filter(lua("ns-early"), "a", priority=-5),
        envoy_filter(lua("root"), "r", namespace="istio-system", priority=10),
    ]))
    [chain, *_] = filter_names(snap_of(m, "productpage-v1.default"), "inbound_")
    # each inserts before the router: the last applied ends up next to it
    assert chain[-4:] == ["root", "ns-early", "ns-late", ROUTER]


def test_operations_on_filters_routes_vhosts_and_clusters() -> None:
    patches = f"""
  - applyTo: HTTP_FILTER
    match:
      context: SIDECAR_INBOUND
      listener:
        filterChain:
          filter: {{name: {HCM}, subFilter: {{name: envoy.filters.http.jwt_authn}}}}
    patch: {{operation: REMOVE}}
  - applyTo: NETWORK_FILTER
    match:
      context: SIDECAR_INBOUND
      listener: {{filterChain: {{filter: {{name: {HCM}}}}}}}
    patch:
      operation: MERGE
      value:
        name: {HCM}
        typed_config:
          "@type": "{HCM_TYPE}"
          server_name: patched
  - applyTo: VIRTUAL_HOST
    match:
      context: SIDECAR_OUTBOUND
      routeConfiguration: {{vhost: {{name: "reviews.default.svc.cluster.local:9080"}}}}
    patch:
      operation: MERGE
      value: {{request_headers_to_add: [{{header: {{key: x-patched, value: "1"}}}}]}}
  - applyTo: HTTP_ROUTE
    match:
      context: SIDECAR_OUTBOUND
      routeConfiguration:
        portNumber: 9080
        vhost: {{name: "details.default.svc.cluster.local:9080", route: {{action: ANY}}}}
    patch:
      operation: INSERT_FIRST
      value:
        name: maintenance
        match: {{prefix: /maintenance}}
        direct_response: {{status: 503}}
  - applyTo: CLUSTER
    match: {{context: SIDECAR_OUTBOUND, cluster: {{service: ratings.default.svc.cluster.local}}}}
    patch: {{operation: MERGE, value: {{connect_timeout: 7s}}}}
  - applyTo: CLUSTER
    match: {{context: SIDECAR_OUTBOUND}}
    patch:
      operation: ADD
      value:
        name: extra
        type: STATIC
        connect_timeout: 1s
        load_assignment:
          cluster_name: extra
          endpoints:
          - lb_endpoints:
            - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 9}}}}}}
"""
    s = snap_of(load_mesh(envoy_filter(patches)), "productpage-v1.default")
    inbound = [h for h in http_connection_managers(s) if h.stat_prefix.startswith("inbound_")]
    assert inbound and all(h.server_name == "patched" for h in inbound)  # merged inside Any
    assert all("envoy.filters.http.jwt_authn" not in [f.name for f in h.http_filters]
               for h in inbound)
    rc = outbound_table(s)
    vhosts = {vh.name: vh for vh in rc.virtual_hosts}
    reviews = vhosts["reviews.default.svc.cluster.local:9080"]
    assert [h.header.key for h in reviews.request_headers_to_add] == ["x-patched"]
    assert vhosts["details.default.svc.cluster.local:9080"].routes[0].name == "maintenance"
    clusters = s.get(CLUSTER).items
    assert clusters["outbound|9080||ratings.default.svc.cluster.local"].connect_timeout.seconds == 7
    assert clusters["outbound|9080||details.default.svc.cluster.local"].connect_timeout.seconds != 7
    assert "extra" in clusters


def test_istios_rate_limit_sample_on_the_gateway() -> None:
    """samples/bookinfo/policy/productpage_envoy_ratelimit.yaml, unchanged: the rate-limit
    filter before the router, its cluster added, the vhost's rate_limits merged."""
    sample = RATELIMIT_SAMPLE.read_text()
    m = load_mesh(GATEWAY + "---\n" + sample)
    s = snap_of(m, INGRESS.node_id)
    [chain] = filter_names(s, "gateway_")
    assert chain[-2:] == ["envoy.ratelimit", ROUTER]
    [hcm] = [h for h in http_connection_managers(s) if h.stat_prefix.startswith("gateway_")]
    rl = ratelimit_pb2.RateLimit()
    assert next(f for f in hcm.http_filters
                if f.name == "envoy.ratelimit").typed_config.Unpack(rl)
    assert rl.domain == "productpage-ratelimit" and rl.failure_mode_deny
    assert "rate_limit_cluster" in s.get(CLUSTER).items
    [rc] = [r for r in s.get(ROUTE).items.values()]
    assert all(vh.rate_limits[0].actions[0].request_headers.descriptor_key == "PATH"
               for vh in rc.virtual_hosts)
    # the sidecars are not selected (workloadSelector: istio: ingressgateway)
    assert "rate_limit_cluster" not in snap_of(m, "productpage-v1.default").get(CLUSTER).items


def test_refusals_name_the_field() -> None:
    def problems(patch: str) -> str:
        with pytest.raises(ValidationError) as e:
            parse_yaml(envoy_filter(patch))
        return str(e.value)

    assert "BOOTSTRAP: the bootstrap is written by each workload's agent" in problems(
        "  - {applyTo: BOOTSTRAP, patch: {operation: MERGE, value: {}}}")
    assert "INSERT_BEFORE is not supported with applyTo CLUSTER" in problems(
        "  - {applyTo: CLUSTER, patch: {operation: INSERT_BEFORE, value: {name: x}}}")
    assert "subFilter.name: is required to REMOVE an HTTP_FILTER" in problems(
        "  - {applyTo: HTTP_FILTER, patch: {operation: REMOVE}}")
    assert "not a valid envoy.config.cluster.v3.Cluster" in problems(
        "  - {applyTo: CLUSTER, patch: {operation: ADD, value: {name: x, bogus: 1}}}")
    assert "not a valid" in problems(  # an @type no Envoy extension has
        "  - {applyTo: HTTP_FILTER, patch: {operation: INSERT_FIRST, value: {name: x, "
        "typed_config: {'@type': type.googleapis.com/no.such.Type}}}}")
    assert "match.cluster: does not apply to applyTo HTTP_FILTER" in problems(
        "  - {applyTo: HTTP_FILTER, match: {cluster: {name: x}}, "
        "patch: {operation: INSERT_FIRST, value: {name: x}}}")
    assert "REMOVE takes no value" in problems(
        "  - {applyTo: CLUSTER, patch: {operation: REMOVE, value: {name: x}}}")
    assert "spec.configPatches[0].match.proxy.proxyVersion" in problems(
        "  - {applyTo: CLUSTER, match: {proxy: {proxyVersion: '1.2'}}, "
        "patch: {operation: REMOVE}}")


@pytest.mark.envoy
@pytest.mark.skipif(not envoy_binary().is_file(), reason="no Envoy binary")
@pytest.mark.parametrize("case", ["lua", "sample"])
def test_envoy_accepts_the_patched_config(case: str, tmp_path: Path) -> None:
    if case == "lua":
        m, node = load_mesh(envoy_filter(lua())), "productpage-v1.default"
    else:
        m, node = load_mesh(GATEWAY + "---\n" + RATELIMIT_SAMPLE.read_text()), INGRESS.node_id
    res = envoy_validate(static_bootstrap(snap_of(m, node), node), tmp_path / "b.json")
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]


def test_merge_keeps_an_empty_message_and_merges_maps() -> None:
    from envoy.config.cluster.v3 import cluster_pb2

    from shoal.xds.generate.envoyfilter import merge

    dst = cluster_pb2.Cluster(name="c")
    dst.metadata.filter_metadata["a"].fields["x"].string_value = "1"
    src = cluster_pb2.Cluster()
    src.common_http_protocol_options.SetInParent()  # `{}` in a patch
    src.metadata.filter_metadata["a"].fields["y"].string_value = "2"
    merge(dst, src)
    assert dst.HasField("common_http_protocol_options")
    assert set(dst.metadata.filter_metadata["a"].fields) == {"x", "y"}
    assert dst.name == "c"
