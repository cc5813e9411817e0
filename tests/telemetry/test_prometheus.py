"""A real Prometheus, configured by `shoal prometheus config`, scrapes the control plane
and answers PromQL with the requests this test sent."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shoal.testing import prometheus
from shoal.testing.local import wait_for
from shoal.testing.prometheus import PrometheusProcess
from tests.telemetry.conftest import Mesh

pytestmark = [pytest.mark.envoy, pytest.mark.slow]
PROMETHEUS = prometheus.BINARY


@pytest.fixture
def prometheus(mesh: Mesh, tmp_path: Path) -> Iterator[str]:
    if PROMETHEUS is None:
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    config = subprocess.run(
        [sys.executable, "-m", "shoal", "-c", mesh.cp.url, "prometheus", "config",
         "--interval", "1s"], check=True, capture_output=True, text=True).stdout
    (tmp_path / "prometheus.yml").write_text(config)
    with PrometheusProcess(tmp_path / "prometheus.yml", tmp_path) as prom:
        yield prom.url


def query(url: str, promql: str) -> float | None:
    data = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5).json()
    result = data["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_exact_counts(mesh: Mesh, prometheus: str) -> None:
    selector = ('istio_requests_total{reporter="source",source_workload="client",'
                'destination_service_name="echo",response_code="418"}')
    wait_for(lambda: query(prometheus, "up{job='shoal'}") == 1.0, 60, "a first scrape")
    with httpx.Client(proxy=mesh.proxy, timeout=10) as http:
        for _ in range(5):
            assert http.get("http://echo:8080/teapot",
                            headers={"x-echo-status": "418"}).status_code == 418
    # the series is new: its value is the exact number of requests
    wait_for(lambda: query(prometheus, f"sum({selector})") == 5.0, 60,
             "prometheus to see 5 requests")
    # PromQL over the scraped series works too (rate needs two scrapes of it)
    wait_for(lambda: query(prometheus, f"sum(rate({selector}[1m]))") is not None, 30,
             "a rate over two scrapes")
    assert query(prometheus, 'sum(shoal_xds_connected_proxies)') == 2.0
