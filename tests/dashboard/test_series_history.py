"""The series endpoint over a durable metrics store: charts reach back past the ring and
across a control-plane restart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp.test_utils import make_mocked_request

from shoal.dashboard.api import DashboardApi
from shoal.errors import ValidationError
from shoal.store.memory import MemoryStore
from shoal.telemetry.history import DurableMetricsStore
from shoal.telemetry.model import LATENCY_BUCKETS_MS, Edge, EdgeSample

T0 = 1_699_999_200.0  # a whole hour
HOUR = 3600.0
EDGE = Edge("client-v1", "default", "client", "echo.default.svc.cluster.local", "default")


async def series(api: DashboardApi, query: str) -> dict:
    response = await api.series(make_mocked_request("GET", f"/api/v1/metrics/series?{query}"))
    return json.loads(response.body)


async def test_a_day_long_chart_after_a_restart(tmp_path: Path):
    now = [T0]
    store = DurableMetricsStore(tmp_path, clock=lambda: now[0])
    for minute in range(26 * 60 + 1):  # 26 h, 2 requests a minute, one of 20 an error
        now[0] = T0 + minute * 60
        n = 2 * minute
        buckets = tuple(n for _ in LATENCY_BUCKETS_MS)
        store.add([EdgeSample(EDGE, now[0], {200: n - n // 20, 503: n // 20}, buckets)])
        if minute % 60 == 0:
            store.flush()
    store.close()
    restarted = DurableMetricsStore(tmp_path, clock=lambda: now[0])  # an empty ring
    api = DashboardApi(MemoryStore(), lambda: restarted, clock=lambda: now[0])
    body = await series(api, "service=echo&window=86400&step=3600")
    assert body["rateWindow"] == 3600 and len(body["points"]) == 25
    assert {p["requests"] for p in body["points"]} == {120}
    assert {p["errorRatio"] for p in body["points"]} == {0.05}
    with pytest.raises(ValidationError) as e:  # beyond the retention (36 days)
        await series(api, "service=echo&window=4000000&step=3600")
    assert [v.path for v in e.value.violations] == ["window"]
    restarted.close()
