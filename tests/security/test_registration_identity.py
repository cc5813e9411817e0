"""Registration bound to identity (issue 11 part 3 and the remote-secret half of part 7,
docs/adr/0021-registration-bound-to-identity.md), against a real control plane that
requires tokens: each reproduced attack is refused and leaves the store unchanged, and
a real agent still registers, heartbeats, gets SYNCED and deregisters."""

from __future__ import annotations

import ssl
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from shoal.ca import pki
from shoal.ca.csr import make_csr
from shoal.demo.clusters import east_west_gateway
from shoal.testing.local import AgentProcess, ControlPlaneProcess, wait_for

pytestmark = [pytest.mark.slow]
LEASE = 4.0
APP = [sys.executable, "-m", "shoal.testing.apps", "http"]
TD = "spiffe://cluster.local"
TLS_MODE = "security.shoal.io/tlsMode"
GATEWAY = "networking.shoal.io/gateway"
ALLOWED = "security.shoal.io/service-accounts"


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    with ControlPlaneProcess(tmp_path_factory.mktemp("cp"), lease_ttl=LEASE) as cp:
        yield cp


class Agent:
    """Raw agent-API calls over the agents' TLS listener with one workload token."""

    def __init__(self, cp: ControlPlaneProcess, namespace: str, sa: str) -> None:
        self.token = cp.create_token(namespace, sa)
        self.http = httpx.Client(
            base_url=cp.agent_url, timeout=10,
            verify=ssl.create_default_context(cafile=str(cp.ca_bundle)),
            headers={"Authorization": f"Bearer {self.token}"})

    def register(self, workload: dict[str, Any], service: dict[str, Any] | None = None
                 ) -> httpx.Response:
        return self.http.post("/api/v1/workloads",
                              json={"workload": workload, "service": service})

    def heartbeat(self, ns: str, name: str) -> httpx.Response:
        return self.http.put(f"/api/v1/workloads/{ns}/{name}/heartbeat")

    def deregister(self, ns: str, name: str) -> httpx.Response:
        return self.http.delete(f"/api/v1/workloads/{ns}/{name}")


def workload(name: str, sa: str, *, ns: str = "default", app: str | None = None,
             labels: dict[str, str] | None = None, meta_labels: dict[str, str] | None = None,
             annotations: dict[str, str] | None = None, weight: int = 1) -> dict[str, Any]:
    return {"apiVersion": "mesh.shoal.io/v1alpha1", "kind": "Workload",
            "metadata": {"name": name, "namespace": ns, "labels": meta_labels or {},
                         "annotations": {"shoal.io/registered-by": "agent",
                                         **(annotations or {})}},
            "spec": {"address": "127.0.0.1", "serviceAccount": sa, "weight": weight,
                     "ports": {"http": 18080},
                     "labels": {"app": app or sa, **(labels or {})}}}


def service(name: str, *, ns: str = "default", annotations: dict[str, str] | None = None
            ) -> dict[str, Any]:
    return {"apiVersion": "mesh.shoal.io/v1alpha1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "annotations": annotations or {}},
            "spec": {"selector": {"app": name},
                     "ports": [{"name": "http", "port": 8080, "protocol": "http"}]}}


def revision(cp: ControlPlaneProcess) -> int:
    with cp.http() as http:
        return int(http.get("/api/v1/resources").json()["revision"])


def stored(cp: ControlPlaneProcess, name: str, ns: str = "default") -> dict[str, Any] | None:
    with cp.http() as http:
        r = http.get(f"/api/v1/resources/Workload/{ns}/{name}")
    return r.json() if r.status_code == 200 else None


def apply(cp: ControlPlaneProcess, *docs: dict[str, Any]) -> None:
    with cp.http() as http:
        r = http.post("/api/v1/apply", json={"documents": list(docs)})
    assert r.status_code == 200, r.text


def refused(r: httpx.Response, status: int, *words: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    for w in words:
        assert w in r.json()["error"], (w, r.json()["error"])


def test_a_token_cannot_take_over_another_service_accounts_workload(
        cp: ControlPlaneProcess) -> None:
    web, attacker = Agent(cp, "default", "web"), Agent(cp, "default", "attacker")
    assert web.register(workload("web-1", "web"), service("web")).status_code == 200
    apply(cp, {**workload("db-1", "db"), "metadata": {"name": "db-1", "namespace": "default"}})
    before, web_1 = revision(cp), stored(cp, "web-1")
    # the reproduced attack: re-register web-1 as `attacker`, plaintext, weight 128
    for name in ("web-1", "db-1"):  # registered by an agent, or applied by an operator
        r = attacker.register(workload(name, "attacker", app="web", weight=128,
                                       labels={TLS_MODE: "disabled"}))
        refused(r, 403, f"{TD}/ns/default/sa/{name[:-2]}", f"{TD}/ns/default/sa/attacker",
                "cannot take it over")
    refused(attacker.heartbeat("default", "web-1"), 403, "cannot renew or remove")
    refused(attacker.deregister("default", "web-1"), 403, "cannot renew or remove")
    refused(attacker.heartbeat("default", "nobody-1"), 404)
    refused(attacker.deregister("default", "nobody-1"), 404)
    assert revision(cp) == before and stored(cp, "web-1") == web_1
    # the owner still can; then the name is free
    assert web.heartbeat("default", "web-1").status_code == 200
    assert web.deregister("default", "web-1").status_code == 200
    assert stored(cp, "web-1") is None
    assert attacker.register(workload("web-1", "attacker")).status_code == 200
    assert attacker.deregister("default", "web-1").status_code == 200


def test_an_expired_lease_frees_the_name(cp: ControlPlaneProcess) -> None:
    web, other = Agent(cp, "default", "web"), Agent(cp, "default", "other")
    assert web.register(workload("web-2", "web")).status_code == 200
    refused(other.register(workload("web-2", "other")), 403, "cannot take it over")
    time.sleep(LEASE + 0.5)  # no heartbeat: the lease runs out
    assert other.register(workload("web-2", "other")).status_code == 200
    refused(web.heartbeat("default", "web-2"), 403)
    assert other.deregister("default", "web-2").status_code == 200


def test_fields_that_change_how_others_treat_a_workload_cannot_be_self_granted(
        cp: ControlPlaneProcess) -> None:
    web = Agent(cp, "default", "web")
    before = revision(cp)
    for doc in (workload("web-3", "web", labels={TLS_MODE: "disabled"}),
                workload("web-3", "web", meta_labels={TLS_MODE: "disabled"})):
        refused(web.register(doc), 403, TLS_MODE, "plaintext")
    for annotation in ("multicluster.shoal.io/remote-cluster",
                       "networking.shoal.io/east-west-port"):
        refused(web.register(workload("web-3", "web", annotations={annotation: "1"})), 403,
                annotation)
    refused(web.register(workload("web-3", "web"), service("web3", ns="other")), 403,
            "not in the workload's namespace")
    refused(web.register(workload("web-3", "web"),
                         service("web3", annotations={ALLOWED: "web"})), 403, ALLOWED)
    assert revision(cp) == before and stored(cp, "web-3") is None
    # an operator may make a workload plaintext; its own agent may then register it so
    legacy = Agent(cp, "default", "legacy")
    apply(cp, workload("legacy-1", "legacy", labels={TLS_MODE: "disabled"}))
    r = legacy.register(workload("legacy-1", "legacy", labels={TLS_MODE: "disabled"}))
    assert r.status_code == 200, r.text
    assert legacy.deregister("default", "legacy-1").status_code == 200


def test_a_service_or_gateway_of_other_identities_cannot_be_joined(
        cp: ControlPlaneProcess) -> None:
    reviews, attacker = Agent(cp, "default", "reviews"), Agent(cp, "default", "attacker")
    apply(cp, service("reviews"), service("ratings", annotations={ALLOWED: "ratings"}))
    assert reviews.register(workload("reviews-1", "reviews")).status_code == 200
    before = revision(cp)
    refused(attacker.register(workload("attacker-1", "attacker", app="reviews", weight=128)),
            403, "service default/reviews", f"{TD}/ns/default/sa/reviews",
            f"{TD}/ns/default/sa/attacker")
    # a service the operator pinned cannot be joined even while it has no workload yet
    refused(attacker.register(workload("attacker-1", "attacker", app="ratings")), 403,
            "service default/ratings admits the service accounts default/ratings only")
    # nor the east-west gateway's Gateway, from any namespace
    with cp.http() as http:
        r = http.post("/api/v1/apply", content=east_west_gateway(),
                      headers={"Content-Type": "application/yaml"})
    assert r.status_code == 200, r.text
    gw = Agent(cp, "default", "eastwest")
    as_gateway = {GATEWAY: "eastwest", "networking.shoal.io/gateway-ports": "15443"}
    assert gw.register(workload("eastwest-1", "eastwest", labels={
        "istio": "eastwestgateway"}, annotations=as_gateway)).status_code == 200
    before = revision(cp)
    rogue = Agent(cp, "team", "rogue")
    refused(rogue.register(workload("rogue-1", "rogue", ns="team", labels={
        "istio": "eastwestgateway"}, annotations=as_gateway)), 403,
            "Gateway default/cross-network-gateway")
    assert revision(cp) == before
    # the service's own identity joins (a second instance, another version)
    assert reviews.register(workload("reviews-2", "reviews")).status_code == 200
    assert Agent(cp, "default", "ratings").register(
        workload("ratings-1", "ratings")).status_code == 200
    for agent, name in ((reviews, "reviews-1"), (reviews, "reviews-2"), (gw, "eastwest-1")):
        assert agent.deregister("default", name).status_code == 200


def test_a_remote_secret_token_reads_discovery_and_nothing_else(
        cp: ControlPlaneProcess) -> None:
    reader = Agent(cp, "shoal-system", "cluster-reader")
    before = revision(cp)
    csr = make_csr(pki.new_key(), f"{TD}/ns/shoal-system/sa/cluster-reader")
    refused(reader.http.post("/api/v1/certificates", json={"csr": csr}), 403,
            "remote-secret identity", "obtain certificates")
    refused(reader.register(workload("reader-1", "cluster-reader", ns="shoal-system")), 403,
            "remote-secret identity")
    refused(reader.heartbeat("shoal-system", "reader-1"), 403, "remote-secret identity")
    refused(reader.deregister("shoal-system", "reader-1"), 403, "remote-secret identity")
    # what it is for: the discovery stream
    with reader.http.stream("GET", "/api/v1/discovery") as r:
        assert r.status_code == 200
        assert '"type": "SYNC"' in next(r.iter_lines())
    # in the root namespace only gateways register
    monitor = Agent(cp, "shoal-system", "monitor")
    refused(monitor.register(workload("monitor-1", "monitor", ns="shoal-system")), 403,
            "only gateways register in the root namespace")
    assert revision(cp) == before
    ingress = Agent(cp, "shoal-system", "ingress")
    r = ingress.register(workload("ingress-1", "ingress", ns="shoal-system",
                                  annotations={GATEWAY: "ingress"}))
    assert r.status_code == 200, r.text
    assert ingress.deregister("shoal-system", "ingress-1").status_code == 200


@pytest.mark.envoy
def test_a_real_agent_registers_heartbeats_and_deregisters(cp: ControlPlaneProcess) -> None:
    agent = AgentProcess(cp, service="echo", port=8080, name="echo-1", command=APP)
    with agent:
        cp.wait_synced({"echo-1"})
        first = wait_for(lambda: (w := stored(cp, "echo-1")) and "shoal.io/ready" not in
                         w["metadata"]["annotations"] and w, 30, "echo-1 ready")
        assert first["spec"]["serviceAccount"] == "echo"
        time.sleep(2 * LEASE)  # two leases: alive only through heartbeats
        assert stored(cp, "echo-1") == first  # renewed, never re-registered
        assert "heartbeat failed" not in agent.log_text()
    wait_for(lambda: stored(cp, "echo-1") is None, 10, "echo-1 deregistered")
    assert "deregistered" in agent.log_text()
