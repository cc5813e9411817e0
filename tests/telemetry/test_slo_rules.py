"""`shoal slo rules`: SLOs as Prometheus recording and alerting rules.

The generator's output is checked three ways: as text (names, expressions, thresholds),
by `promtool` (`check rules`, and `test rules` with input series written here), and by a
real Prometheus that scrapes a small HTTP server of Istio-named metrics, evaluates the
rules and fires the alerts."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from shoal.api import Resource, parse_yaml
from shoal.telemetry.model import LATENCY_BUCKETS_MS
from shoal.telemetry.slo import SloEvaluator
from shoal.telemetry.slo_rules import (
    ALERT,
    BUDGET_REMAINING,
    latency_bound,
    le_matcher,
    prom_duration,
    render,
    rule_file,
)
from shoal.testing import prometheus
from shoal.testing.local import ControlPlaneProcess, wait_for
from shoal.testing.metrics import FakeMetricsStore, Traffic, edge
from shoal.testing.prometheus import PrometheusProcess

PROMTOOL = shutil.which("promtool")
PROMETHEUS = prometheus.BINARY
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (scripts/system-deps.sh prometheus)")

REVIEWS = "reviews.default.svc.cluster.local"
RATINGS = "ratings.default.svc.cluster.local"


def slo(spec: str, name: str = "reviews-availability", namespace: str = "default"
        ) -> Resource:
    (res,) = parse_yaml(f"""
apiVersion: telemetry.shoal.io/v1alpha1
kind: ServiceLevelObjective
metadata: {{name: {name}, namespace: {namespace}}}
spec: {spec}
""")
    return res


def rules_of(*resources: Resource, **kw: Any) -> list[dict[str, Any]]:
    (group,) = rule_file(resources, **kw)["groups"]
    return list(group["rules"])


# -- the generator ---------------------------------------------------------------------------

def test_recording_rules_cover_every_window_with_sloth_style_names():
    rules = rules_of(slo("{service: reviews, sli: {availability: {}}, target: 99.9}"))
    records = [r["record"] for r in rules if "record" in r]
    assert records == [f"shoal:slo_errors_per_request:ratio_rate{w}"
                       for w in ("5m", "30m", "1h", "6h", "30d")] + [BUDGET_REMAINING]
    labels = {"slo": "reviews-availability", "namespace": "default", "service": REVIEWS}
    assert all(r["labels"] == labels for r in rules if "record" in r)
    assert rule_file([slo("{service: reviews, sli: {availability: {}}, target: 99.9}")]
                     )["groups"][0]["name"] == "shoal-slo-default-reviews-availability"


def test_every_request_is_counted_once_and_no_traffic_records_nothing():
    (five_min, *_) = rules_of(slo("{service: reviews, sli: {availability: {}}, target: 99}"))
    expr = five_min["expr"]
    by_source = 'istio_requests_total{reporter="source",destination_service="%s"%s}[5m]'
    external = ('istio_requests_total{reporter="destination",source_workload="unknown",'
                'destination_service="%s"%s}[5m]')
    five = ',response_code=~"5.."'
    # errors and requests: each the sum over source-reported series *or* the destination
    # reporter's series of callers without an identity (disjoint: `reporter` differs)
    for extra in (five, ""):
        assert (f"sum(rate({by_source % (REVIEWS, extra)})\n"
                f"      or rate({external % (REVIEWS, extra)}))") in expr
    assert expr.count("sum(") == 2
    assert "or vector(0)" in expr  # no 5xx series yet: a ratio of 0, not nothing
    assert re.search(r"\)\n\s*> 0\n\)$", expr)  # no traffic: no ratio (not NaN)


def test_alerts_fire_on_both_windows_above_factor_times_budget():
    resource = slo("{service: reviews, sli: {availability: {}}, target: 99.5, window: 28d,"
                   " alerting: {burnRates: [{longWindow: 1h, shortWindow: 5m, factor: 14.4},"
                   " {longWindow: 3d, shortWindow: 6h, factor: 1, severity: warning}]}}")
    alerts = [r for r in rules_of(resource, alert_for="2m") if "alert" in r]
    assert [(a["alert"], a["for"], a["labels"]["severity"]) for a in alerts] == [
        (ALERT, "2m", "critical"), (ALERT, "2m", "warning")]
    page, ticket = alerts
    ratio = ('shoal:slo_errors_per_request:ratio_rate%s{slo="reviews-availability",'
             'namespace="default"}')
    # threshold = factor x (1 - target/100), exactly: 14.4 x 0.005 and 1 x 0.005
    assert page["expr"] == (f"(\n  {ratio % '1h'} > 0.072\nand\n  {ratio % '5m'} > 0.072\n)"
                            "\n/ 0.005")
    assert f"{ratio % '3d'} > 0.005\nand\n  {ratio % '6h'} > 0.005" in ticket["expr"]
    assert page["labels"] == {"severity": "critical", "slo": "reviews-availability",
                              "namespace": "default", "service": REVIEWS,
                              "long_window": "1h", "short_window": "5m"}
    assert page["annotations"]["burn_rate"] == '{{ printf "%.2f" $value }}'
    assert page["annotations"]["burn_rate_threshold"] == "14.4"
    assert "14.4x" in page["annotations"]["summary"]
    assert "more than 7.2% of the requests" in page["annotations"]["description"]
    records = [r["record"] for r in rules_of(resource) if "record" in r]
    assert [r.rsplit("rate", 1)[1] for r in records[:-1]] == ["5m", "1h", "6h", "3d", "28d"]
    budget = next(r for r in rules_of(resource) if r.get("record") == BUDGET_REMAINING)
    assert budget["expr"] == (f"1 - {ratio % '28d'} / 0.005\nor on() vector(1)")


def test_no_for_with_zero_and_decimal_windows_become_prometheus_durations():
    resource = slo("{service: reviews, sli: {availability: {}}, target: 99, window: 1.5h,"
                   " alerting: {burnRates: [{longWindow: 0.5h, shortWindow: 90s, factor: 2}]}}")
    rules = rules_of(resource, alert_for="0s")
    assert [r.get("record", "").rsplit("rate", 1)[-1] for r in rules[:3]] == [
        "1m30s", "30m", "1h30m"]
    assert "for" not in rules[-1]
    assert [prom_duration(s) for s in (300, 5400, 30 * 86400, 0.5, 86400 + 1)] == [
        "5m", "1h30m", "30d", "500ms", "1d1s"]


def test_hosts_resolve_to_fqdns_in_the_mesh_domain():
    resource = slo("{service: reviews.other, sli: {availability: {}}, target: 99}",
                   namespace="shop")
    (first, *_) = rules_of(resource, domain="mesh.example")
    assert first["labels"]["service"] == "reviews.other.svc.mesh.example"
    assert 'destination_service="reviews.other.svc.mesh.example"' in first["expr"]


def test_latency_threshold_uses_the_largest_bucket_bound_not_above_it():
    assert [latency_bound(t) for t in (250, 300, 249.9, 1, 0.5, 4_000_000)] == [
        250, 250, 100, 1, None, 3_600_000]
    assert all(latency_bound(b) == b for b in LATENCY_BUCKETS_MS)
    assert le_matcher(250) == r'le=~"250|250\\.0"'  # shoal's spelling and Prometheus 3's
    assert le_matcher(1_800_000) == r'le=~"1\\.8e\\+06"'
    resource = slo("{service: ratings, sli: {latency: {thresholdMs: 300}}, target: 99}",
                   "ratings-latency")
    (five_min, *_) = rules_of(resource)
    assert five_min["expr"].startswith("1 - (\n  sum(rate(istio_request_duration_"
                                       "milliseconds_bucket{reporter=\"source\"")
    assert 'le=~"250|250\\\\.0"}[5m]' in five_min["expr"]
    assert 'le="+Inf"}[5m]' in five_min["expr"]
    text = render([resource])
    assert "# thresholdMs 300 is not a bucket bound: good are the requests in le=250" in text
    below = slo("{service: ratings, sli: {latency: {thresholdMs: 0.5}}, target: 99}", "fast")
    (five_min, *_) = rules_of(below)
    assert five_min["expr"].startswith("1 - (\n  vector(0)\n")  # every request is bad
    assert "below every bucket bound" in render([below])


@pytest.mark.parametrize("threshold", [1, 250, 300, 0.5, 999, 1000, 60000])
def test_latency_good_matches_the_control_planes_evaluator(threshold: float):
    """A request is good for the rules iff it is for `shoal slo status`."""
    t0 = 1_700_000_000.0
    resource = slo(f"{{service: ratings, sli: {{latency: {{thresholdMs: {threshold}}}}},"
                   " target: 99}", "ratings-latency")
    bound = latency_bound(threshold)
    for latency in (0.5, 1, 3, 250, 260, 300, 999, 1000, 1001, 60000):
        store = FakeMetricsStore()
        traffic = Traffic(store, edge("productpage", "ratings"))
        traffic.record(t0, 0)
        traffic.record(t0 + 60, 10, latency_ms=latency)
        (status,) = SloEvaluator(store, started=t0).evaluate([resource], now=t0 + 60)
        assert status.total == 10
        # the histogram counts a request of `latency` in every bucket le >= latency
        in_bucket = bound is not None and latency <= bound
        assert status.good == (10 if in_bucket else 0), (threshold, latency, bound)


def test_render_is_the_rule_file_with_comments():
    resources = [slo("{service: reviews, sli: {availability: {}}, target: 99.9}"),
                 slo("{service: ratings, sli: {latency: {thresholdMs: 250}}, target: 99}",
                     "ratings-latency", "shop")]
    text = render(resources, alert_for="30s")
    assert yaml.safe_load(text) == rule_file(resources, alert_for="30s")
    assert text.startswith("# Prometheus rules for shoal ServiceLevelObjectives")
    assert "# default/reviews-availability: availability of " + REVIEWS in text
    # groups in namespace/name order, whatever the input order
    assert [g["name"] for g in yaml.safe_load(text)["groups"]] == [
        "shoal-slo-default-reviews-availability", "shoal-slo-shop-ratings-latency"]
    assert yaml.safe_load(render([])) == {"groups": []}


# -- promtool ----------------------------------------------------------------------------------

SLOS = """
apiVersion: telemetry.shoal.io/v1alpha1
kind: ServiceLevelObjective
metadata: {name: reviews-availability}
spec: {service: reviews, sli: {availability: {}}, target: 99.9}
---
apiVersion: telemetry.shoal.io/v1alpha1
kind: ServiceLevelObjective
metadata: {name: ratings-latency}
spec:
  service: ratings.default
  sli: {latency: {thresholdMs: 300}}
  target: 99.9
  window: 7d
  alerting:
    burnRates:
    - {longWindow: 1.5h, shortWindow: 90s, factor: 10, severity: warning}
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: reviews}
spec: {host: reviews}
"""


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *map(str, args)], capture_output=True, text=True,
                          timeout=120, check=False)


@needs_promtool
def test_promtool_checks_the_rules(tmp_path: Path):
    path = tmp_path / "rules.yaml"
    path.write_text(render(parse_yaml(SLOS)))
    result = promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr
    # reviews: 5 windows + budget + 2 alerts; ratings: 3 windows + budget + 1 alert
    assert "SUCCESS: 13 rules found" in result.stdout


MINUTES = 120  # each test's series: one sample a minute for two hours


def counter(per_minute: Sequence[float] | float) -> str:
    """promtool values of a counter growing by ``per_minute[i]`` in minute i."""
    steps = per_minute if isinstance(per_minute, Sequence) else [per_minute] * MINUTES
    total, values = 0.0, ["0"]
    for n in steps:
        total += n
        values.append(f"{total:g}")
    return " ".join(values)


def requests(reporter: str, source: str, code: int, per_minute: Sequence[float] | float,
             service: str = REVIEWS) -> dict[str, str]:
    return {"series": f'istio_requests_total{{reporter="{reporter}",source_workload='
                      f'"{source}",destination_service="{service}",response_code="{code}"}}',
            "values": counter(per_minute)}


def buckets(reporter: str, source: str, per_minute: dict[str, float]) -> list[dict[str, str]]:
    return [{"series": f'istio_request_duration_milliseconds_bucket{{reporter="{reporter}",'
                       f'source_workload="{source}",destination_service="{RATINGS}",'
                       f'le="{le}"}}', "values": counter(n)} for le, n in per_minute.items()]


@dataclass
class Expect:
    """The alerts expected at the end of a case, and the SLO's error ratio then over its
    shortest window (None: no ratio at all)."""

    alerts: list[dict[str, Any]]
    ratio: float | None
    slo: str = "reviews-availability"
    service: str = REVIEWS
    window: str = "5m"


def firing(rules: dict[str, Any], slo_name: str, long_window: str, burn: float
           ) -> dict[str, Any]:
    """The alert promtool must see: the rule's labels, its annotations with ``$value``
    (the long window's burn rate) filled in."""
    rule = next(r for g in rules["groups"] for r in g["rules"]
                if r.get("alert") and r["labels"]["slo"] == slo_name
                and r["labels"]["long_window"] == long_window)
    fill = {'{{ printf "%.1f" $value }}': f"{burn:.1f}",
            '{{ printf "%.2f" $value }}': f"{burn:.2f}"}
    annotations = {}
    for key, text in rule["annotations"].items():
        for template, value in fill.items():
            text = text.replace(template, value)
        annotations[key] = text
    return {"exp_labels": rule["labels"], "exp_annotations": annotations}


def case(name: str, series: list[dict[str, str]], expect: Expect) -> dict[str, Any]:
    at = f"{MINUTES}m"
    labels = f'{{namespace="default",service="{expect.service}",slo="{expect.slo}"}}'
    ratio = f"shoal:slo_errors_per_request:ratio_rate{expect.window}"
    return {
        "name": name, "interval": "1m", "input_series": series,
        "alert_rule_test": [{"eval_time": at, "alertname": ALERT,
                             "exp_alerts": expect.alerts}],
        # the ratio, rounded: rate() extrapolates, so it is exact only to ~1e-15
        "promql_expr_test": [{
            "expr": f"round({ratio}{{slo=\"{expect.slo}\"}}, 0.000001)", "eval_time": at,
            "exp_samples": [] if expect.ratio is None else [
                {"labels": labels, "value": expect.ratio}]}],
    }


@needs_promtool
def test_promtool_proves_when_the_alerts_fire(tmp_path: Path):
    rules = rule_file(parse_yaml(SLOS))
    (tmp_path / "rules.yaml").write_text(render(parse_yaml(SLOS)))
    healthy_then_burst = [600] * (MINUTES - 5) + [540] * 5  # 10% 5xx in the last 5 minutes
    burst = [0] * (MINUTES - 5) + [60] * 5
    both = [firing(rules, "reviews-availability", "1h", 50),
            firing(rules, "reviews-availability", "6h", 50)]
    tests = [
        # 5% of requests fail for two hours: 50x the budget over every window, both pairs
        case("mesh callers only: both windows burn", [requests("source", "productpage", 200, 570),
                                   requests("source", "productpage", 503, 30)],
             Expect(both, 0.05)),
        # 10% fail in the last 5 minutes: the 5m (0.1) and 30m (0.0167) windows burn, but
        # not 1h (0.0083 < 14.4 x 0.001) nor 6h (0.0042 < 6 x 0.001): nothing fires
        case("only the short windows burn",
             [requests("source", "productpage", 200, healthy_then_burst),
              requests("source", "productpage", 503, burst)], Expect([], 0.1)),
        # series without requests, and no series at all for ratings: no ratio, no alert
        case("no traffic", [requests("source", "productpage", 200, 0)], Expect([], None)),
        # callers outside the mesh: counted by the destination, with source "unknown"
        case("external callers only",
             [requests("destination", "unknown", 200, 570),
              requests("destination", "unknown", 503, 30)], Expect(both, 0.05)),
        # productpage's requests are reported by both sides; only its source counts them,
        # the destination counts the external ones: 60 bad of 1200, not 120 of 1800
        case("each request once",
             [requests("source", "productpage", 200, 540),
              requests("source", "productpage", 503, 60),
              requests("destination", "productpage", 200, 540),
              requests("destination", "productpage", 503, 60),
              requests("destination", "unknown", 200, 600)], Expect(both, 0.05)),
        # latency: 300 ms counts as the 250 ms bucket; 5% of requests are slower (as shoal
        # spells le, and as Prometheus 3 does); over 10x 0.001 in 1.5h and 90s
        case("slow responses", buckets("source", "productpage",
                                       {"100": 300, "250": 380, "500": 400, "+Inf": 400})
             + buckets("destination", "unknown", {"250.0": 190, "+Inf": 200}),
             Expect([firing(rules, "ratings-latency", "1h30m", 50)], 0.05,
                    "ratings-latency", RATINGS, "1m30s")),
    ]
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump({
        "rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests},
        sort_keys=False, width=1_000_000))
    result = promtool("test", "rules", tmp_path / "tests.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_promtool_sees_the_budget_left(tmp_path: Path):
    (tmp_path / "rules.yaml").write_text(render(parse_yaml(SLOS)))
    at = f"{MINUTES}m"
    labels = f'{{namespace="default",service="{REVIEWS}",slo="reviews-availability"}}'
    rl = f'{{namespace="default",service="{RATINGS}",slo="ratings-latency"}}'
    tests = [{
        "name": "budget", "interval": "1m",
        # 0.05% of requests fail: half of the 0.1% budget is left
        "input_series": [requests("source", "productpage", 200, 1999),
                         requests("source", "productpage", 503, 1)],
        "promql_expr_test": [{
            "expr": f"round({BUDGET_REMAINING}, 0.000001)", "eval_time": at,
            # ratings has no traffic: nothing spent
            "exp_samples": [{"labels": labels, "value": 0.5}, {"labels": rl, "value": 1}]}],
    }]
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump({
        "rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests},
        sort_keys=False, width=1_000_000))
    result = promtool("test", "rules", tmp_path / "tests.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


# -- the CLI -----------------------------------------------------------------------------------

def shoal(*args: str | Path, control_plane: str = "http://127.0.0.1:9"
          ) -> subprocess.CompletedProcess[str]:
    """The CLI in a process of its own (-f needs no control plane: port 9 is discard)."""
    return subprocess.run([sys.executable, "-m", "shoal", "-c", control_plane,
                           *map(str, args)], capture_output=True, text=True, timeout=120,
                          check=False)


def test_cli_generates_from_files_validated_like_apply(tmp_path: Path):
    (tmp_path / "slos.yaml").write_text(SLOS)
    result = shoal("slo", "rules", "-f", tmp_path / "slos.yaml", "--for", "30s")
    assert result.returncode == 0, result.stderr
    assert result.stdout == render(parse_yaml(SLOS), alert_for="30s")
    result = shoal("slo", "rules", "-f", tmp_path / "slos.yaml", "-n", "other")
    assert yaml.safe_load(result.stdout) == {"groups": []}
    (tmp_path / "bad.yaml").write_text(SLOS.replace("target: 99.9}", "target: 100}"))
    result = shoal("slo", "rules", "-f", tmp_path / "bad.yaml")
    assert result.returncode == 1
    assert "spec.target" in result.stderr and not result.stdout
    result = shoal("slo", "rules", "-f", tmp_path / "slos.yaml", "--for", "soon")
    assert result.returncode != 0 and "--for" in result.stderr


# -- a real Prometheus -------------------------------------------------------------------------

class MetricsServer:
    """An HTTP server of Prometheus text: counters growing at fixed rates from its start
    (all in proportion to one elapsed time, so ratios of their rates are exact)."""

    def __init__(self, rates: dict[str, float]):
        self.rates = rates
        started = time.monotonic()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                elapsed = time.monotonic() - started
                body = "# TYPE istio_requests_total counter\n" + "".join(
                    f"{series} {rate * elapsed!r}\n" for series, rate in server.rates.items())
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # a port of its own
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> MetricsServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def series(metric: str, **labels: str) -> str:
    return metric + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def istio(reporter: str, source: str, service: str, code: int) -> str:
    return series("istio_requests_total", reporter=reporter, source_workload=source,
                  destination_service=service, response_code=str(code))


def bucket(reporter: str, source: str, service: str, le: str) -> str:
    return series("istio_request_duration_milliseconds_bucket", reporter=reporter,
                  source_workload=source, destination_service=service, le=le)


@pytest.fixture
def prometheus_binary() -> str:
    if PROMETHEUS is None:
        pytest.skip("prometheus is not installed (scripts/system-deps.sh prometheus)")
    return PROMETHEUS


E2E_SLOS = """
apiVersion: telemetry.shoal.io/v1alpha1
kind: ServiceLevelObjective
metadata: {name: %(name)s}
spec:
  service: %(service)s
  sli: %(sli)s
  target: 99
  window: 1h
  alerting:
    burnRates:
    - {longWindow: 20s, shortWindow: 10s, factor: 2}
"""


def e2e_slo(name: str, service: str, sli: str = "{availability: {}}") -> str:
    return E2E_SLOS % {"name": name, "service": service, "sli": sli}


@pytest.fixture
def control_plane(tmp_path: Path) -> Iterator[ControlPlaneProcess]:
    with ControlPlaneProcess(tmp_path / "cp") as cp:
        yield cp


@pytest.mark.slow
def test_prometheus_fires_the_alerts_of_rules_from_the_control_plane(
        tmp_path: Path, prometheus_binary: str, control_plane: ControlPlaneProcess):
    docs = [e2e_slo("reviews-availability", "reviews"),
            e2e_slo("ratings-latency", "ratings", "{latency: {thresholdMs: 300}}"),
            e2e_slo("details-availability", "details"),
            e2e_slo("ghost-availability", "ghost")]
    with control_plane.client() as c:
        c.apply("---".join(docs))
    result = shoal("slo", "rules", "--for", "1s", control_plane=control_plane.url)
    assert result.returncode == 0, result.stderr
    (tmp_path / "rules.yaml").write_text(result.stdout)
    assert len(yaml.safe_load(result.stdout)["groups"]) == 4

    details = "details.default.svc.cluster.local"
    rates = {
        # reviews: productpage's requests (25% 5xx), reported by both sides, and as many
        # from outside the mesh (all fine): 2.5 bad of 20 per second, a ratio of 0.125
        istio("source", "productpage", REVIEWS, 200): 7.5,
        istio("source", "productpage", REVIEWS, 503): 2.5,
        istio("destination", "productpage", REVIEWS, 200): 7.5,
        istio("destination", "productpage", REVIEWS, 503): 2.5,
        istio("destination", "unknown", REVIEWS, 200): 10.0,
        # ratings: 10% of the external requests slower than 250 ms (thresholdMs 300)
        bucket("destination", "unknown", RATINGS, "100"): 5.0,
        bucket("destination", "unknown", RATINGS, "250"): 9.0,
        bucket("destination", "unknown", RATINGS, "500"): 10.0,
        bucket("destination", "unknown", RATINGS, "+Inf"): 10.0,
        # details: healthy; ghost: no series at all
        istio("source", "productpage", details, 200): 5.0,
    }
    with MetricsServer(rates) as server:
        config = tmp_path / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(tmp_path / "rules.yaml")],
            "scrape_configs": [{"job_name": "mesh", "honor_labels": True,
                                "static_configs": [{"targets": [f"127.0.0.1:{server.port}"]}]}],
        }))
        prom = PrometheusProcess(config, tmp_path, prometheus_binary).start()
        try:
            def both_firing() -> list[dict[str, Any]]:
                alerts = [a for a in prom.alerts() if a["state"] == "firing"]
                names = {a["labels"]["slo"] for a in alerts}
                return alerts if names >= {"reviews-availability", "ratings-latency"} else []

            alerts = wait_for(both_firing, 180, "both burn-rate alerts to fire", interval=0.5)
            reviews = next(a for a in alerts if a["labels"]["slo"] == "reviews-availability")
            assert reviews["labels"] == {
                "alertname": ALERT, "severity": "critical", "slo": "reviews-availability",
                "namespace": "default", "service": REVIEWS, "long_window": "20s",
                "short_window": "10s"}
            assert reviews["annotations"]["burn_rate"] == "12.50"  # 0.125 / 0.01

            def ratio(slo_name: str, window: str = "10s") -> float | None:
                found = prom.query(f'shoal:slo_errors_per_request:ratio_rate{window}'
                                   f'{{slo="{slo_name}"}}')
                return float(found[0]["value"][1]) if found else None

            assert ratio("reviews-availability") == pytest.approx(0.125, rel=1e-6)
            assert ratio("ratings-latency") == pytest.approx(0.1, rel=1e-6)
            assert ratio("details-availability") == 0.0
            assert ratio("ghost-availability") is None  # no traffic: no ratio, no alert
            assert not [a for a in prom.alerts()
                        if a["labels"]["slo"] in ("details-availability",
                                                  "ghost-availability")]
            budget = {r["metric"]["slo"]: float(r["value"][1])
                      for r in prom.query(BUDGET_REMAINING)}
            assert budget["ghost-availability"] == 1.0
            assert budget["details-availability"] == 1.0
            assert budget["reviews-availability"] == pytest.approx(1 - 12.5, rel=1e-6)
        finally:
            prom.stop()
