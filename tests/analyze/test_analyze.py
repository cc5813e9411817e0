"""``shoal analyze``: each scenario that cannot work is reported with resource and path."""

from __future__ import annotations

from shoal.analyze import analyze
from shoal.api.parse import parse_yaml

BASE = """apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {name: reviews}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {name: reviews-1}
spec: {address: 127.0.0.1, labels: {app: reviews, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec: {host: reviews, subsets: [{name: v1, labels: {version: v1}}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [api.example.com]
  resolution: DNS
  ports: [{number: 443, name: https, protocol: TLS}]
"""


def findings(extra: str) -> list[tuple[str, str, str]]:
    resources = parse_yaml(BASE + "---\n" + extra)
    return [(f.code, f.resource, f.path) for f in analyze(resources)]


def vs(name: str, spec: str) -> str:
    return (f"apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
            f"metadata: {{name: {name}}}\nspec:\n{spec}")


def test_clean_config_has_no_findings() -> None:
    assert findings(vs("r", "  hosts: [reviews]\n  http: [{route: [{destination: "
                            "{host: reviews, subset: v1}}]}]\n"
                       "---\n" + vs("e", "  hosts: [api.example.com]\n  tcp: [{route: "
                                    "[{destination: {host: api.example.com}}]}]\n"))) == []


def test_unknown_subset() -> None:
    out = findings(vs("r", "  hosts: [reviews]\n  http: [{route: [{destination: "
                           "{host: reviews, subset: v9}}]}]\n"))
    assert out == [("subset-not-found", "VirtualService default/r",
                    "spec.http[0].route[0].destination.subset")]


def test_unknown_hosts() -> None:
    out = findings(vs("r", "  hosts: [nope]\n  http: [{route: [{destination: "
                           "{host: ghost}}]}]\n"))
    assert ("host-not-found", "VirtualService default/r", "spec.hosts[0]") in out
    assert ("host-not-found", "VirtualService default/r",
            "spec.http[0].route[0].destination.host") in out


def test_two_virtual_services_for_one_host() -> None:
    out = findings(vs("a", "  hosts: [reviews]\n  http: [{route: [{destination: "
                           "{host: reviews}}]}]\n") + "---\n"
                   + vs("b", "  hosts: [reviews.default.svc.cluster.local]\n  http: [{route: "
                        "[{destination: {host: reviews}}]}]\n"))
    assert [o for o in out if o[0] == "conflicting-virtual-services"] == [
        ("conflicting-virtual-services", "VirtualService default/b", "spec.hosts[0]")]


def test_destination_rule_for_unknown_host() -> None:
    out = findings("apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
                   "metadata: {name: x}\nspec: {host: ghost}\n")
    assert out == [("host-not-found", "DestinationRule default/x", "spec.host")]


def test_missing_gateway() -> None:
    out = findings(vs("g", "  hosts: ['*']\n  gateways: [no-such-gw]\n  http: [{match: "
                           "[{gateways: [other/gw]}], route: [{destination: {host: reviews}}]}]\n"))
    assert ("gateway-not-found", "VirtualService default/g", "spec.gateways[0]") in out
    assert ("gateway-not-found", "VirtualService default/g",
            "spec.http[0].match[0].gateways[0]") in out
    gw = ("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: no-such-gw}\n"
          "spec: {selector: {istio: ingressgateway}, servers: [{port: {number: 80, name: "
          "http, protocol: HTTP}, hosts: ['*']}]}\n")
    assert [o for o in findings(gw + "---\n" + vs("g", "  hosts: ['*']\n  gateways: "
            "[no-such-gw]\n  http: [{route: [{destination: {host: reviews}}]}]\n"))] == []


def test_sidecar_selecting_nothing() -> None:
    out = findings("apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: s}\n"
                   "spec: {workloadSelector: {labels: {app: nobody}}, egress: "
                   "[{hosts: ['./*']}]}\n")
    assert out == [("selects-nothing", "Sidecar default/s", "spec.workloadSelector.labels")]


def test_findings_name_their_file() -> None:
    resources = parse_yaml(BASE) + parse_yaml(vs("r", "  hosts: [ghost]\n  http: [{route: "
                                                 "[{destination: {host: reviews}}]}]\n"), "x.yaml")
    out = analyze(resources, {r.key: "x.yaml" for r in resources if r.kind == "VirtualService"})
    assert [str(f) for f in out] == [
        "x.yaml: VirtualService default/r: spec.hosts[0]: 'ghost' matches no Service or "
        "ServiceEntry [host-not-found]"]


def test_security_policies_selecting_nothing() -> None:
    """A DENY policy whose selector has a typo protects nothing: say so (gateways count
    as workloads; a root-namespace policy may select workloads of any namespace)."""
    gw = ("apiVersion: mesh.shoal.io/v1alpha1\nkind: Workload\nmetadata: {name: ingress-1, "
          "namespace: edge}\nspec: {address: 127.0.0.1, labels: {istio: ingressgateway}}\n")
    deny = ("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
            "metadata: {{name: {name}, namespace: {ns}}}\nspec: {{selector: {{matchLabels: "
            "{{istio: {label}}}}}, action: DENY, rules: [{{}}]}}\n")
    out = findings(gw + "---\n" + deny.format(name="typo", ns="edge", label="ingresgateway")
                   + "---\n" + deny.format(name="ok", ns="edge", label="ingressgateway")
                   + "---\n" + deny.format(name="mesh", ns="shoal-system",
                                           label="ingressgateway")
                   + "---\n" + deny.format(name="istio", ns="istio-system",
                                           label="ingressgateway")
                   + "---\n" + deny.format(name="elsewhere", ns="default",
                                           label="ingressgateway"))
    assert sorted(out) == [
        ("selects-nothing", "AuthorizationPolicy default/elsewhere", "spec.selector.matchLabels"),
        ("selects-nothing", "AuthorizationPolicy edge/typo", "spec.selector.matchLabels")]
