"""Issue 12, at scale: a real Prometheus scrapes every workload directly (Istio's
convention, docs/adr/0028).

A real control plane (workload credentials required), an echo server and a client under
real agents with Envoy (the test process plays the client app through its sidecar), an
ingress gateway routing to echo, and a real Prometheus configured by
`shoal prometheus config --mode workloads`:

* each agent's metrics endpoint refuses a caller without a client certificate and a mesh
  identity other than the scraper's (403), and answers the scraper with exactly the
  series (names, labels, values) the control plane's /metrics shows for that proxy;
* `GET /api/v1/prometheus/targets` lists the workloads for http_sd (401 anonymously);
* Prometheus, given only the printed config, finds the workloads, scrapes them over
  mTLS and counts exactly the requests sent.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from shoal.ca.authority import WORKLOAD_DNS_NAME
from shoal.telemetry.scrape import METRICS_PATH, TARGETS_PATH, WORKLOADS_JOB
from shoal.testing import prometheus
from shoal.testing.local import (
    AgentProcess,
    ControlPlaneProcess,
    _Process,
    free_port,
    wait_for,
)
from shoal.testing.prometheus import PrometheusProcess
from tests.e2e.conftest import agent_info, app_command

pytestmark = [pytest.mark.envoy, pytest.mark.slow]
PROMETHEUS = prometheus.BINARY
ECHO = "echo.default.svc.cluster.local"
GATEWAY = """apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: ingress}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: {port}, name: http, protocol: HTTP}}, hosts: ["*"]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo-ingress}}
spec:
  hosts: ["*"]
  gateways: [ingress]
  http: [{{route: [{{destination: {{host: echo, port: {{number: 8080}}}}}}]}}]
"""
Labels = frozenset[tuple[str, str]]


@dataclass
class Mesh:
    cp: ControlPlaneProcess
    workdir: Path
    proxy: str  # the client sidecar's outbound HTTP proxy
    gateway: str  # the ingress gateway's HTTP server
    info: dict[str, dict[str, Any]]  # workload -> its agent.json (the gateway's too)

    def send(self, n: int, status: int) -> None:
        with httpx.Client(proxy=self.proxy, timeout=10) as http:
            for _ in range(n):
                r = http.get("http://echo:8080/count", headers={"x-echo-status": str(status)})
                assert r.status_code == status

    def tls(self, namespace: str | None, service_account: str = "") -> ssl.SSLContext:
        """Verifies an agent's certificate as Prometheus does (mesh roots, the workloads'
        DNS name); presents NAMESPACE/SERVICE_ACCOUNT's genuine certificate (None: none)."""
        ctx = ssl.create_default_context(cafile=str(self.cp.ca_bundle))
        if namespace is not None:
            chain, key = self.cp.workload_certificate(namespace, service_account)
            cert = self.workdir / f"{namespace}.{service_account}.pem"
            key_file = self.workdir / f"{namespace}.{service_account}.key"
            cert.write_bytes(chain)
            key_file.write_bytes(key)
            ctx.load_cert_chain(cert, key_file)
        return ctx

    def scrape(self, workload: str, tls: ssl.SSLContext) -> httpx.Response:
        port = self.info[workload]["metricsPort"]
        with httpx.Client(verify=tls, timeout=10) as http:
            return http.get(f"https://127.0.0.1:{port}{METRICS_PATH}",
                            extensions={"sni_hostname": WORKLOAD_DNS_NAME})

    def control_plane_text(self) -> str:
        with self.cp.http() as http:
            return http.get("/metrics").raise_for_status().text


def requests_total(text: str, **match: str) -> dict[Labels, float]:
    """istio_requests_total samples whose labels include MATCH: label set -> value."""
    return {frozenset(s.labels.items()): s.value
            for f in text_string_to_metric_families(text) if f.name == "istio_requests"
            for s in f.samples if s.name == "istio_requests_total"
            and all(s.labels.get(k) == v for k, v in match.items())}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    workdir = tmp_path_factory.mktemp("workload-scrape")
    with ControlPlaneProcess(workdir, lease_ttl=6.0) as cp:
        agents = [AgentProcess(cp, service="echo", port=8080, name="echo-v1",
                               labels={"version": "v1"}, command=app_command("http")),
                  AgentProcess(cp, service="client", port=7000, name="client",
                               command=app_command("http"))]
        gw = _Process("gateway", workdir / "logs" / "gateway.log")
        gw_port, gw_run = free_port(), workdir / "run" / "ingress-1"
        try:
            for a in agents:
                a.start()
            gw._spawn([sys.executable, "-m", "shoal", "gateway", "run", "--name", "ingress",
                       "--workload", "ingress-1", "--label", "istio=ingressgateway",
                       "--port", str(gw_port), "--control-plane", cp.agent_url,
                       "--xds", cp.secure_xds, "--ca-bundle", str(cp.ca_bundle),
                       "--token-file", str(cp.token_file("default", "ingress")),
                       "--run-dir", str(gw_run), "--drain-seconds", "0.2",
                       "--lease-seconds", "6"],
                      {"SHOAL_LOG_LEVEL": os.environ.get("SHOAL_LOG_LEVEL", "info")})
            with cp.client() as c:
                c.apply(GATEWAY.format(port=gw_port))
            cp.wait_synced({*(a.name for a in agents), "ingress-1"})
            info = {a.name: agent_info(a) for a in agents}
            info["ingress-1"] = wait_for(lambda: json.loads(
                (gw_run / "agent.json").read_text()), 30, "the gateway's agent.json")
            proxy = f"http://127.0.0.1:{info['client']['outboundPort']}"
            gateway = f"http://127.0.0.1:{gw_port}"
            with httpx.Client(proxy=proxy, timeout=5) as http:
                wait_for(lambda: http.get("http://echo:8080/warmup").status_code == 200, 60,
                         "echo to be reachable through the mesh")
            with httpx.Client(timeout=5) as http:
                wait_for(lambda: http.get(f"{gateway}/warmup").status_code == 200, 60,
                         "echo to be reachable through the gateway")
            yield Mesh(cp, workdir, proxy, gateway, info)
        finally:
            gw.stop()
            for a in agents:
                a.stop()


def test_the_endpoint_answers_the_scraper_only(mesh: Mesh) -> None:
    assert all(i["metricsPort"] for i in mesh.info.values())
    scraper = mesh.tls("shoal-system", "prometheus")
    for workload in mesh.info:  # listening (and verified as a mesh workload's)
        wait_for(lambda w=workload: mesh.scrape(w, scraper).status_code == 200, 60,
                 f"{workload}'s metrics endpoint to answer the scraper")
    with pytest.raises(httpx.TransportError):  # no client certificate: no TLS session
        mesh.scrape("client", mesh.tls(None))
    other = mesh.scrape("client", mesh.tls("default", "intruder"))
    assert other.status_code == 403
    assert "shoal-system/sa/prometheus" in other.json()["error"]
    # a genuine workload certificate is no server certificate of the control plane's
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        port = mesh.info["client"]["metricsPort"]
        with httpx.Client(verify=scraper, timeout=10) as http:
            http.get(f"https://127.0.0.1:{port}{METRICS_PATH}",
                     extensions={"sni_hostname": "shoal-control-plane"})


def alike(mesh: Mesh, workload: str, tls: ssl.SSLContext, n: int, seen: list[Any],
          **match: str) -> dict[Labels, float] | None:
    """The workload's series matching MATCH once its endpoint and the control plane show
    the same ones (label sets and values), summing to N; None until then (the last
    readings are left in SEEN)."""
    mine = requests_total(mesh.scrape(workload, tls).text, **match)
    theirs = requests_total(mesh.control_plane_text(), **match)
    seen[:] = [mine, theirs]
    return mine if mine == theirs and sum(mine.values()) == n else None


def test_the_same_series_as_the_control_plane(mesh: Mesh) -> None:
    mesh.send(4, 203)
    with httpx.Client(timeout=10) as http:  # and from outside, through the gateway
        for _ in range(4):
            assert http.get(f"{mesh.gateway}/count",
                            headers={"x-echo-status": "203"}).status_code == 203
    scraper = mesh.tls("shoal-system", "prometheus")
    for workload, match in (
            ("client", {"reporter": "source", "source_workload": "client",
                        "destination_service": ECHO}),
            ("echo-v1", {"reporter": "destination", "destination_workload": "echo-v1",
                         "source_workload": "client", "destination_service": ECHO}),
            # a gateway reports what it forwards as the source, as Istio's do
            ("ingress-1", {"reporter": "source", "source_workload": "ingress-1",
                           "destination_service": ECHO})):
        seen: list[Any] = []
        try:
            series = wait_for(
                lambda w=workload, m=match, s=seen: alike(mesh, w, scraper, 4, s,
                                                          response_code="203", **m),
                60, f"{workload}'s endpoint and the control plane to show 4 requests alike")
        except TimeoutError as e:
            raise AssertionError(f"{e}\nendpoint: {seen[:1]}\ncontrol plane: {seen[1:]}"
                                 ) from None
        assert len(series) == 1
        labels = dict(next(iter(series)))
        assert labels["request_protocol"] == "http"
        if workload != "ingress-1":
            assert labels["connection_security_policy"] == "mutual_tls"
            assert labels["destination_port"] == "8080"  # the service port on both sides


def test_targets_for_http_sd(mesh: Mesh) -> None:
    anonymous = httpx.get(f"{mesh.cp.url}{TARGETS_PATH}", timeout=10)
    assert anonymous.status_code == 401

    def groups() -> dict[str, dict[str, Any]] | None:
        with mesh.cp.http() as http:
            found = {g["labels"]["workload"]: g
                     for g in http.get(TARGETS_PATH).raise_for_status().json()}
        return found if set(found) >= {"client", "echo-v1", "ingress-1"} else None

    found = wait_for(groups, 30, "every workload in the targets")
    echo = found["echo-v1"]
    assert echo["targets"] == [f"127.0.0.1:{mesh.info['echo-v1']['metricsPort']}"]
    assert echo["labels"] == {"namespace": "default", "workload": "echo-v1",
                              "service": "echo", "version": "v1"}
    assert found["ingress-1"]["targets"] == [
        f"127.0.0.1:{mesh.info['ingress-1']['metricsPort']}"]
    assert found["ingress-1"]["labels"]["service"] == "ingress"


@pytest.fixture
def prometheus(mesh: Mesh, tmp_path: Path) -> Iterator[str]:
    if PROMETHEUS is None:
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    out = subprocess.run(
        [sys.executable, "-m", "shoal", "-c", mesh.cp.url, "prometheus", "config",
         "--mode", "workloads", "--interval", "1s", "--refresh-interval", "1s",
         "--dir", str(tmp_path / "creds")],
        check=True, capture_output=True, text=True, timeout=120)
    config = yaml.safe_load(out.stdout)
    tls = config["scrape_configs"][0]["tls_config"]
    assert tls["server_name"] == WORKLOAD_DNS_NAME and not tls["insecure_skip_verify"]
    for name in ("token", "ca.pem", "cert.pem", "key.pem"):
        assert (tmp_path / "creds" / name).stat().st_mode & 0o777 == 0o600
    (tmp_path / "prometheus.yml").write_text(out.stdout)
    with PrometheusProcess(tmp_path / "prometheus.yml", tmp_path) as prom:
        yield prom.url


def query(url: str, promql: str) -> list[dict[str, Any]]:
    data = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5).json()
    return list(data["data"]["result"])


def value(url: str, promql: str) -> float | None:
    result = query(url, promql)
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_every_workload_and_counts_exactly(mesh: Mesh,
                                                              prometheus: str) -> None:
    up = f'up{{job="{WORKLOADS_JOB}"}}'
    wait_for(lambda: value(prometheus, f"sum({up})") == 3.0, 90,
             "prometheus to find the 3 workloads through http_sd and scrape them over mTLS")
    mesh.send(5, 418)
    selector = (f'istio_requests_total{{job="{WORKLOADS_JOB}",reporter="source",'
                f'destination_service="{ECHO}",response_code="418"}}')
    wait_for(lambda: value(prometheus, f"sum({selector})") == 5.0, 90,
             "prometheus to count the 5 requests")
    (series,) = query(prometheus, selector)
    # the target labels from http_sd, beside Istio's own
    assert {k: series["metric"][k] for k in ("namespace", "workload", "service")} == {
        "namespace": "default", "workload": "client", "service": "client"}
    # the destination's view of the same requests, from the echo workload's endpoint
    destination = selector.replace('"source"', '"destination"')
    wait_for(lambda: value(prometheus, f"sum({destination})") == 5.0, 60,
             "the destination side of the 5 requests")
    # the control plane's job keeps its own metrics, not a second count of the requests
    wait_for(lambda: value(prometheus, 'up{job="shoal"}') == 1.0, 60,
             "the control plane's own scrape")
    wait_for(lambda: value(prometheus, 'count(shoal_telemetry_stats_reports_total'
                                       '{job="shoal"})') == 1, 60,
             "the control plane's own metrics")
    assert query(prometheus, 'istio_requests_total{job="shoal"}') == []
