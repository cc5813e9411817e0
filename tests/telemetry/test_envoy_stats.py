"""Reading an Envoy's shoal stats back (shoal.telemetry.envoy_stats): the Prometheus text
Envoy 1.40 writes for the stats access logger, and totals that survive Envoy restarts."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.telemetry import envoy_stats as es
from shoal.telemetry.model import LATENCY_BUCKETS_MS

CLUSTER = "outbound|8080|v1|reviews.default.svc.cluster.local"
LABELS = (f'reporter="source",cluster="{CLUSTER}",code="503",flags="URX",'
          'peer="spiffe://cluster.local/ns/default/sa/reviews",grpc=""')
# as /stats/prometheus?filter=^shoal\. shows them (le as Envoy prints it)
TEXT = "\n".join([
    "# TYPE envoy_shoal_requests counter",
    f"envoy_shoal_requests{{{LABELS}}} 3",
    f"envoy_shoal_request_bytes{{{LABELS}}} 120",
    f"envoy_shoal_response_bytes{{{LABELS}}} 57",
    "# TYPE envoy_shoal_duration histogram",
    *(f'envoy_shoal_duration_bucket{{{LABELS},le="{b:g}"}} {2 if b < 5 else 3}'
      for b in LATENCY_BUCKETS_MS),
    f'envoy_shoal_duration_bucket{{{LABELS},le="3600000"}} 3',
    f'envoy_shoal_duration_bucket{{{LABELS},le="+Inf"}} 3',
    f"envoy_shoal_duration_sum{{{LABELS}}} 7.5",
    f"envoy_shoal_duration_count{{{LABELS}}} 3",
    'envoy_shoal_tcp_connections{reporter="destination",cluster="inbound|5432|tcp",'
    'flags="-",peer=""} 4',
    'envoy_shoal_tcp_sent_bytes{reporter="destination",cluster="inbound|5432|tcp",'
    'flags="-",peer=""} 4096',
    "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"x\"} 99",  # not ours
    "envoy_shoal_requests{broken 1",  # malformed: skipped
])


def test_parse_reads_counters_histogram_and_tcp() -> None:
    snap = es.parse(TEXT)
    (key, v), = snap.http.items()
    assert key == es.HttpKey("source", CLUSTER, 503, "URX",
                             "spiffe://cluster.local/ns/default/sa/reviews", "")
    assert (v.requests, v.request_bytes, v.response_bytes) == (3, 120, 57)
    assert v.buckets[0] == 2 and v.buckets[1] == 3  # le=1, le=5
    assert v.buckets[-2] == 3  # le=3600000 (Envoy writes it in full, not 3.6e+06)
    assert v.buckets[-1] == 3  # the histogram's own count (+Inf)
    assert v.duration_sum_ms == 7.5
    (tkey, t), = snap.tcp.items()
    assert tkey.cluster == "inbound|5432|tcp" and t.connections == 4 and t.sent_bytes == 4096


def _reading(n: int) -> es.Snapshot:
    key = es.HttpKey("source", CLUSTER, 200, "-", "", "")
    buckets = [n] * (len(LATENCY_BUCKETS_MS) + 1)
    return es.Snapshot(http={key: es.HttpValues(n, 10 * n, 20 * n, buckets, 1.0 * n)})


def _requests(totals: es.Totals) -> int:
    return sum(v.requests for v in totals.current().http.values())


def test_an_envoy_restart_is_folded_into_the_total() -> None:
    t = es.Totals()
    t.update(_reading(5), generation=0)
    t.update(_reading(7), generation=0)
    t.update(_reading(2), generation=1)  # the agent restarted Envoy: 7 + 2
    assert _requests(t) == 9
    t.update(_reading(1), generation=1)  # went down without a new generation: 9 + 1
    assert _requests(t) == 10
    assert t.current().http[next(iter(t.current().http))].request_bytes == 100


@settings(max_examples=200, deadline=None, derandomize=True)
@given(runs=st.lists(st.lists(st.integers(0, 50), min_size=1, max_size=6),
                     min_size=1, max_size=5))
def test_totals_never_decrease_and_count_every_request(runs: list[list[int]]) -> None:
    """Each run is one Envoy's life (the agent restarts it: a new generation), as
    increments between readings: the total never decreases and ends at the sum of every
    run's count."""
    t = es.Totals()
    last_total = truth = 0
    for generation, increments in enumerate(runs):
        count = 0
        for inc in increments:
            count += inc
            t.update(_reading(count), generation)
            assert _requests(t) >= last_total
            last_total = _requests(t)
        truth += count
    assert _requests(t) == truth
