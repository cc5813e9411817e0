"""The Zipkin v2 receiver (POST /api/v2/spans): Envoy's JSON spans become the same span
records as OTLP ones, in the same store."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from shoal.telemetry.hub import Telemetry
from shoal.telemetry.traces import spans_from_otlp
from shoal.telemetry.zipkin import InvalidSpans, otlp_from_zipkin

TRACE = "80f198ee56343ba864fe8b2a57d3eff7"


def envoy_span(**over: Any) -> dict[str, Any]:
    """Shaped like what Envoy 1.40's Zipkin tracer POSTs (HTTP_JSON)."""
    span = {
        "traceId": TRACE, "id": "074d191c1c5a61cf", "parentId": "e457b5a2e4d86bd1",
        "kind": "SERVER", "name": "reviews:9080/*", "timestamp": 1_795_361_397_465_192,
        "duration": 1368, "localEndpoint": {"serviceName": "reviews", "ipv4": "192.0.2.2",
                                            "port": 0},
        "annotations": [{"timestamp": 1_795_361_397_465_192, "value": "sr"}],
        "tags": {"node_id": "reviews-v2.default", "http.status_code": "200",
                 "component": "proxy"},
    }
    return {**span, **over}


def test_envoy_spans_become_span_records() -> None:
    client = envoy_span(id="1111111111111111", parentId="074d191c1c5a61cf", kind="CLIENT",
                        tags={"node_id": "reviews-v2.default", "http.status_code": "503",
                              "error": "true"})
    other = envoy_span(traceId="00f067aa0ba902b7", parentId=None,
                       localEndpoint={"serviceName": "ratings"})
    spans = list(spans_from_otlp(otlp_from_zipkin([envoy_span(), client, other])))
    server, client_rec, short = spans
    assert server["trace_id"] == TRACE and server["span_id"] == "074d191c1c5a61cf"
    assert server["parent_span_id"] == "e457b5a2e4d86bd1" and server["kind"] == "server"
    assert server["start_ns"] == 1_795_361_397_465_192_000 and server["duration_ms"] == 1.368
    assert server["service"] == "reviews" and server["workload"] == "reviews-v2"
    assert server["status"] == 200 and not server["error"]
    assert client_rec["kind"] == "client" and client_rec["error"] and client_rec["status"] == 503
    # a 64-bit trace id is the 128-bit one with zeros in front; no parent: a root
    assert short["trace_id"] == "0000000000000000" + "00f067aa0ba902b7"
    assert short["parent_span_id"] == "" and short["service"] == "ratings"


@pytest.mark.parametrize("bad", [
    {"traceId": "xyz"}, {"id": ""}, {"traceId": "0" * 32}, {"id": "1" * 17},
    {"timestamp": "now"}, {"tags": ["a"]},
])
def test_malformed_spans_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidSpans):
        otlp_from_zipkin([envoy_span(**bad)])


async def test_post_spans_endpoint() -> None:
    hub = Telemetry()
    app = web.Application()
    hub.add_routes(app)
    async with TestClient(TestServer(app)) as http:
        r = await http.post("/api/v2/spans", json=[envoy_span()])
        assert r.status == 202
        assert (await http.post("/api/v2/spans", data=b"{not json")).status == 400
        assert (await http.post("/api/v2/spans", json={"a": 1})).status == 400
        assert (await http.post("/api/v2/spans", json=[envoy_span(id="zz")])).status == 400
        r = await http.get(f"/api/v1/traces/{TRACE}")
        body = await r.json()
    assert [s["span_id"] for s in body["spans"]] == ["074d191c1c5a61cf"]
    assert hub.counts["spans"] == 1


def test_timestamps_beyond_the_otlp_range_are_invalid_not_a_crash() -> None:
    from shoal.telemetry.zipkin import MAX_MICROS, InvalidSpans, otlp_span

    span = {"traceId": "0af7651916cd43dd8448eb211c80319c", "id": "b7ad6b7169203331"}
    for fields in ({"timestamp": 10**25}, {"duration": 10**25},
                   {"timestamp": MAX_MICROS, "duration": MAX_MICROS}):
        try:
            otlp_span({**span, **fields})
        except InvalidSpans:
            continue
        raise AssertionError(f"{fields} accepted")
