"""The agent's metrics endpoint without Envoy: who it answers, what it renders, how it
follows certificate renewals and root changes, and how it is planned and registered."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from shoal.agent.config import AgentConfig, make_plan, parse_metrics_port
from shoal.agent.identity import Svid
from shoal.agent.metrics import (
    MetricsEndpoint,
    ProxyMetrics,
    check_control_plane,
    check_scraper,
    endpoint_for,
    own_service_ports,
)
from shoal.agent.registration import workload_document
from shoal.ca.authority import WORKLOAD_DNS_NAME
from shoal.ca.peer_cert import PeerCertificate, read_certificate
from shoal.ca.serving import SERVER_NAME
from shoal.envoy import free_port
from shoal.errors import AgentError, PermissionDenied, Unauthenticated
from shoal.gateway.agent import GatewayConfig
from shoal.gateway.agent import workload_document as gateway_document
from shoal.telemetry.ingest import ProxyCounters
from shoal.telemetry.model import LATENCY_BUCKETS_MS
from shoal.telemetry.prometheus import MeshCollector
from shoal.telemetry.report import StatsReport
from shoal.telemetry.scrape import METRICS_PATH, METRICS_PORT_ANNOTATION, default_scraper
from shoal.testing.pki import Leaf, TestCA

WEB = "spiffe://cluster.local/ns/default/sa/web"
SCRAPER = default_scraper()
BUCKETS = len(LATENCY_BUCKETS_MS) + 1


def report(requests: int = 3) -> StatsReport:
    return StatsReport.model_validate({
        "node": "web-1.default", "incarnation": "abc", "service": "web", "full": True,
        "http": [
            {"reporter": "source", "cluster": "outbound|9080||db.default.svc.cluster.local",
             "code": 200, "peer": "spiffe://cluster.local/ns/default/sa/db",
             "requests": requests, "durationBuckets": [requests] * BUCKETS},
            {"reporter": "destination", "cluster": "inbound|31000|http", "code": 503,
             "flags": "UF", "peer": "spiffe://cluster.local/ns/default/sa/client",
             "requests": 1, "durationBuckets": [1] * BUCKETS},
        ],
        "tcp": [{"reporter": "source", "cluster": "outbound|5432||pg.default.svc.cluster.local",
                 "connections": 2, "sentBytes": 10, "receivedBytes": 20}]})


# -- rendering -----------------------------------------------------------------------------

def test_render_is_the_control_planes_istio_series_and_nothing_else():
    ports = own_service_ports("default", "web", {"http": 8080})
    text = ProxyMetrics(service_ports=ports).render(report(), WEB).decode()
    counters = ProxyCounters(service_ports=ports)
    counters.apply(report(), WEB)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(MeshCollector(counters))
    control_plane = generate_latest(reg).decode()
    istio = [line for line in control_plane.splitlines() if "istio_" in line]
    assert text.splitlines() == istio
    assert "shoal_" not in text
    samples = {s.labels["reporter"]: s for f in text_string_to_metric_families(text)
               if f.name == "istio_requests" for s in f.samples}
    assert samples["source"].value == 3
    assert samples["source"].labels["source_principal"] == WEB
    assert samples["destination"].labels["destination_port"] == "8080"  # the service's
    assert samples["destination"].labels["destination_principal"] == WEB


def test_render_follows_the_cumulative_counts():
    metrics = ProxyMetrics()
    metrics.render(report(3), WEB)
    text = metrics.render(report(7), WEB).decode()
    assert 'reporter="source"' in text and "} 7.0" in text and "} 3.0" not in text


# -- who may call it -----------------------------------------------------------------------

def peer(leaf: Leaf) -> PeerCertificate:
    return read_certificate(leaf.cert.public_bytes(serialization.Encoding.DER))


def test_only_the_scraper_identity_is_answered():
    ca = TestCA()
    with pytest.raises(Unauthenticated):
        check_scraper(None, SCRAPER)
    with pytest.raises(PermissionDenied, match="may not read"):
        check_scraper(peer(ca.leaf(uris=[WEB])), SCRAPER)
    with pytest.raises(PermissionDenied):  # the same path in another trust domain
        check_scraper(peer(ca.leaf(uris=[SCRAPER.replace("cluster.local", "other")])),
                      SCRAPER)
    with pytest.raises(PermissionDenied):  # no SPIFFE ID at all
        check_scraper(peer(ca.leaf(dns=["prometheus"])), SCRAPER)
    check_scraper(peer(ca.leaf(uris=[SCRAPER])), SCRAPER)


def test_only_the_control_plane_reads_the_access_log():
    ca = TestCA()
    with pytest.raises(Unauthenticated):
        check_control_plane(None)
    refused = [
        ca.leaf(uris=[WEB], dns=[WORKLOAD_DNS_NAME]),  # a workload, as the CA issues them
        ca.leaf(uris=[SCRAPER], dns=[WORKLOAD_DNS_NAME]),  # the scraper is one too
        ca.leaf(uris=[WEB], dns=[SERVER_NAME]),  # a SPIFFE ID beside the name
        ca.leaf(dns=[SERVER_NAME, WORKLOAD_DNS_NAME]),
        ca.leaf(dns=["localhost"]),
        ca.leaf("shoal-control-plane"),  # a common name is no SAN
    ]
    for leaf in refused:
        with pytest.raises(PermissionDenied, match="only the control plane"):
            check_control_plane(peer(leaf))
    # the serving certificate's SANs (shoal.ca.serving.ServingCertificate)
    check_control_plane(peer(ca.leaf(dns=[SERVER_NAME, "localhost"], ips=["127.0.0.1"])))


def test_default_scraper_is_the_root_namespaces_prometheus():
    assert SCRAPER == "spiffe://cluster.local/ns/shoal-system/sa/prometheus"
    assert default_scraper("example.org") == \
        "spiffe://example.org/ns/shoal-system/sa/prometheus"


# -- the server: TLS, refusals, renewals ---------------------------------------------------

def svid(ca: TestCA, version: str) -> Svid:
    leaf = ca.leaf(uris=[WEB], dns=[WORKLOAD_DNS_NAME])
    now = dt.datetime.now(dt.UTC)
    return Svid(WEB, (leaf.cert_pem.decode(),), leaf.key_pem, (ca.pem.decode(),), version,
                format(leaf.cert.serial_number, "x"), now, now + dt.timedelta(hours=1), now)


@dataclass
class FakeIdentity:
    spiffe_id: str = WEB
    current: Svid | None = None
    callbacks: list[Callable[[Svid], None]] = field(default_factory=list)

    def subscribe(self, callback: Callable[[Svid], None]) -> None:
        self.callbacks.append(callback)

    def publish(self, new: Svid) -> None:
        self.current = new
        for cb in self.callbacks:
            cb(new)


@dataclass
class Served:
    url: str
    identity: FakeIdentity
    endpoint: MetricsEndpoint
    tmp: Path

    async def get(self, ca: TestCA, client: Leaf | None) -> httpx.Response:
        ctx = ssl.create_default_context(cadata=ca.pem.decode())
        if client is not None:
            files = client.write(self.tmp, f"client-{id(client)}")
            ctx.load_cert_chain(files.cert, files.key)
        async with httpx.AsyncClient(verify=ctx, timeout=5) as http:
            return await http.get(self.url, extensions={"sni_hostname": WORKLOAD_DNS_NAME})


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    identity = FakeIdentity()
    port = free_port()
    endpoint = MetricsEndpoint(identity, report, ProxyMetrics(), host="127.0.0.1", port=port,
                               scraper=SCRAPER)
    task = asyncio.create_task(endpoint.run())
    yield Served(f"https://127.0.0.1:{port}{METRICS_PATH}", identity, endpoint, tmp_path)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def until_listening(port: int, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.05)


async def test_refusals_and_renewal(served: Served):
    a, b = TestCA("root A"), TestCA("root B")
    assert not served.endpoint.scrapes
    served.identity.publish(svid(a, "1"))  # the first certificate: it starts listening
    await until_listening(served.endpoint.port)
    with pytest.raises(httpx.TransportError):  # no client certificate: no TLS session
        await served.get(a, None)
    with pytest.raises(httpx.TransportError):  # a certificate of another CA
        await served.get(a, TestCA("elsewhere").leaf(uris=[SCRAPER]))
    other = await served.get(a, a.leaf(uris=[WEB]))
    assert other.status_code == 403 and SCRAPER in other.json()["error"]
    ok = await served.get(a, a.leaf(uris=[SCRAPER]))
    assert ok.status_code == 200 and "istio_requests_total{" in ok.text
    assert ok.headers["content-type"].startswith("text/plain")
    assert served.endpoint.scrapes == 1

    # renewed under a new root (the old one pruned): the next handshake serves the new
    # certificate and trusts only the new root, on the same port
    served.identity.publish(svid(b, "2"))
    with pytest.raises(httpx.TransportError):  # the server's certificate is B's now
        await served.get(a, a.leaf(uris=[SCRAPER]))
    with pytest.raises(httpx.TransportError):  # a client certificate of the pruned root
        await served.get(b, a.leaf(uris=[SCRAPER]))
    assert (await served.get(b, b.leaf(uris=[SCRAPER]))).status_code == 200
    assert served.endpoint.tls.updates == 2


async def test_without_identity_nothing_is_served(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, "shoal.agent.metrics")
    port = free_port()
    endpoint = MetricsEndpoint(None, report, ProxyMetrics(), host="127.0.0.1", port=port,
                               scraper=SCRAPER)
    assert not endpoint.enabled
    await asyncio.wait_for(endpoint.run(), 5)  # returns at once
    assert "metrics endpoint is off" in caplog.text
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


# -- planning and registration -------------------------------------------------------------

def config(**kw: object) -> AgentConfig:
    return AgentConfig(service="web", port=8080, command=("app",), run_dir=Path("/tmp/m"),
                       **kw)  # type: ignore[arg-type]


def test_metrics_port_is_picked_last_or_given_or_off():
    ports = iter(range(30000, 30010))
    plan = make_plan(config(), pick_port=lambda: next(ports), suffix=lambda: "abcde")
    assert (plan.admin_port, plan.outbound_port, plan.inbound_port, plan.metrics_port) == (
        30000, 30001, 30002, 30003)
    assert make_plan(config(metrics_port=15020), pick_port=lambda: 1).metrics_port == 15020
    assert make_plan(config(metrics_port=0), pick_port=lambda: 1).metrics_port == 0
    assert parse_metrics_port(None) is None
    assert parse_metrics_port("off") == parse_metrics_port("0") == 0
    assert parse_metrics_port("15020") == 15020
    for bad in ("x", "70000", "-1"):
        with pytest.raises(AgentError, match="--metrics-port"):
            parse_metrics_port(bad)
    with pytest.raises(AgentError, match="--metrics-scraper"):
        make_plan(config(metrics_scraper="prometheus"), pick_port=lambda: 1)


def test_registered_only_when_served():
    plan = make_plan(config(metrics_port=15020), pick_port=lambda: 1)
    annotations = workload_document(config(), plan)["metadata"]["annotations"]
    assert annotations[METRICS_PORT_ANNOTATION] == "15020"
    no_identity = workload_document(config(), plan, has_identity=False)
    assert METRICS_PORT_ANNOTATION not in no_identity["metadata"]["annotations"]
    off = make_plan(config(metrics_port=0), pick_port=lambda: 1)
    assert METRICS_PORT_ANNOTATION not in workload_document(config(), off)["metadata"][
        "annotations"]
    gateway = GatewayConfig(config(), ports=(8443,))
    assert gateway_document(gateway, "gw-1", 15021)["metadata"]["annotations"][
        METRICS_PORT_ANNOTATION] == "15021"
    assert METRICS_PORT_ANNOTATION not in gateway_document(gateway, "gw-1")["metadata"][
        "annotations"]


def test_endpoint_for_takes_the_scraper_of_the_workloads_trust_domain():
    plan = make_plan(config(metrics_port=15020), pick_port=lambda: 1)
    other = FakeIdentity("spiffe://example.org/ns/default/sa/web")
    assert endpoint_for(config(), plan, other, report).scraper == \
        "spiffe://example.org/ns/shoal-system/sa/prometheus"
    given = "spiffe://cluster.local/ns/monitoring/sa/prom"
    endpoint = endpoint_for(config(metrics_scraper=given), plan, FakeIdentity(), report)
    assert (endpoint.scraper, endpoint.host, endpoint.port) == (given, "127.0.0.1", 15020)
    assert endpoint.enabled
