"""A real control plane (in this process, on a thread) whose metrics store is fed with
the demo's traffic, and headless Chromium to look at its dashboard."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from shoal.cli.client import ApiClient
from shoal.cli.credentials import remember
from shoal.control.config import Address, ControlPlaneConfig
from shoal.control.plane import ControlPlane
from shoal.demo import topology as demo
from shoal.telemetry.hub import Telemetry
from shoal.testing.local import operator_headers
from shoal.testing.metrics import FakeMetricsStore, bookinfo_traffic

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
BOOKINFO = Path(demo.__file__).with_name("bookinfo.yaml")
# a Gateway API Gateway beside Istio's kinds (the Config page tells them apart)
GATEWAY = """apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway}
spec:
  gatewayClassName: istio
  listeners: [{name: http, port: 8080, protocol: HTTP}]
"""
SLOS = """
apiVersion: telemetry.shoal.io/v1alpha1
kind: ServiceLevelObjective
metadata: {name: reviews-availability}
spec: {service: reviews, sli: {availability: {}}, target: 99.9, window: 30d}
---
apiVersion: telemetry.shoal.io/v1alpha1
kind: ServiceLevelObjective
metadata: {name: productpage-latency}
spec: {service: productpage, sli: {latency: {thresholdMs: 250}}, target: 99, window: 7d}
---
apiVersion: telemetry.shoal.io/v1alpha1
kind: ServiceLevelObjective
metadata: {name: details-availability}
spec: {service: details, sli: {availability: {}}, target: 99.5, window: 30d}
"""


def demo_trace(now: float) -> list[dict[str, Any]]:
    """One productpage request as the sidecars' spans (telemetry/traces.py shape)."""
    t0 = int(now * 1e9)
    rows = [  # span, parent, service, name, start ms, duration ms, status
        ("a1", "", "productpage", "ingress GET /productpage", 0, 48, 200),
        ("a2", "a1", "productpage", "GET details:9080/details/0", 3, 6, 200),
        ("a3", "a2", "details", "GET /details/0", 4, 4, 200),
        ("a4", "a1", "productpage", "GET reviews:9080/reviews/0", 11, 34, 503),
        ("a5", "a4", "reviews", "GET /reviews/0", 12, 31, 503),
        ("a6", "a5", "reviews", "GET ratings:9080/ratings/0", 15, 9, 200),
        ("a7", "a6", "ratings", "GET /ratings/0", 16, 7, 200),
    ]
    return [{"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": sid,
             "parent_span_id": parent, "name": name, "kind": "server",
             "start_ns": t0 + start * 1_000_000, "end_ns": t0 + (start + dur) * 1_000_000,
             "duration_ms": float(dur), "node_id": "", "workload": f"{svc}-v1",
             "namespace": "default", "service": f"{svc}.default.svc.cluster.local",
             "status": status, "error": status >= 500, "attributes": {}}
            for sid, parent, svc, name, start, dur, status in rows]


@dataclass
class Served:
    url: str
    metrics: FakeMetricsStore
    started: float
    data: Path

    @property
    def auth(self) -> dict[str, str]:
        return operator_headers(self.data)

    def client(self) -> ApiClient:
        return ApiClient(self.url, headers=self.auth)

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", params=params, headers=self.auth, timeout=10)

    def dashboard(self, page: str = "overview", query: str = "") -> str:
        """The dashboard's URL signed in, as `shoal dashboard` opens it."""
        token = self.auth["Authorization"][7:]
        return f"{self.url}/ui/{query}#token={token}&page={page}"


@pytest.fixture(scope="module")
def dashboard_cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The control plane with the demo's config + SLOs, and 20 minutes of demo traffic
    (reviews answering 2% 503s for the last 8 of them)."""
    data = tmp_path_factory.mktemp("cp")
    config = ControlPlaneConfig(data_dir=data, api=Address("127.0.0.1", 0),
                                xds=Address("127.0.0.1", 0), store="memory")
    fields = {f.name for f in dataclasses.fields(ControlPlaneConfig)}
    config = dataclasses.replace(config, **{k: None for k in ("agent_api", "secure_xds")
                                            if k in fields})
    metrics = FakeMetricsStore()
    now = time.time()
    started = now - 20 * 60
    bookinfo_traffic(metrics, start=started, end=now - 8 * 60, step=10,
                     slow_ms={"productpage": 400.0})
    bookinfo_traffic(metrics, start=now - 8 * 60 + 10, end=now + 600, step=10,
                     error_ratio={"reviews": 0.02}, slow_ms={"productpage": 400.0})

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop: asyncio.Event | None = None
    holder: dict[str, object] = {}

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        cp = ControlPlane.build(config)
        cp.telemetry = Telemetry()
        cp.telemetry.store = metrics  # type: ignore[assignment]
        cp.telemetry.traces.add(demo_trace(now))
        async with cp.serving():
            holder["address"] = cp.api_address
            ready.set()
            await stop.wait()

    def run() -> None:
        try:
            loop.run_until_complete(main())
        except BaseException as e:  # report to the test thread
            holder["error"] = e
            traceback.print_exc()  # a control plane that dies later shows in the test's stderr
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(30), "control plane did not start"
    if "error" in holder:
        raise holder["error"]  # type: ignore[misc]
    served = Served(f"http://{holder['address']}", metrics, started, data)
    remember(served.url, data / "admin.token")  # for `shoal -c URL ...`
    with served.client() as c:
        c.apply(BOOKINFO.read_text())
        c.apply(SLOS)
        c.apply(GATEWAY)
    yield served
    assert stop is not None
    loop.call_soon_threadsafe(stop.set)
    thread.join(15)
