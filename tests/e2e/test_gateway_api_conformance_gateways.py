"""The Gateway API's own Gateway conformance manifests (../shared/gateway-api-conformance,
unchanged but for the suite's ``{GATEWAY_CLASS_NAME}`` placeholder) against shoal,
through real gateway Envoys (docs/gateway-api.md has the results).

The suite's base objects are mapped onto shoal as for the mesh files: its Namespaces
(with their labels) and Gateways are applied as they are, each Service becomes a shoal
Service, each Deployment an echo process registered as a Workload with the pods' labels.
The Gateways the cases use are served by ``shoal gateway run --name <gateway>`` on a
loopback address of their own, on the manifests' port 80 (root only: elsewhere the
module is skipped). Each case applies the suite's file as it is and checks what the spec
says the calls must see (written here in our words, not copied from the suite's Go
tests), then deletes what it applied.
"""

from __future__ import annotations

import os
import ssl
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from shoal.testing.local import ControlPlaneProcess, _Process, free_port, gateway_process
from shoal.testing.pki import TestCA
from tests.e2e.conformance import SHARED, SUITE, k8s, run_case

pytestmark = [pytest.mark.envoy, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="the gateways bind port 80")]

INFRA = "gateway-conformance-infra"
# the suite's Gateways the cases use, each on a loopback address of its own: the base
# manifests' (served for the whole module) and those some files bring (for their case)
BASE_GATEWAYS = ("same-namespace", "backend-namespaces")
GATEWAYS = {"same-namespace": "127.0.80.1", "backend-namespaces": "127.0.80.2",
            "httproute-hostname-intersection": "127.0.80.3",
            "httproute-hostname-intersection-all": "127.0.80.4",
            "httproute-listener-hostname-matching": "127.0.80.5",
            "same-namespace-with-https-listener": "127.0.80.6",
            "all-namespaces": "127.0.80.7"}
BACKENDS = ("infra-backend-v1", "infra-backend-v2", "infra-backend-v3", "web-backend")


def _base() -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The base manifests shoal takes as they are (Namespaces, the Gateways served here)
    and the Services and Deployments of the backends, by name."""
    docs = k8s(SUITE / "base" / "manifests.yaml")
    kept = [d for d in docs if d["kind"] == "Namespace"
            or (d["kind"] == "Gateway" and d["metadata"]["name"] in BASE_GATEWAYS)]
    for d in kept:
        if d["kind"] == "Gateway":
            d["spec"]["gatewayClassName"] = "shoal"  # the suite's placeholder
    backends = {f"{d['kind']}/{d['metadata']['name']}": d for d in docs
                if d["metadata"]["name"] in BACKENDS}
    return kept, backends


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    work = tmp_path_factory.mktemp("gw-conformance")
    kept, backends = _base()
    with ControlPlaneProcess(work, lease_ttl=6.0) as cp:
        procs: list[_Process] = []
        try:
            shoal_docs = []
            for name in BACKENDS:
                svc, dep = backends[f"Service/{name}"], backends[f"Deployment/{name}"]
                ns, port = svc["metadata"]["namespace"], free_port()
                app = _Process(name, work / "logs" / f"{name}.log")
                app._spawn([sys.executable, "-m", "shoal.testing.apps", "http"],
                           {"PORT": str(port), "NAME": f"{name}-0"})
                procs.append(app)
                shoal_docs += [
                    {"apiVersion": "mesh.shoal.io/v1alpha1", "kind": "Service",
                     "metadata": {"name": name, "namespace": ns},
                     "spec": {"selector": svc["spec"]["selector"],
                              "ports": [{"name": "http", "port": 8080}]}},
                    {"apiVersion": "mesh.shoal.io/v1alpha1", "kind": "Workload",
                     "metadata": {"name": f"{name}-0", "namespace": ns},
                     "spec": {"address": "127.0.0.1",
                              "labels": dep["spec"]["template"]["metadata"]["labels"],
                              "ports": {"http": port}}}]
            with cp.client() as c:
                c.apply(yaml.safe_dump_all([*kept, *shoal_docs]))
            procs += [serve(cp, work, name) for name in BASE_GATEWAYS]
            cp.wait_synced({f"{name}-gw" for name in BASE_GATEWAYS})
            yield cp
        finally:
            for p in procs:
                p.stop()


def serve(cp: ControlPlaneProcess, work: Path, name: str, port: int = 80,
          extra: Sequence[str] = ()) -> _Process:
    """``shoal gateway run`` for the suite's Gateway ``name``, on ``port`` of its own
    loopback address (GATEWAYS); ``extra``: more options (credentials)."""
    return gateway_process(cp, work, name, f"{name}-gw", [port], namespace=INFRA,
                           extra=["--address", GATEWAYS[name], *extra])


def call(path: str, *, host: str = "example.com", method: str = "GET",
         headers: dict[str, str] | None = None, gateway: str = "same-namespace"
         ) -> tuple[httpx.Response, dict[str, Any]]:
    r = httpx.request(method, f"http://{GATEWAYS[gateway]}{path}",
                      headers={"host": host, **(headers or {})}, timeout=10)
    body = r.json() if r.headers.get("content-type") == "application/json" else {}
    return r, body


def backend(path: str = "/", **kw: Any) -> str:
    r, body = call(path, **kw)
    return str(body.get("served_by", r.status_code)).rsplit("-", 1)[0]


def status_of(cp: ControlPlaneProcess, name: str, namespace: str = INFRA) -> dict[str, Any]:
    with cp.client() as c:
        [parent] = c.get("HTTPRoute", namespace, name)["status"]["parents"]
    return {x["type"]: (x["status"], x["reason"]) for x in parent["conditions"]}


# -- the cases: what each of the suite's files must do --------------------------------------

V1, V2, V3 = "infra-backend-v1", "infra-backend-v2", "infra-backend-v3"




def _exact(cp: ControlPlaneProcess) -> None:
    assert (backend("/one"), backend("/two")) == (V1, V2)
    assert backend("/one/example") == "404" and backend("/") == "404"




def _across_routes(cp: ControlPlaneProcess) -> None:
    """Two routes' rules for one hostname are ordered together; the second route's
    rules do not reach a hostname it does not name."""
    assert backend("/v2/example", host="example.com") == V2
    assert backend("/", host="example.com", headers={"version": "two"}) == V2
    assert backend("/", host="example.com") == V1
    assert backend("/v2", host="example.net") == V1
    assert backend("/", host="example.net", headers={"version": "two"}) == V1
    assert backend("/", host="example.org") == "404"


def _methods(cp: ControlPlaneProcess) -> None:
    assert backend(method="POST") == V1 and backend(method="GET") == V2
    assert backend("/path1", method="GET") == V1  # a path beats a method
    assert backend(method="PUT", headers={"version": "one"}) == V2
    assert backend("/path2", method="POST", headers={"version": "two"}) == V3
    assert backend("/path3", method="PATCH") == V1
    assert backend("/path4", method="DELETE", headers={"version": "three"}) == V1
    assert backend("/path5", method="GET") == V1
    assert backend(method="PATCH") == V2
    assert backend(method="DELETE", headers={"version": "four"}) == V3


def _path_order(cp: ControlPlaneProcess) -> None:
    assert backend("/match") == V1 and backend("/match/exact") == V2
    assert backend("/match/exact/one") == V3
    assert backend("/match/prefix/one/any") == V2  # the longest prefix
    assert backend("/match/prefix/any") == V1 and backend("/match/any") == V3
    assert backend("/match/exact/another") == V3


def _headers(cp: ControlPlaneProcess) -> None:
    assert backend(headers={"version": "one"}) == V1
    assert backend(headers={"version": "two"}) == V2
    assert backend(headers={"version": "two", "color": "orange"}) == V1  # more headers
    assert backend(headers={"color": "blue"}) == V1 and backend(headers={"color": "green"}) == V1
    assert backend(headers={"color": "red"}) == V2 and backend(headers={"color": "yellow"}) == V2
    assert backend() == "404"






def _rewrite_host(cp: ControlPlaneProcess) -> None:
    _, body = call("/one", host="rewrite.example")
    assert body["served_by"].startswith(V1) and body["headers"]["host"] == "one.example.org"
    _, body = call("/", host="rewrite.example")
    assert body["served_by"].startswith(V2) and body["headers"]["host"] == "example.org"


def _response_headers(cp: ControlPlaneProcess) -> None:
    assert call("/set")[0].headers["x-header-set"] == "set-overwrites-values"
    assert call("/add")[0].headers["x-header-add"] == "add-appends-values"
    multi = call("/multiple")[0].headers
    assert multi["x-header-set-1"] == "header-set-1" and multi["x-header-add-3"] == \
        "header-add-3"


def _cross_namespace(cp: ControlPlaneProcess) -> None:
    """A route in a namespace the listener selects by label attaches to it."""
    assert backend(gateway="backend-namespaces") == "web-backend"
    assert status_of(cp, "cross-namespace", "gateway-conformance-web-backend")[
        "Accepted"] == ("True", "Accepted")


def _reference_grant(cp: ControlPlaneProcess) -> None:
    assert backend() == "web-backend"


def _not_granted(cp: ControlPlaneProcess) -> None:
    assert call("/")[0].status_code == 500
    assert status_of(cp, "invalid-cross-namespace-backend-ref")["ResolvedRefs"] == (
        "False", "RefNotPermitted")


def _nonexistent(cp: ControlPlaneProcess) -> None:
    assert call("/")[0].status_code == 500
    assert status_of(cp, "invalid-nonexistent-backend-ref")["ResolvedRefs"] == (
        "False", "BackendNotFound")


def _unattached(route: str) -> Callable[[ControlPlaneProcess], None]:
    def check(cp: ControlPlaneProcess) -> None:
        assert status_of(cp, route)["Accepted"] == ("False", "NoMatchingParent")
        assert call("/")[0].status_code == 404
    return check


def _other_namespace_not_allowed(cp: ControlPlaneProcess) -> None:
    """A route from a namespace the listener does not take (from: Same) is not attached."""
    assert status_of(cp, "invalid-cross-namespace-parent-ref",
                     "gateway-conformance-web-backend")["Accepted"] == (
        "False", "NotAllowedByListeners")
    assert call("/")[0].status_code == 404


def _omitted_backends(cp: ControlPlaneProcess) -> None:
    assert call("/omitted-no-forward")[0].status_code == 500
    assert call("/empty-no-forward")[0].status_code == 500
    assert backend("/other") == V1


def _see_other(cp: ControlPlaneProcess) -> None:
    r, _ = call("/see-other")
    assert r.status_code == 303 and r.headers["location"].endswith("/see-other")


PASSING: dict[str, Callable[[ControlPlaneProcess], None]] = {
    "httproute-exact-path-matching.yaml": _exact,
    "httproute-matching-across-routes.yaml": _across_routes,
    "httproute-method-matching.yaml": _methods,
    "httproute-path-match-order.yaml": _path_order,
    "httproute-header-matching.yaml": _headers,
    "httproute-303-redirect.yaml": _see_other,
    "httproute-rewrite-host.yaml": _rewrite_host,
    "httproute-response-header-modifier.yaml": _response_headers,
    "httproute-cross-namespace.yaml": _cross_namespace,
    "httproute-reference-grant.yaml": _reference_grant,
    "httproute-invalid-cross-namespace-backend-ref.yaml": _not_granted,
    "httproute-invalid-nonexistent-backendref.yaml": _nonexistent,
    "httproute-invalid-cross-namespace-parent-ref.yaml": _other_namespace_not_allowed,
    "httproute-omitted-backendrefs.yaml": _omitted_backends,
    "httproute-invalid-parentref-not-matching-listener-port.yaml":
        _unattached("httproute-listener-not-matching-route-port"),
    "httproute-invalid-parentref-not-matching-section-name.yaml":
        _unattached("httproute-listener-not-matching-section-name"),
}


@pytest.mark.parametrize("name", sorted(PASSING))
def test_case_passes(suite: ControlPlaneProcess, name: str) -> None:
    run_case(suite, SUITE / "tests" / name, lambda: PASSING[name](suite),
             (AssertionError, KeyError, ValueError, httpx.HTTPError))


def _listener_hostnames(cp: ControlPlaneProcess) -> None:
    """Each route on one listener: a request goes to the listener whose hostname is the
    most specific one matching its host."""
    gw = "httproute-listener-hostname-matching"
    assert backend(host="bar.com", gateway=gw) == V1
    assert backend(host="foo.bar.com", gateway=gw) == V2
    for host in ("baz.bar.com", "multiple.prefixes.bar.com", "hi.foo.com"):
        assert backend(host=host, gateway=gw) in (V3, V1), host
    for host in ("foo.com", "no.matching.host"):
        assert backend(host=host, gateway=gw) == "404", host


def _hostname_intersection(cp: ControlPlaneProcess) -> None:
    gw = "httproute-hostname-intersection"
    assert backend("/s1", host="very.specific.com", gateway=gw) == V1
    assert backend("/s1", host="non.matching.com", gateway=gw) == "404"
    for host in ("foo.wildcard.io", "bar.wildcard.io", "foo.bar.wildcard.io"):
        assert backend("/s2", host=host, gateway=gw) == V2, host
    assert backend("/s2", host="wildcard.io", gateway=gw) == "404"
    assert backend("/s3", host="very.specific.com", gateway=gw) == V3
    assert backend("/s4", host="foo.anotherwildcard.io", gateway=gw) == V1
    assert backend("/s5", host="specific.but.wrong.com", gateway=gw) == "404"
    assert status_of(cp, "no-intersecting-hosts")["Accepted"] == (
        "False", "NoMatchingListenerHostname")
    every = "httproute-hostname-intersection-all"
    for host in ("first.com", "sub.first.com", "second.com", "sub.second.com"):
        assert backend(host=host, gateway=every) == V2, host
    assert backend(host="third.com", gateway=every) == "404"


# files that bring Gateways of their own: served for their case only
OWN: dict[str, tuple[Callable[[ControlPlaneProcess], None], tuple[str, ...]]] = {
    "httproute-listener-hostname-matching.yaml": (
        _listener_hostnames, ("httproute-listener-hostname-matching",)),
    "httproute-hostname-intersection.yaml": (
        _hostname_intersection, ("httproute-hostname-intersection",
                                 "httproute-hostname-intersection-all")),
}


@pytest.mark.parametrize("name", sorted(OWN))
def test_case_with_its_own_gateways_passes(suite: ControlPlaneProcess, name: str,
                                           tmp_path: Path) -> None:
    check, gateways = OWN[name]
    text = (SUITE / "tests" / name).read_text().replace("{GATEWAY_CLASS_NAME}", "shoal")
    (tmp_path / name).write_text(text)  # (the suite's placeholder filled in)
    procs = [serve(suite, tmp_path, gw) for gw in gateways]
    try:
        suite.wait_synced({f"{gw}-gw" for gw in gateways})
        run_case(suite, tmp_path / name, lambda: check(suite),
                 (AssertionError, KeyError, ValueError, httpx.HTTPError))
    finally:
        for p in procs:
            p.stop()


@pytest.mark.parametrize("name", sorted(SHARED))
def test_case_the_mesh_suite_has_too_passes(suite: ControlPlaneProcess, name: str) -> None:
    """The files both suites have, on the same-namespace Gateway: the same checks as on
    a Service, the gateway being the client's proxy (absolute-form requests)."""
    with httpx.Client(proxy=f"http://{GATEWAYS['same-namespace']}:80", timeout=10) as http:
        run_case(suite, SUITE / "tests" / name, lambda: SHARED[name](http),
                 (AssertionError, KeyError, ValueError, httpx.HTTPError))


# -- HTTPS: the base manifests' HTTPS Gateway, with a certificate of our own ------------------

HTTPS_GATEWAY = "same-namespace-with-https-listener"
HTTPS_NAMES = ("example.org", "second-example.org", "*.wildcard.org")


def _https(ca: Path) -> Callable[[], None]:
    def served(host: str) -> str:
        verify = ssl.create_default_context(cafile=str(ca))
        with httpx.Client(verify=verify, timeout=10) as http:
            r = http.get(f"https://{GATEWAYS[HTTPS_GATEWAY]}:443/", headers={"host": host},
                         extensions={"sni_hostname": host})
        return str(r.json()["served_by"]).rsplit("-", 1)[0]

    def check() -> None:
        # the route naming example.org on the listener without a hostname; the one
        # without hostnames on the listener for second-example.org
        assert served("example.org") == V1
        assert served("second-example.org") == V2
    return check


def _on_base_gateway(suite: ControlPlaneProcess, work: Path, gateway: str, file: str,
                     check: Callable[[], None], port: int = 80,
                     extra: Sequence[str] = ()) -> None:
    """A case on one of the base manifests' Gateways not served for the whole module:
    applied and served for this case, then removed."""
    [doc] = [d for d in k8s(SUITE / "base" / "manifests.yaml")
             if d["kind"] == "Gateway" and d["metadata"]["name"] == gateway]
    doc["spec"]["gatewayClassName"] = "shoal"  # the suite's placeholder
    with suite.client() as c:
        c.apply(yaml.safe_dump(doc))
    gw = serve(suite, work, gateway, port, extra)
    try:
        suite.wait_synced({f"{gateway}-gw"})
        run_case(suite, SUITE / "tests" / file, check,
                 (AssertionError, KeyError, ValueError, httpx.HTTPError))
    finally:
        gw.stop()
        with suite.client() as c:
            c.delete("gtw", INFRA, gateway)


def test_https_listener_passes(suite: ControlPlaneProcess, tmp_path: Path) -> None:
    """httproute-https-listener.yaml on the base manifests' HTTPS Gateway: TLS terminated
    with the gateway's credential (the Secret's name), routes chosen by listener and
    hostname."""
    ca = TestCA("conformance CA")  # a certificate for the names the cases call
    cert, key = ca.leaf(HTTPS_NAMES[0], dns=HTTPS_NAMES, client=False).write(tmp_path, "https")
    secret = "tls-validity-checks-certificate"  # (what the Gateway's certificateRefs name)
    _on_base_gateway(suite, tmp_path, HTTPS_GATEWAY, "httproute-https-listener.yaml",
                     _https(ca.write(tmp_path / "ca.pem")), 443,
                     ("--credential", f"{secret}={cert},{key}"))


def test_multiple_gateways_passes(suite: ControlPlaneProcess, tmp_path: Path) -> None:
    """httproute-multiple-gateways.yaml: one route shared by two Gateways, each with a
    dedicated route of its own besides."""
    def check() -> None:
        for gateway, own in (("same-namespace", V2), ("all-namespaces", V3)):
            assert backend("/shared", gateway=gateway) == V1
            assert backend("/", gateway=gateway) == own

    _on_base_gateway(suite, tmp_path, "all-namespaces", "httproute-multiple-gateways.yaml",
                     check)
