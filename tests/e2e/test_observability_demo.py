"""Observability on real traffic: the demo under `shoal up`, faults injected with
VirtualServices, and what the control plane makes of it -- Prometheus metrics, SLO budget
burn (availability and latency), and the dashboard's graph in headless Chromium."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import httpx
import pytest
import yaml

from shoal.testing.local import wait_for
from shoal.testing.prometheus import PrometheusProcess
from tests.conftest import ARTIFACTS, Browser
from tests.e2e.conftest import Up
from tests.telemetry.test_slo_rules import prometheus_binary

__all__ = ["prometheus_binary"]  # a fixture, used by name

pytestmark = [pytest.mark.envoy, pytest.mark.slow]

SLOS = """
apiVersion: telemetry.shoal.io/v1alpha1
kind: ServiceLevelObjective
metadata: {name: reviews-availability, namespace: default}
spec: {service: reviews, sli: {availability: {}}, target: 99, window: 1h}
---
apiVersion: telemetry.shoal.io/v1alpha1
kind: ServiceLevelObjective
metadata: {name: ratings-latency, namespace: default}
spec: {service: ratings, sli: {latency: {thresholdMs: 100}}, target: 99, window: 1h}
"""
FAULTS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - fault:
      abort: {httpStatus: 503, percentage: {value: 50}}
    route: [{destination: {host: reviews, subset: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  http:
  - fault:
      delay: {fixedDelay: 300ms, percentage: {value: 100}}
    route: [{destination: {host: ratings}}]
"""


def traffic(up: Up, n: int) -> None:
    with httpx.Client(timeout=30) as http:
        for _ in range(n):
            http.get(up.page)


def slo(up: Up, name: str) -> dict:
    slos = json.loads(up.shoal("slo", "status", "-o", "json").stdout)
    items = slos if isinstance(slos, list) else slos.get("slos", slos.get("items", []))
    return next(s for s in items if name in json.dumps(s))


@pytest.fixture(scope="module")
def faulty(up: Up) -> Up:
    with up.shoal_input(SLOS) as path:
        up.shoal("apply", "-f", path)
    with up.shoal_input(FAULTS) as path:
        up.shoal("apply", "-f", path)
    wait_for(lambda: up.reviews(1) == {"reviews-v2": 1}, 20, "the fault VirtualServices")
    traffic(up, 40)
    return up


def test_errors_and_latency_show_in_prometheus_metrics(faulty: Up) -> None:
    def metrics() -> str | None:
        text = httpx.get(f"{faulty.api}/metrics", headers=faulty.auth, timeout=5).text
        return text if 'response_code="503"' in text else None

    text = wait_for(metrics, 30, "503s in /metrics")
    edge = re.compile(r'istio_requests_total\{[^}]*destination_service_name="reviews"'
                      r'[^}]*response_code="(\d+)"[^}]*\} (\d+)')
    codes = {code: float(n) for code, n in edge.findall(text)}
    assert codes.get("503", 0) > 0 and codes.get("200", 0) > 0
    assert 'source_workload="productpage-v1"' in text
    assert "istio_request_duration_milliseconds_bucket" in text


def test_an_injected_fault_burns_the_availability_budget(faulty: Up) -> None:
    status = wait_for(lambda: (s := slo(faulty, "reviews-availability"))["state"] != "OK" and s,
                      40, "the reviews SLO to alert")
    assert status["state"] in ("WARNING", "CRITICAL")
    # 50 % errors against a 1 % budget: burning ~50x, the budget is gone
    text = json.dumps(status)
    assert "burn" in text.lower()


def test_a_latency_fault_burns_the_latency_sli(faulty: Up) -> None:
    status = wait_for(lambda: (s := slo(faulty, "ratings-latency"))["state"] != "OK" and s, 40,
                      "the ratings latency SLO to alert")
    assert status["state"] in ("WARNING", "CRITICAL")


def test_traffic_from_outside_the_mesh_is_seen_by_its_destination(faulty: Up) -> None:
    """The product page serves callers without a sidecar: only its own sidecar (the
    destination reporter) sees them, and the graph shows them (it showed 0 req/s)."""
    def topology() -> dict:
        with httpx.Client(timeout=10) as http:
            return http.get(f"{faulty.api}/api/v1/topology", params={"window": 600},
                            headers=faulty.auth).json()
    def seen() -> dict | None:
        topo = topology()
        page = next((n for n in topo["nodes"] if n["name"] == "productpage"), None)
        return page if page and page["requests"] >= 40 else None
    page = wait_for(seen, 30, "the product page's requests in the topology")
    assert page["rps"] > 0
    edges = {(e["source"], e["target"].split(".")[0]) for e in topology()["edges"]}
    assert ("external", "productpage") in edges


def test_the_dashboard_shows_the_demo_graph(faulty: Up, browser: Browser) -> None:
    dom = browser.dom(faulty.dashboard())
    for name in ("productpage", "details", "reviews", "ratings"):
        assert dom.count(f'data-name="{name}"') == 1, f"want one graph node for {name}"
    edges = set(re.findall(r'class="edge" data-source="([^"]+)" data-target="([^"]+)"', dom))
    short = {(s.split(".")[0], t.split(".")[0]) for s, t in edges}
    assert {("productpage", "details"), ("productpage", "reviews"),
            ("reviews", "ratings")} <= short
    browser.screenshot(faulty.dashboard(), ARTIFACTS / "e2e" / "dashboard-demo.png",
                       "1400,1000")


FAST_SLO = """
apiVersion: telemetry.shoal.io/v1alpha1
kind: ServiceLevelObjective
metadata: {name: reviews-fast-burn, namespace: default}
spec:
  service: reviews
  sli: {availability: {}}
  target: 99
  window: 1h
  alerting:
    burnRates:
    - {longWindow: 20s, shortWindow: 10s, factor: 2}
"""


def test_a_burn_rate_alert_fires_in_prometheus_on_the_demos_fault(
        faulty: Up, tmp_path: Path, prometheus_binary: str) -> None:
    """The operator's own Prometheus: `shoal prometheus config` scrapes the control plane,
    `shoal slo rules` gives it the SLO's burn-rate alerts, and the demo's injected fault
    (50 % of reviews aborted) makes the alert fire."""
    with faulty.shoal_input(FAST_SLO) as path:
        faulty.shoal("apply", "-f", path)
    rules = tmp_path / "rules.yaml"
    rules.write_text(faulty.shoal("slo", "rules", "--for", "1s").stdout)
    config = yaml.safe_load(faulty.shoal(
        "prometheus", "config", "--interval", "1s",
        "--credentials-file", str(tmp_path / "prometheus.token")).stdout)
    config["rule_files"] = [str(rules)]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    prom = PrometheusProcess(tmp_path / "prometheus.yml", tmp_path, prometheus_binary).start()
    stop_traffic = threading.Event()

    def traffic() -> None:
        with httpx.Client(timeout=30) as http:
            while not stop_traffic.is_set():
                http.get(faulty.page)

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        def firing() -> dict | None:
            return next((a for a in prom.alerts() if a["state"] == "firing"
                         and a["labels"].get("slo") == "reviews-fast-burn"), None)
        alert = wait_for(firing, 240, "the reviews burn-rate alert to fire", interval=1.0)
        assert alert["labels"]["service"] == "reviews.default.svc.cluster.local"
        assert float(alert["annotations"]["burn_rate"]) > 2
    finally:
        stop_traffic.set()
        sender.join()
        prom.stop()
        faulty.shoal("delete", "ServiceLevelObjective", "reviews-fast-burn", "-n", "default",
                     check=False)
