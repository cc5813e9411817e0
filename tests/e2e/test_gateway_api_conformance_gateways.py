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

import asyncio
import json
import os
import ssl
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import httpx
import pytest
import yaml

from shoal.testing.apps import METADATA_REQUEST
from shoal.testing.local import (
    ControlPlaneProcess,
    _Process,
    free_port,
    gateway_process,
    wait_for,
)
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
            "all-namespaces": "127.0.80.7",
            "grpcroute-listener-hostname-matching": "127.0.80.8",
            "httproute-listener-port-matching": "127.0.80.9",
            "same-namespace-with-http-listener-on-8080": "127.0.80.10"}
BACKENDS = ("infra-backend-v1", "infra-backend-v2", "infra-backend-v3", "web-backend",
            "app-backend-v1", "app-backend-v2")
GRPC_BACKENDS = ("grpc-infra-backend-v1", "grpc-infra-backend-v2", "grpc-infra-backend-v3")


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
                if d["metadata"]["name"] in (*BACKENDS, *GRPC_BACKENDS)}
    return kept, backends


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    work = tmp_path_factory.mktemp("gw-conformance")
    kept, backends = _base()
    with ControlPlaneProcess(work, lease_ttl=6.0) as cp:
        procs: list[_Process] = []
        try:
            shoal_docs = []
            (work / "requests").mkdir()
            for name in (*BACKENDS, *GRPC_BACKENDS):
                svc, dep = backends[f"Service/{name}"], backends[f"Deployment/{name}"]
                ns = svc["metadata"]["namespace"]
                grpc_backend = name in GRPC_BACKENDS  # (their ports' appProtocol: h2c)
                # an echo process per kind of port: HTTP (WebSocket too, `kubernetes.io/ws`
                # on HTTP/1.1), cleartext HTTP/2 (`kubernetes.io/h2c`), gRPC
                ports, served = [], {}
                for p in svc["spec"]["ports"]:
                    kind = "grpc" if grpc_backend else "h2c" \
                        if p.get("appProtocol") == "kubernetes.io/h2c" else "http"
                    if kind not in served:
                        served[kind] = free_port()
                        app = _Process(f"{name}-{kind}", work / "logs" / f"{name}-{kind}.log")
                        app._spawn([sys.executable, "-m", "shoal.testing.apps", kind],
                                   {"PORT": str(served[kind]), "NAME": f"{name}-0",
                                    "REQUEST_LOG": str(requests_of(work, name))})
                        procs.append(app)
                    ports.append({"name": p.get("name", kind), "port": p["port"],
                                  "protocol": {"h2c": "http2"}.get(kind, kind),
                                  "served": served[kind]})
                shoal_docs += [
                    {"apiVersion": "mesh.shoal.io/v1alpha1", "kind": "Service",
                     "metadata": {"name": name, "namespace": ns},
                     "spec": {"selector": svc["spec"]["selector"], "ports": [
                         {k: v for k, v in p.items() if k != "served"} for p in ports]}},
                    {"apiVersion": "mesh.shoal.io/v1alpha1", "kind": "Workload",
                     "metadata": {"name": f"{name}-0", "namespace": ns},
                     "spec": {"address": "127.0.0.1",
                              "labels": dep["spec"]["template"]["metadata"]["labels"],
                              "ports": {p["name"]: p["served"] for p in ports}}}]
            with cp.client() as c:
                c.apply(yaml.safe_dump_all([*kept, *shoal_docs]))
            procs += [serve(cp, work, name) for name in BASE_GATEWAYS]
            cp.wait_synced({f"{name}-gw" for name in BASE_GATEWAYS})
            yield cp
        finally:
            for p in procs:
                p.stop()


def requests_of(work: Path, backend: str) -> Path:
    """Where the backend ``backend`` writes down each request it gets (one JSON line)."""
    return work / "requests" / f"{backend}.jsonl"


def serve(cp: ControlPlaneProcess, work: Path, name: str, ports: Sequence[int] = (80,),
          extra: Sequence[str] = ()) -> _Process:
    """``shoal gateway run`` for the suite's Gateway ``name``, on ``ports`` of its own
    loopback address (GATEWAYS); ``extra``: more options (credentials)."""
    return gateway_process(cp, work, name, f"{name}-gw", ports, namespace=INFRA,
                           extra=["--address", GATEWAYS[name], *extra])


def call(path: str, *, host: str = "example.com", method: str = "GET",
         headers: dict[str, str] | None = None, gateway: str = "same-namespace",
         port: int = 80) -> tuple[httpx.Response, dict[str, Any]]:
    r = httpx.request(method, f"http://{GATEWAYS[gateway]}:{port}{path}",
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
# what a failing check raises
ERRORS = (AssertionError, KeyError, ValueError, httpx.HTTPError, grpc.RpcError,
          aiohttp.ClientError, TimeoutError)




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


def untouched(cp: ControlPlaneProcess, backend: str, path: str) -> bool:
    """Has ``backend`` got no request for ``path`` (a marker in it)?"""
    return not received(cp, backend, path)


def _unknown_kind(cp: ControlPlaneProcess) -> None:
    """A backend of a kind shoal has not is stored and said in status: its requests 500."""
    marker = uuid.uuid4().hex
    assert call(f"/?m={marker}")[0].status_code == 500
    assert untouched(cp, V1, marker)  # (the backend's name is a Service's)
    assert status_of(cp, "invalid-backend-ref-unknown-kind") == {
        "Accepted": ("True", "Accepted"), "ResolvedRefs": ("False", "InvalidKind")}


def _grants_for_nothing(cp: ControlPlaneProcess) -> None:
    """Grants that do not fit this reference (other kinds, namespaces, names) permit
    nothing: the cross-namespace backend's requests 500."""
    marker = uuid.uuid4().hex
    assert call(f"/?m={marker}")[0].status_code == 500
    assert untouched(cp, "web-backend", marker)
    assert status_of(cp, "reference-grant")["ResolvedRefs"] == ("False", "RefNotPermitted")


def _partly_granted(cp: ControlPlaneProcess) -> None:
    """A grant for one of two Services: the other's rule answers 500, the granted one
    serves."""
    marker = uuid.uuid4().hex
    assert call(f"/v2?m={marker}")[0].status_code == 500
    assert untouched(cp, "app-backend-v2", marker)
    assert backend("/") == "app-backend-v1"
    with cp.client() as c:
        [parent] = c.get("HTTPRoute", INFRA, "invalid-reference-grant")["status"]["parents"]
    [resolved] = [x for x in parent["conditions"] if x["type"] == "ResolvedRefs"]
    assert (resolved["status"], resolved["reason"]) == ("False", "RefNotPermitted")
    assert "app-backend-v2" in resolved["message"]
    assert "app-backend-v1" not in resolved["message"]


def _h2c(cp: ControlPlaneProcess) -> None:
    """The backend's h2c port is spoken to in cleartext HTTP/2 (its echo speaks nothing
    else)."""
    _, body = call("/")
    assert body["served_by"].startswith(V1) and body["protocol"] == "HTTP/2"


def _websocket(cp: ControlPlaneProcess) -> None:
    """A WebSocket through the gateway to the backend's WebSocket port: a text and a
    binary message come back as they were sent."""
    async def exchange() -> tuple[str, bytes]:
        async with aiohttp.ClientSession() as session, session.ws_connect(
                f"ws://{GATEWAYS['same-namespace']}/ws", headers={"Host": "example.com"},
                origin="ws://gateway/conformance") as ws:
            await ws.send_str("WebSocket through the mesh")
            text = await ws.receive_str(timeout=10)
            await ws.send_bytes(bytes(range(1, 8)))
            return text, await ws.receive_bytes(timeout=10)

    # (bounded: while the previous case's route lingers, an upgrade can go where no
    # answer comes)
    assert asyncio.run(asyncio.wait_for(exchange(), 10)) == (
        "WebSocket through the mesh", bytes(range(1, 8)))


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


def attempt(path: str, fail_first: int, *, status: int | None = None, delay_ms: int = 0,
            reset: bool = False) -> int:
    """The status a call gets when the backend fails the first ``fail_first`` attempts
    of it (with ``status``, after ``delay_ms``, or by resetting the connection) and
    answers 200 from then on: how many retries the gateway made, seen from outside."""
    headers = {"x-echo-id": uuid.uuid4().hex, "x-echo-fail-first": str(fail_first)}
    if status is not None:
        headers["x-echo-status"] = str(status)
    if delay_ms:
        headers["x-echo-delay-ms"] = str(delay_ms)
    if reset:
        headers["x-echo-reset"] = "1"
    return call(path, headers=headers)[0].status_code


def _retries(cp: ControlPlaneProcess) -> None:
    """``attempts`` retries on the listed codes only."""
    assert attempt("/retry/code-500-attempts-3", 2, status=500) == 200
    assert attempt("/retry/code-500-attempts-3", 4, status=500) == 500
    assert attempt("/retry/code-500-attempts-3", 2, status=503) == 503  # not listed
    for code in (500, 502, 503, 504):
        assert attempt("/retry/code-all-attempts-2", 1, status=code) == 200
        assert attempt("/retry/code-all-attempts-2", 3, status=code) == code


def _retries_with_timeouts(cp: ControlPlaneProcess) -> None:
    """An attempt that outlives ``backendRequest`` is retried; ``request`` bounds them
    all. (The backend's delays are five times the timeouts; the call that must succeed
    within the 400 ms request timeout needs a single retry.)"""
    path = "/retry/backend-request-timeout-200ms"
    assert attempt(path, 2, delay_ms=1000) == 200
    assert attempt(path, 3, delay_ms=1000) == 504
    path = "/retry/request-timeout-200ms"
    assert attempt(path, 1, status=500) == 200
    assert attempt(path, 4, status=500, delay_ms=100) == 504  # 4 x 100 ms: past 400 ms


def _retries_on_connection_errors(cp: ControlPlaneProcess) -> None:
    """A retry stanza without codes retries connections the backend resets."""
    assert attempt("/retry/no-status-code-attempts-3", 3, reset=True) == 200
    assert attempt("/retry/no-status-code-attempts-3", 4, reset=True) >= 500


def _timeouts(prefix: str) -> Callable[[ControlPlaneProcess], None]:
    """``/{prefix}``: a backend slower than the 500 ms timeout gives 504; ``0s``: none."""
    def check(cp: ControlPlaneProcess) -> None:
        slow = {"x-echo-delay-ms": "1500"}
        assert call(f"/{prefix}", headers=slow)[0].status_code == 504
        assert call(f"/disable-{prefix}", headers=slow)[0].status_code == 200
    return check


def received(cp: ControlPlaneProcess, backend: str, marker: str) -> list[dict[str, Any]]:
    """The requests ``backend`` got whose path carries ``marker``."""
    path = requests_of(cp.workdir, backend)
    lines = path.read_text().splitlines() if path.exists() else []
    return [r for r in map(json.loads, lines) if marker in r["path"]]


def _mirrors(paths: tuple[str, str], *mirrors: str) -> Callable[[ControlPlaneProcess], None]:
    """Each call is answered by v1 and a copy reaches every mirror, with the rule's
    header modifications (the second path's rule) when it has some."""
    def check(cp: ControlPlaneProcess) -> None:
        for path in paths:
            marker = uuid.uuid4().hex
            _, body = call(f"{path}?m={marker}", headers={"x-header-remove": "gone"})
            assert body["served_by"].startswith(V1)
            for m in mirrors:
                [copy] = wait_for(lambda m=m, marker=marker: received(cp, m, marker), 5,
                                  f"a copy at {m}")
                headers = {k.lower(): v for k, v in copy["headers"].items()}
                if "modify" in path:
                    assert headers["x-header-set"] == "set-overwrites-values"
                    assert "x-header-remove" not in headers
    return check


def _percentage_mirrors(cp: ControlPlaneProcess) -> None:
    """A share of the calls is mirrored: within 5 standard deviations over 200 calls."""
    with httpx.Client(timeout=10) as http:
        for path, percent in (("/percent-mirror", 20), ("/percent-mirror-fraction", 50),
                              ("/percent-mirror-and-modify-headers", 35)):
            marker = uuid.uuid4().hex
            for _ in range(200):
                r = http.get(f"http://{GATEWAYS['same-namespace']}{path}?m={marker}",
                             headers={"host": "example.com"})
                assert r.json()["served_by"].startswith(V1)
            counts: list[int] = []

            def settled(marker: str = marker, counts: list[int] = counts) -> bool:
                counts.append(len(received(cp, V2, marker)))  # (copies are sent aside)
                return len(counts) > 5 and len(set(counts[-5:])) == 1

            wait_for(settled, 20, "the mirrored copies", interval=0.2)
            mean, sd = 200 * percent / 100, (200 * percent / 100 * (1 - percent / 100)) ** .5
            assert abs(counts[-1] - mean) <= 5 * sd, (path, counts[-1])


def _backend_header_filters(cp: ControlPlaneProcess) -> None:
    """Each backend of a 50/50 split gets its own header modification."""
    seen = set()
    for _ in range(20):
        _, body = call("/")
        name = body["served_by"].rsplit("-", 1)[0]
        assert {k.lower(): v for k, v in body["headers"].items()}["backend"] == name
        seen.add(name)
    assert seen == {V1, V2}


# -- GRPCRoute: calls through the gateway to the gRPC echo backends ---------------------------

ECHO = "/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/"  # (the suite's service)


def grpc_backend(method: str = "Echo", metadata: tuple[tuple[str, str], ...] = (), *,
                 host: str = "example.com", gateway: str = "same-namespace"
                 ) -> tuple[str, dict[str, list[str]]]:
    """One gRPC call through the gateway: which backend answered (``unimplemented`` when
    no route takes it) and the metadata the backend received."""
    with grpc.insecure_channel(f"{GATEWAYS[gateway]}:80", options=[
            ("grpc.default_authority", host)]) as channel:
        try:
            reply = channel.unary_unary(ECHO + method)(METADATA_REQUEST, timeout=10,
                                                        metadata=metadata)
        except grpc.RpcError as e:
            if e.code() is grpc.StatusCode.UNIMPLEMENTED:  # the gateway's 404
                return "unimplemented", {}
            raise
    out = json.loads(reply)
    assert out["method"] == ECHO + method
    md: dict[str, list[str]] = {}
    for k, v in out["metadata"]:
        md.setdefault(k, []).append(v)
    return str(out["served_by"]).rsplit("-", 1)[0], md


G1, G2, G3 = GRPC_BACKENDS


def _grpc_methods(cp: ControlPlaneProcess) -> None:
    assert grpc_backend("Echo")[0] == G1 and grpc_backend("EchoTwo")[0] == G2
    assert grpc_backend("EchoThree")[0] == "unimplemented"


def _grpc_headers(cp: ControlPlaneProcess) -> None:
    def by(*md: tuple[str, str]) -> str:
        return grpc_backend("Echo", md)[0]

    assert by(("version", "one")) == G1 and by(("version", "two")) == G2
    assert by(("version", "two"), ("color", "orange")) == G1  # more headers win
    assert by(("color", "blue")) == G1 and by(("color", "green")) == G1
    assert by(("color", "red")) == G2 and by(("color", "yellow")) == G2
    assert by() == "unimplemented"


def _grpc_header_modifier(cp: ControlPlaneProcess) -> None:
    """Three rules match Echo: the first (set) takes it; EchoTwo's sets, adds, removes."""
    who, md = grpc_backend("Echo", (("x-header-set", "some-other-value"),))
    assert who == G1 and md["x-header-set"] == ["set-overwrites-values"]
    who, md = grpc_backend("EchoTwo", (("x-header-remove-1", "x"), ("x-header-add-1", "y")))
    assert who == G2 and md["x-header-set-1"] == ["header-set-1"]
    assert md["x-header-set-2"] == ["header-set-2"] and "x-header-remove-1" not in md
    assert "header-add-1" in md["x-header-add-1"] and "y" in md["x-header-add-1"]


def _grpc_weights(cp: ControlPlaneProcess) -> None:
    served = Counter(grpc_backend()[0] for _ in range(100))
    assert set(served) == {G1, G2}, served
    assert abs(served[G1] - 70) <= 23, served  # 70 %: 5 standard deviations


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
    "httproute-invalid-backendref-unknown-kind.yaml": _unknown_kind,
    "httproute-invalid-reference-grant.yaml": _grants_for_nothing,
    "httproute-partially-invalid-via-invalid-reference-grant.yaml": _partly_granted,
    "httproute-backend-protocol-websocket.yaml": _websocket,
    "httproute-backend-protocol-h2c.yaml": _h2c,
    "httproute-retry.yaml": _retries,
    "httproute-retry-with-timeouts.yaml": _retries_with_timeouts,
    "httproute-retry-connection-error.yaml": _retries_on_connection_errors,
    "httproute-timeout-request.yaml": _timeouts("request-timeout"),
    "httproute-timeout-backend-request.yaml": _timeouts("backend-timeout"),
    "httproute-request-mirror.yaml": _mirrors(("/mirror", "/mirror-and-modify-headers"),
                                              V2),
    "httproute-request-multiple-mirrors.yaml": _mirrors(
        ("/multi-mirror", "/multi-mirror-and-modify-request-headers"), V2, V3),
    "httproute-request-percentage-mirror.yaml": _percentage_mirrors,
    "httproute-request-header-modifier-backend-weights.yaml": _backend_header_filters,
    "grpcroute-exact-method-matching.yaml": _grpc_methods,
    "grpcroute-named-rule.yaml": _grpc_methods,
    "grpcroute-header-matching.yaml": _grpc_headers,
    "grpcroute-request-header-modifier.yaml": _grpc_header_modifier,
    "grpcroute-weight.yaml": _grpc_weights,
}


# checks counting hundreds of calls against 5-standard-deviation bounds: on a Gateway a
# call no route takes gets 404, so one pass cannot be chance (five: five times the calls)
STATISTICAL = frozenset({"httproute-weight.yaml", "grpcroute-weight.yaml",
                         "httproute-request-percentage-mirror.yaml"})


@pytest.mark.parametrize("name", sorted(PASSING))
def test_case_passes(suite: ControlPlaneProcess, name: str) -> None:
    run_case(suite, SUITE / "tests" / name, lambda: PASSING[name](suite), ERRORS,
             1 if name in STATISTICAL else 5)


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


def _listener_ports(cp: ControlPlaneProcess) -> None:
    """A route's parentRef port picks the listeners on that port (and sectionName one of
    them); each listener answers for its own hostname."""
    gw = "httproute-listener-port-matching"
    assert backend(host="foo.com", gateway=gw, port=80) == V1
    assert backend(host="bar.com", gateway=gw, port=80) == "404"
    assert backend(host="foo.com", gateway=gw, port=8080) == V2
    assert backend(host="bar.com", gateway=gw, port=8080) == V2
    assert backend(host="foo.com", gateway=gw, port=8090) == V3
    assert backend(host="bar.com", gateway=gw, port=8090) == "404"


def _grpc_listener_hostnames(cp: ControlPlaneProcess) -> None:
    gw = "grpcroute-listener-hostname-matching"
    assert grpc_backend(host="bar.com", gateway=gw)[0] == G1
    assert grpc_backend(host="foo.bar.com", gateway=gw)[0] == G2
    for host in ("baz.bar.com", "boo.bar.com", "multiple.prefixes.bar.com", "hi.foo.com"):
        assert grpc_backend(host=host, gateway=gw)[0] == G3, host
    for host in ("foo.com", "no.matching.host"):
        assert grpc_backend(host=host, gateway=gw)[0] == "unimplemented", host


def _disallowed_kind(cp: ControlPlaneProcess) -> None:
    """An HTTPRoute on a listener that takes TLSRoutes only is not accepted, and the
    listener says which kinds it supports and that nothing is attached."""
    assert status_of(cp, "disallowed-kind")["Accepted"] == ("False", "NotAllowedByListeners")
    with cp.client() as c:
        [listener] = c.get("gtw", INFRA, "tlsroutes-only")["status"]["listeners"]
    assert listener["attachedRoutes"] == 0
    assert [k["kind"] for k in listener["supportedKinds"]] == ["TLSRoute"]


# files that bring Gateways of their own: those named served for their case only, on the
# ports given (the others' checks read status)
OWN: dict[str, tuple[Callable[[ControlPlaneProcess], None], dict[str, tuple[int, ...]]]] = {
    "httproute-listener-hostname-matching.yaml": (
        _listener_hostnames, {"httproute-listener-hostname-matching": (80,)}),
    "httproute-hostname-intersection.yaml": (
        _hostname_intersection, {"httproute-hostname-intersection": (80,),
                                 "httproute-hostname-intersection-all": (80,)}),
    "httproute-listener-port-matching.yaml": (
        _listener_ports, {"httproute-listener-port-matching": (80, 8080, 8090)}),
    "grpcroute-listener-hostname-matching.yaml": (
        _grpc_listener_hostnames, {"grpcroute-listener-hostname-matching": (80,)}),
    "httproute-disallowed-kind.yaml": (_disallowed_kind, {}),
    "httproute-invalid-parentref-section-name-not-matching-port.yaml": (
        _unattached("httproute-listener-section-name-not-matching-port"), {}),
}


@pytest.mark.parametrize("name", sorted(OWN))
def test_case_with_its_own_gateways_passes(suite: ControlPlaneProcess, name: str,
                                           tmp_path: Path) -> None:
    check, gateways = OWN[name]
    text = (SUITE / "tests" / name).read_text().replace("{GATEWAY_CLASS_NAME}", "shoal")
    (tmp_path / name).write_text(text)  # (the suite's placeholder filled in)
    procs = [serve(suite, tmp_path, gw, ports) for gw, ports in gateways.items()]
    try:
        suite.wait_synced({f"{gw}-gw" for gw in gateways})
        run_case(suite, tmp_path / name, lambda: check(suite), ERRORS)
    finally:
        for p in procs:
            p.stop()


# (the request header modifier on a backend: the same expectations, as in the mesh suite)
BOTH = {**SHARED, "httproute-request-header-modifier-backend.yaml": SHARED[
    "httproute-request-header-modifier.yaml"]}


@pytest.mark.parametrize("name", sorted(BOTH))
def test_case_the_mesh_suite_has_too_passes(suite: ControlPlaneProcess, name: str) -> None:
    """The files both suites have, on the same-namespace Gateway: the same checks as on
    a Service, the gateway being the client's proxy (absolute-form requests)."""
    with httpx.Client(proxy=f"http://{GATEWAYS['same-namespace']}:80", timeout=10) as http:
        run_case(suite, SUITE / "tests" / name, lambda: BOTH[name](http), ERRORS,
                 1 if name in STATISTICAL else 5)


# -- HTTPS: the base manifests' HTTPS Gateway, with a certificate of our own ------------------

HTTPS_GATEWAY = "same-namespace-with-https-listener"
HTTPS_NAMES = ("example.org", "second-example.org", "*.wildcard.org", "unknown-example.org")


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
                     extra: Sequence[str] = (),
                     own: dict[str, tuple[int, ...]] | None = None) -> None:
    """A case on one of the base manifests' Gateways not served for the whole module:
    applied and served for this case, then removed; ``own``: the Gateways the file
    brings, served on the ports given."""
    [doc] = [d for d in k8s(SUITE / "base" / "manifests.yaml")
             if d["kind"] == "Gateway" and d["metadata"]["name"] == gateway]
    doc["spec"]["gatewayClassName"] = "shoal"  # the suite's placeholder
    with suite.client() as c:
        c.apply(yaml.safe_dump(doc))
    text = (SUITE / "tests" / file).read_text().replace("{GATEWAY_CLASS_NAME}", "shoal")
    (work / file).write_text(text)
    procs = [serve(suite, work, gateway, (port,), extra),
             *(serve(suite, work, name, ports) for name, ports in (own or {}).items())]
    try:
        suite.wait_synced({f"{gateway}-gw", *(f"{name}-gw" for name in own or {})})
        run_case(suite, work / file, check, ERRORS)
    finally:
        for p in procs:
            p.stop()
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


def test_misdirected_requests_pass(suite: ControlPlaneProcess, tmp_path: Path) -> None:
    """httproute-https-listener-detect-misdirected-requests.yaml: a request whose Host
    another listener of the port is for (or, on a listener with a hostname, any other
    Host) than the one its TLS server name chose gets 421; a Host nobody serves on the
    catch-all listener 404."""
    ca = TestCA("conformance CA")
    cert, key = ca.leaf(HTTPS_NAMES[0], dns=HTTPS_NAMES, client=False).write(tmp_path, "https")
    verify = ssl.create_default_context(cafile=str(ca.write(tmp_path / "ca.pem")))
    second, third, fourth, fifth, unknown = (
        "second-example.org", "third-example.wildcard.org", "fourth-example.wildcard.org",
        "fifth-example.wildcard.org", "unknown-example.org")
    cases = {  # (TLS server name, Host) -> who answers, or the status
        ("example.org", "example.org"): V1, ("example.org", second): "421",
        ("example.org", unknown): "404",
        (second, second): V2, (second, "example.org"): "421", (second, unknown): "421",
        (third, third): V3, (third, fifth): V3, (third, fourth): "421",
        (third, second): "421", (third, unknown): "421",
        (fourth, fourth): V1, (fourth, fifth): "421",
        (unknown, "example.org"): V1, (unknown, unknown): "404"}

    def check() -> None:
        got = {}
        for sni, host in cases:
            with httpx.Client(verify=verify, timeout=10) as http:  # a connection each
                r = http.get(f"https://{GATEWAYS[HTTPS_GATEWAY]}:443/detect-misdirected-"
                             "requests", headers={"host": host},
                             extensions={"sni_hostname": sni})
            got[sni, host] = (str(r.json()["served_by"]).rsplit("-", 1)[0]
                              if r.status_code == 200 else str(r.status_code))
        assert got == cases, {k: v for k, v in got.items() if cases[k] != v}

    secret = "tls-validity-checks-certificate"
    _on_base_gateway(suite, tmp_path, HTTPS_GATEWAY,
                     "httproute-https-listener-detect-misdirected-requests.yaml", check, 443,
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


def test_redirect_port_and_scheme_passes(suite: ControlPlaneProcess, tmp_path: Path) -> None:
    """httproute-redirect-port-and-scheme.yaml: a redirect without a port takes the
    scheme's well-known port when it sets a scheme, else the listener's; Location leaves
    out 80 for http and 443 for https."""
    ca = TestCA("conformance CA")
    cert, key = ca.leaf(HTTPS_NAMES[0], dns=HTTPS_NAMES, client=False).write(tmp_path, "https")
    verify = ssl.create_default_context(cafile=str(ca.write(tmp_path / "ca.pem")))
    on_8080 = "same-namespace-with-http-listener-on-8080"
    cases = {  # (gateway, its port, its scheme) -> path -> the Location expected
        ("same-namespace", 80, "http"): {
            "/scheme-nil-and-port-nil": "http://example.org",
            "/scheme-nil-and-port-80": "http://example.org",
            "/scheme-nil-and-port-8080": "http://example.org:8080",
            "/scheme-https-and-port-nil": "https://example.org",
            "/scheme-https-and-port-443": "https://example.org",
            "/scheme-https-and-port-8443": "https://example.org:8443"},
        (on_8080, 8080, "http"): {
            "/scheme-nil-and-port-nil": "http://example.org:8080",
            "/scheme-nil-and-port-80": "http://example.org",
            "/scheme-https-and-port-nil": "https://example.org"},
        (HTTPS_GATEWAY, 443, "https"): {
            "/scheme-nil-and-port-nil": "https://example.org",
            "/scheme-nil-and-port-443": "https://example.org",
            "/scheme-nil-and-port-8443": "https://example.org:8443",
            "/scheme-http-and-port-nil": "http://example.org",
            "/scheme-http-and-port-80": "http://example.org",
            "/scheme-http-and-port-8080": "http://example.org:8080"}}

    def check() -> None:
        wrong = []
        with httpx.Client(verify=verify, timeout=10) as http:
            for (gateway, port, scheme), paths in cases.items():
                for path, origin in paths.items():
                    r = http.get(f"{scheme}://{GATEWAYS[gateway]}:{port}{path}",
                                 headers={"host": "example.org" if port in (80, 443)
                                          else f"example.org:{port}"},
                                 extensions={"sni_hostname": "example.org"})
                    if r.status_code != 302 or r.headers["location"] != origin + path:
                        wrong.append((gateway, path, r.status_code,
                                      r.headers.get("location")))
        assert not wrong, wrong

    secret = "tls-validity-checks-certificate"
    _on_base_gateway(suite, tmp_path, HTTPS_GATEWAY, "httproute-redirect-port-and-scheme.yaml",
                     check, 443, ("--credential", f"{secret}={cert},{key}"),
                     own={on_8080: (8080,)})
