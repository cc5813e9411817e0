"""The Gateway API's own mesh conformance manifests (../shared/gateway-api-conformance,
unchanged) against shoal, through real sidecars (docs/gateway-api.md has the results).

The suite's Kubernetes objects are mapped onto shoal: each ``Service`` of the mesh
namespace becomes a shoal Service (its HTTP and gRPC ports), each ``Deployment`` an echo
process registered as a Workload with the Deployment's pod labels; a client workload with
a sidecar in the same namespace makes the calls. Each case applies the suite's route file
as it is and checks what the spec says the calls must see (written here in our words, not
copied from the suite's Go tests). Every mesh file passes.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

import grpc
import httpx
import pytest
import yaml

from shoal.testing.apps import GRPC_METHOD, METADATA_REQUEST
from shoal.testing.local import AgentProcess, ControlPlaneProcess, _Process, free_port, wait_for
from tests.e2e.conformance import SHARED, SUITE, backend, call, k8s, redirect, run_case
from tests.e2e.conftest import agent_info, app_command

pytestmark = [pytest.mark.envoy, pytest.mark.slow]

NS = "gateway-conformance-mesh"
CONSUMER_NS = "gateway-conformance-mesh-consumer"


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
    docs = k8s(SUITE / "mesh" / "manifests.yaml")
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
    assert backend(http, "/v1") == "v1"
    assert backend(http, "/v2") == "v2"


















def _ports(http: httpx.Client) -> None:
    r, _ = call(http, "/", host="echo-v1")
    assert r.headers.get("x-header-set") == "v1"
    r, _ = call(http, "/", host="echo-v1:8080")  # the route is on port 80 only
    assert "x-header-set" not in r.headers
    r, _ = call(http, "/", host="echo-v2:8080")  # this one on every port
    assert r.headers.get("x-header-set") == "v2"






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
    **SHARED,
    "httproute-303-redirect.yaml": redirect(303, "/redirect"),
    # (the suite's request header modifier on a backend: the same expectations)
    "httproute-request-header-modifier-backend.yaml": SHARED[
        "httproute-request-header-modifier.yaml"],
    "grpcroute-weight.yaml": _grpc_weight,
    "grpcroute-request-header-modifier.yaml": _grpc_headers,
    "mesh-consumer-route.yaml": _consumer,
    "mesh-split.yaml": _split,
    "mesh-ports.yaml": _ports,
    "mesh-frontend.yaml": _frontend,
}
@pytest.mark.parametrize("name", sorted(PASSING))
def test_case_passes(suite, name: str) -> None:
    cp, http = suite
    run_case(cp, SUITE / "tests" / "mesh" / name, lambda: PASSING[name](http),
             (AssertionError, KeyError, ValueError, httpx.HTTPError, grpc.RpcError))
