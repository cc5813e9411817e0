"""The Gateway API's own mesh conformance manifests (../shared/gateway-api-conformance,
unchanged) against shoal, through real sidecars (docs/gateway-api.md has the results).

The suite's Kubernetes objects are mapped onto shoal: each ``Service`` of the mesh
namespace becomes a shoal Service (its HTTP and gRPC ports), each ``Deployment`` an echo
process registered as a Workload with the Deployment's pod labels; a client workload with
a sidecar in the same namespace makes the calls. Each case applies the suite's route file
as it is and checks what the spec says the calls must see (written here in our words, not
copied from the suite's Go tests). Files shoal refuses by name are checked to be refused,
so the report stays true.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml

from shoal.errors import ValidationError
from shoal.testing.apps import GRPC_METHOD, METADATA_REQUEST
from shoal.testing.local import AgentProcess, ControlPlaneProcess, _Process, free_port, wait_for
from tests.e2e.conftest import agent_info, app_command

pytestmark = [pytest.mark.envoy, pytest.mark.slow]

SUITE = Path(__file__).resolve().parents[3] / "shared" / "gateway-api-conformance" \
    / "conformance"
NS = "gateway-conformance-mesh"
CONSUMER_NS = "gateway-conformance-mesh-consumer"


def _k8s(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _services(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The suite's Services as shoal's: HTTP and gRPC ports (TLS/TCP ports: no case here
    uses them)."""
    out = []
    for d in docs:
        if d["kind"] != "Service" or d["metadata"]["namespace"] != NS:
            continue
        ports = []
        for p in d["spec"]["ports"]:
            if p["name"] not in ("http", "http-alt", "grpc"):
                continue
            port = {"name": p["name"], "port": p["port"],
                    "protocol": "grpc" if p["name"] == "grpc" else "http"}
            if isinstance(p.get("targetPort"), int):
                port["targetPort"] = p["targetPort"]
            ports.append(port)
        out.append({"apiVersion": "mesh.shoal.io/v1alpha1", "kind": "Service",
                    "metadata": {"name": d["metadata"]["name"], "namespace": NS},
                    "spec": {"selector": d["spec"]["selector"], "ports": ports}})
    return out


class Caller(httpx.Client):
    """HTTP through the client's sidecar, and where its gRPC calls go (the same port);
    ``consumer``: the same from a client in the suite's consumer namespace."""

    grpc_target = ""
    consumer: Caller | None = None


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    docs = _k8s(SUITE / "mesh" / "manifests.yaml")
    work = tmp_path_factory.mktemp("conformance")
    deployments = [d for d in docs if d["kind"] == "Deployment"
                   and d["metadata"]["namespace"] == NS]
    with ControlPlaneProcess(work, lease_ttl=6.0) as cp:
        apps: list[_Process] = []
        client = AgentProcess(cp, service="client", port=7000, name="client", namespace=NS,
                              command=app_command("http"))
        consumer = AgentProcess(cp, service="client", port=7000, name="consumer-client",
                                namespace=CONSUMER_NS, command=app_command("http"))
        try:
            workloads = []
            for d in deployments:
                name = f"{d['metadata']['name']}-0"
                port, grpc_port = free_port(), free_port()
                for kind, p in (("http", port), ("grpc", grpc_port)):
                    app = _Process(f"{name}-{kind}", work / "logs" / f"{name}-{kind}.log")
                    app._spawn([sys.executable, "-m", "shoal.testing.apps", kind],
                               {"PORT": str(p), "NAME": name})
                    apps.append(app)
                workloads.append({
                    "apiVersion": "mesh.shoal.io/v1alpha1", "kind": "Workload",
                    "metadata": {"name": name, "namespace": NS},
                    "spec": {"address": "127.0.0.1",
                             "labels": d["spec"]["template"]["metadata"]["labels"],
                             "ports": {"http": port, "http-alt": port,
                                       "grpc": grpc_port}}})
            with cp.client() as c:
                c.apply(yaml.safe_dump_all([*_services(docs), *workloads]))
            client.start()
            consumer.start()
            cp.wait_synced({"client", "consumer-client"})
            info = agent_info(client)
            proxy = f"http://127.0.0.1:{info['outboundPort']}"
            other = f"http://127.0.0.1:{agent_info(consumer)['outboundPort']}"
            with Caller(proxy=proxy, timeout=10) as http, \
                    Caller(proxy=other, timeout=10) as from_consumer:
                http.grpc_target = f"127.0.0.1:{info['outboundPort']}"
                http.consumer = from_consumer
                wait_for(lambda: http.get("http://echo/").status_code == 200, 60,
                         "the echo Service through the client's sidecar")
                yield cp, http
        finally:
            client.stop()
            consumer.stop()
            for a in apps:
                a.stop()


def call(http: httpx.Client, path: str, headers: dict[str, str] | None = None,
         host: str = "echo") -> tuple[httpx.Response, dict[str, Any]]:
    r = http.get(f"http://{host}{path}", headers=headers or {})
    body = r.json() if r.headers.get("content-type") == "application/json" else {}
    return r, body


def backend(http: httpx.Client, path: str, headers: dict[str, str] | None = None) -> str:
    _, body = call(http, path, headers)
    return str(body.get("served_by", "")).rsplit("-", 1)[0]


def seen_headers(http: httpx.Client, path: str, headers: dict[str, str]) -> dict[str, str]:
    _, body = call(http, path, headers)
    return {k.lower(): v for k, v in body["headers"].items()}


def grpc_echo(http: httpx.Client, metadata: tuple[tuple[str, str], ...] = ()
              ) -> dict[str, Any]:
    """One gRPC call to echo:7070 through the client's sidecar: who answered and the
    metadata it received."""
    assert isinstance(http, Caller)
    target = http.grpc_target
    with grpc.insecure_channel(target, options=[
            ("grpc.default_authority", "echo:7070")]) as channel:
        reply = channel.unary_unary(GRPC_METHOD)(METADATA_REQUEST, timeout=10,
                                                 metadata=metadata)
    out = json.loads(reply)
    out["served_by"] = str(out["served_by"]).rsplit("-", 1)[0]
    return out


# -- the cases: what each of the suite's files must do --------------------------------------

def _split(http: httpx.Client) -> None:
    assert backend(http, "/v1") == "echo-v1"
    assert backend(http, "/v2") == "echo-v2"


def _matching(http: httpx.Client) -> None:
    assert backend(http, "/") == "echo-v1"
    assert backend(http, "/example") == "echo-v1"
    assert backend(http, "/", {"version": "one"}) == "echo-v1"
    assert backend(http, "/v2") == "echo-v2"
    assert backend(http, "/v2/example") == "echo-v2"
    assert backend(http, "/", {"version": "two"}) == "echo-v2"
    assert backend(http, "/v2example") == "echo-v1"  # whole path segments


def _weight(http: httpx.Client) -> None:
    served = Counter(backend(http, "/") for _ in range(200))
    assert set(served) == {"echo-v1", "echo-v2"}, served
    assert abs(served["echo-v1"] - 140) <= 35, served  # 70 %: 5 standard deviations


def _request_headers(http: httpx.Client) -> None:
    assert seen_headers(http, "/set", {"X-Header-Set": "some-other-value"})[
        "x-header-set"] == "set-overwrites-values"
    assert "add-appends-values" in seen_headers(http, "/add", {"X-Header-Add": "x"})[
        "x-header-add"]
    assert "x-header-remove" not in seen_headers(http, "/remove", {"X-Header-Remove": "x"})
    multi = seen_headers(http, "/multiple", {"X-Header-Remove-1": "x", "X-Header-Set-1": "y"})
    assert multi["x-header-set-1"] == "header-set-1" and "x-header-remove-1" not in multi
    assert multi["x-header-add-3"] == "header-add-3"


def _rewrite(http: httpx.Client) -> None:
    assert call(http, "/prefix/one/two")[1]["path"] == "/one/two"
    assert call(http, "/strip-prefix/three")[1]["path"] == "/three"
    assert call(http, "/strip-prefix")[1]["path"] == "/"
    assert call(http, "/full/one/two")[1]["path"] == "/one"
    body = call(http, "/full/rewrite-path-and-modify-headers/x", {"X-Header-Remove": "r"})[1]
    assert body["path"] == "/test"
    assert "X-Header-Remove".lower() not in {k.lower() for k in body["headers"]}


def _redirect(status: int, path: str) -> Callable[[httpx.Client], None]:
    def check(http: httpx.Client) -> None:
        r, _ = call(http, path)
        assert r.status_code == status, (r.status_code, r.headers)
        assert r.headers["location"].endswith(path)
    return check


def _redirect_port(http: httpx.Client) -> None:
    r, _ = call(http, "/port")
    assert r.status_code == 302 and ":8083/port" in r.headers["location"]
    r, _ = call(http, "/port-and-host-and-status")
    assert r.status_code == 302 and "example.org:8083" in r.headers["location"]
    r, _ = call(http, "/port-and-status")
    assert r.status_code == 301


def _query(http: httpx.Client) -> None:
    assert backend(http, "/?animal=whale") == "echo-v1"
    assert backend(http, "/?animal=dolphin") == "echo-v2"
    assert backend(http, "/path1?animal=whale") == "echo-v1"


def _named(http: httpx.Client) -> None:
    assert backend(http, "/named") == "echo-v1"
    assert backend(http, "/unnamed") == "echo-v2"


def _ports(http: httpx.Client) -> None:
    r, _ = call(http, "/", host="echo-v1")
    assert r.headers.get("x-header-set") == "v1"
    r, _ = call(http, "/", host="echo-v1:8080")  # the route is on port 80 only
    assert "x-header-set" not in r.headers
    r, _ = call(http, "/", host="echo-v2:8080")  # this one on every port
    assert r.headers.get("x-header-set") == "v2"


def _redirect_scheme(http: httpx.Client) -> None:
    r, _ = call(http, "/scheme")
    assert r.status_code == 302 and r.headers["location"].startswith("https://")
    r, _ = call(http, "/scheme-and-host")
    assert r.headers["location"].startswith("https://example.org/scheme-and-host")
    assert call(http, "/scheme-and-status")[0].status_code == 301


def _redirect_host(http: httpx.Client) -> None:
    r, _ = call(http, "/hostname-redirect")
    assert r.status_code == 302
    assert r.headers["location"] == "http://example.org/hostname-redirect"
    assert call(http, "/host-and-status")[0].status_code == 301


def _frontend(http: httpx.Client) -> None:
    r, _ = call(http, "/", host="echo-v2")
    assert r.headers.get("x-header-set") == "set"


def _consumer(http: httpx.Client) -> None:
    """The consumer namespace's route changes its own calls to echo-v1, nobody else's."""
    assert isinstance(http, Caller) and http.consumer is not None
    r, _ = call(http.consumer, "/", host=f"echo-v1.{NS}")
    assert r.status_code == 200 and r.headers.get("x-header-set") == "set"
    r, _ = call(http, "/", host="echo-v1")
    assert r.status_code == 200 and "x-header-set" not in r.headers


def _simple(http: httpx.Client) -> None:
    assert {backend(http, "/") for _ in range(10)} == {"echo-v1"}


def _grpc_weight(http: httpx.Client) -> None:
    served = Counter(grpc_echo(http)["served_by"] for _ in range(100))
    assert set(served) == {"echo-v1", "echo-v2"}, served
    assert abs(served["echo-v1"] - 70) <= 23, served  # 5 standard deviations


def _grpc_headers(http: httpx.Client) -> None:
    def seen(case: str, *extra: tuple[str, str]) -> tuple[str, dict[str, list[str]]]:
        out = grpc_echo(http, (("x-test-case", case), *extra))
        md: dict[str, list[str]] = {}
        for k, v in out["metadata"]:
            md.setdefault(k, []).append(v)
        return out["served_by"], md

    by, md = seen("set", ("x-header-set", "some-other-value"))
    assert by == "echo-v1" and md["x-header-set"] == ["set-overwrites-values"]
    _, md = seen("add", ("x-header-add", "header-val"))
    assert "add-appends-values" in md["x-header-add"]
    _, md = seen("remove", ("x-header-remove", "x"))
    assert "x-header-remove" not in md
    by, md = seen("multi", ("x-header-remove-1", "x"))
    assert by == "echo-v2" and md["x-header-set-1"] == ["header-set-1"]
    assert "x-header-remove-1" not in md


PASSING: dict[str, Callable[[httpx.Client], None]] = {
    "grpcroute-weight.yaml": _grpc_weight,
    "grpcroute-request-header-modifier.yaml": _grpc_headers,
    "httproute-simple-same-namespace.yaml": _simple,
    "mesh-consumer-route.yaml": _consumer,
    "mesh-split.yaml": _split,
    "httproute-matching.yaml": _matching,
    "httproute-weight.yaml": _weight,
    "httproute-request-header-modifier.yaml": _request_headers,
    "httproute-request-header-modifier-backend.yaml": _request_headers,
    "httproute-rewrite-path.yaml": _rewrite,
    "httproute-303-redirect.yaml": _redirect(303, "/redirect"),
    "httproute-307-redirect.yaml": _redirect(307, "/temporary"),
    "httproute-308-redirect.yaml": _redirect(308, "/permanent"),
    "httproute-redirect-port.yaml": _redirect_port,
    "httproute-query-param-matching.yaml": _query,
    "httproute-named-rule.yaml": _named,
    "mesh-ports.yaml": _ports,
    "httproute-redirect-scheme.yaml": _redirect_scheme,
    "httproute-redirect-host-and-status.yaml": _redirect_host,
    "mesh-frontend.yaml": _frontend,
}
# files shoal refuses by name today, and why (docs/gateway-api.md)
REFUSED = {
    "httproute-redirect-path.yaml": "ReplacePrefixMatch in a redirect",
}


@pytest.mark.parametrize("name", sorted(PASSING))
def test_case_passes(suite, name: str) -> None:
    cp, http = suite
    text = (SUITE / "tests" / "mesh" / name).read_text()
    with cp.client() as c:
        c.apply(text)
    try:
        # five passes in a row: a default route cannot pass by chance that often
        wait_for(lambda: all(_passes(PASSING[name], http) for _ in range(5)), 60,
                 f"{name} to take effect")
    finally:
        with cp.client() as c:
            for d in _k8s(SUITE / "tests" / "mesh" / name):
                c.delete(d["kind"], d["metadata"]["namespace"], d["metadata"]["name"])


def _passes(check: Callable[[httpx.Client], None], http: httpx.Client) -> bool:
    try:
        check(http)
    except (AssertionError, KeyError, ValueError, httpx.HTTPError, grpc.RpcError):
        return False
    return True


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_case_refused_by_name(suite, name: str) -> None:
    cp, _ = suite
    with cp.client() as c, pytest.raises(ValidationError) as e:
        c.apply((SUITE / "tests" / "mesh" / name).read_text())
    assert "not supported by shoal yet" in str(e.value), str(e.value)
