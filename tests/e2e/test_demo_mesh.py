"""The main job, for real: `shoal up` runs the demo through the mesh; the CLI changes it.

One `shoal up` (temp home, free ports) serves the whole module; tests that disrupt the
mesh (control-plane crash, Envoy kill) come last. `shoal down` must leave no process.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from shoal.api.parse import parse_yaml
from shoal.cli.procs import LocalProcesses
from shoal.testing.local import free_port, wait_for
from tests.e2e.conftest import SAMPLES, Up

pytestmark = [pytest.mark.envoy, pytest.mark.slow]


def test_up_serves_the_product_page_through_the_mesh(up: Up) -> None:
    page = httpx.get(up.page, timeout=10)
    assert page.status_code == 200
    assert "The Comedy of Errors" in page.text
    assert "Reviewer1" in page.text
    status = up.shoal("status").stdout
    for name in ("productpage-v1", "details-v1", "reviews-v1", "reviews-v2", "reviews-v3",
                 "ratings-v1"):
        assert name in status
    assert status.count("SYNCED") >= 6 * 5  # every proxy and each of its 4 types


def test_productpage_to_reviews_crosses_two_envoys(up: Up) -> None:
    out = "cluster.outbound|9080||reviews.default.svc.cluster.local.upstream_rq_total"
    before_out = up.stat("productpage-v1", out)
    inbound = {v: up.inbound_requests(f"reviews-{v}") for v in ("v1", "v2", "v3")}
    served = up.reviews(12)
    # the productpage sidecar sent every call out to reviews ...
    assert up.stat("productpage-v1", out) - before_out >= 12
    # ... and each reviews sidecar received the calls its app served
    for v in ("v1", "v2", "v3"):
        got = up.inbound_requests(f"reviews-{v}") - inbound[v]
        assert got >= served[f"reviews-{v}"]
    assert set(served) == {"reviews-v1", "reviews-v2", "reviews-v3"}


def test_virtual_service_to_v3_is_observed_by_the_next_requests(up: Up) -> None:
    # --wait returns once every proxy has ACKed the new routes: no polling needed after it.
    out = up.shoal("apply", "--wait", "-f", str(SAMPLES / "reviews-v3.yaml")).stdout
    assert re.search(r"revision \d+ synced on [6-9] proxies", out), out
    assert up.reviews(20) == {"reviews-v3": 20}
    page = httpx.get(up.page, timeout=10).text
    assert "color: red" in page or "red" in page


def test_header_match_routes_one_user(up: Up) -> None:
    up.shoal("apply", "-f", str(SAMPLES / "reviews-jason-v2.yaml"))
    wait_for(lambda: up.reviews(1, {"end-user": "jason"}) == {"reviews-v2": 1}, 10, "jason")
    assert up.reviews(10, {"end-user": "jason"}) == {"reviews-v2": 10}
    assert up.reviews(10) == {"reviews-v1": 10}


def test_istios_bookinfo_principals_work_as_written(up: Up) -> None:
    """The demo runs as Istio's bookinfo service accounts, so a policy copied from Istio's
    docs (principal ``cluster.local/ns/default/sa/bookinfo-productpage``) admits
    productpage: with an ALLOW policy on reviews, any other caller would get 403."""
    policy = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-viewer, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]}}]
    to: [{operation: {methods: ["GET"]}}]
"""
    with up.shoal_input(policy) as f:
        up.shoal("apply", "--wait", "-f", f)
    try:
        assert sum(up.reviews(5).values()) == 5
    finally:
        up.shoal("delete", "authorizationpolicy", "reviews-viewer")


def test_a_7s_delay_to_ratings_makes_productpage_show_its_fallback(up: Up) -> None:
    """Istio's bookinfo fault-injection task: jason's reviews (v2) call ratings, which
    now answers after 7 s; productpage gives up on reviews (3 s timeout, one retry)."""
    up.shoal("apply", "-f", str(SAMPLES / "reviews-jason-v2.yaml"))
    up.shoal("apply", "-f", str(SAMPLES / "ratings-delay-7s.yaml"))
    try:
        def fallback() -> str | None:
            page = httpx.get(up.page, headers={"end-user": "jason"}, timeout=30).text
            return page if "currently unavailable" in page else None
        page = wait_for(fallback, 40, "the reviews fallback", interval=0.5)
        assert "Sorry, product reviews are currently unavailable" in page
        assert "Book Details" in page  # the rest of the page still renders
        # everyone else gets reviews v1, which does not call ratings: unaffected
        assert "currently unavailable" not in httpx.get(up.page, timeout=30).text
    finally:
        up.shoal("delete", "vs", "ratings")


def test_invalid_document_is_rejected_with_its_path_and_nothing_changes(up: Up,
                                                                        tmp_path: Path) -> None:
    before = up.revision()
    vs_before = up.shoal("get", "vs", "reviews", "-o", "json").stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text((SAMPLES / "reviews-80-20.yaml").read_text().replace("weight: 20",
                                                                        "weight: 30")
                   + "\n---\n" + (SAMPLES / "reviews-v3.yaml").read_text()
                   .replace("name: reviews, namespace", "name: other, namespace"))
    proc = up.shoal("apply", "-f", str(bad), check=False)
    assert proc.returncode == 1
    assert "spec.http[0].route: weights sum to 110; they must sum to 100" in proc.stderr
    assert up.revision() == before
    assert up.shoal("get", "vs", "reviews", "-o", "json").stdout == vs_before
    assert "other" not in up.shoal("get", "vs").stdout


def test_dry_run_and_delete(up: Up) -> None:
    before = up.revision()
    out = up.shoal("apply", "--dry-run", "-f", str(SAMPLES / "reviews-v3.yaml")).stdout
    assert "(dry run)" in out and up.revision() == before
    up.shoal("delete", "vs", "reviews")
    assert "reviews" not in up.shoal("get", "vs").stdout
    # without a VirtualService, reviews traffic is spread over every version again
    wait_for(lambda: len(up.reviews(12)) == 3, 10, "round robin over v1, v2, v3")
    missing = up.shoal("delete", "vs", "reviews", check=False)
    assert missing.returncode == 1 and "not found" in missing.stderr.lower()


def test_proxy_status_and_proxy_config(up: Up) -> None:
    status = up.shoal("proxy-status", "-o", "json").stdout
    proxies = json.loads(status)
    assert {p["workload"] for p in proxies} >= {"productpage-v1", "reviews-v2"}
    assert all(p["sync"] == "SYNCED" for p in proxies)
    clusters = up.shoal("proxy-config", "productpage-v1", "clusters").stdout
    assert "outbound|9080|v2|reviews.default.svc.cluster.local" in clusters
    listeners = json.loads(up.shoal("proxy-config", "productpage-v1", "listeners",
                                    "-o", "json").stdout)
    assert "outbound_http" in json.dumps(listeners)
    # the app's HTTP proxy routes by Host header: its scopes, and a table per service port
    routes = up.shoal("proxy-config", "productpage-v1", "routes").stdout
    assert "outbound_http" in routes and "scopes" in routes
    assert "upstream|reviews.default.svc.cluster.local|9080" in routes
    missing = up.shoal("proxy-config", "nosuchproxy", check=False)
    assert missing.returncode == 1 and "no connected proxy" in missing.stderr


def test_a_nack_is_visible_in_proxy_status(up: Up) -> None:
    """A sidecar asked to listen on a port another process holds: Envoy rejects the
    listener, and the operator sees the NACK and Envoy's reason."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    env = {**os.environ, "SHOAL_HOME": str(up.home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "shoal", "run", "--service", "nacker", "--port", "7070",
         "--name", "nacker", "--control-plane", up.api,
         "--xds", _xds(up), "--upstream", f"ratings:9080={port}", "--app-port",
         str(free_port()), "--ready-timeout", "5", "--drain-seconds", "0",
         "--run-dir", str(up.run_dir("nacker")), "--",
         sys.executable, "-m", "shoal.testing.apps", "http"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        def nacked() -> str | None:
            out = up.shoal("proxy-status").stdout
            return out if "NACKED" in out else None
        out = wait_for(nacked, 30, "a NACK in proxy-status")
        assert "nacker.default" in out and "LDS NACK" in out
        assert str(port) in out  # Envoy's message names the address it could not bind
        # apply --wait does not wait for a rollout that cannot finish: it fails, naming it.
        failed = up.shoal("apply", "--wait", "--timeout", "20", "-f",
                          str(SAMPLES / "reviews-v3.yaml"), check=False)
        assert failed.returncode != 0
        assert "rejected" in failed.stderr and "nacker" in failed.stderr, failed.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        taken.close()


BOOKINFO = Path(__file__).resolve().parents[3] / "shared" / "istio-upstream" / "samples" \
    / "bookinfo"
LUA_FILTER = """apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: productpage-lua, namespace: default}
spec:
  workloadSelector: {labels: {app: productpage}}
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: SIDECAR_INBOUND
      listener:
        filterChain:
          filter:
            name: envoy.filters.network.http_connection_manager
            subFilter: {name: envoy.filters.http.router}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.lua
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
          default_source_code:
            inline_string: |
              function envoy_on_response(handle)
                handle:headers():add("x-envoyfilter", "lua")
              end
"""


def test_an_envoy_filter_patches_the_running_sidecar(up: Up) -> None:
    """EnvoyFilter (docs/adr/0034): a Lua filter inserted before the router of the
    product page's inbound answers every request with a header; deleting it removes it."""
    with up.shoal_input(LUA_FILTER) as path:
        up.shoal("apply", "--wait", "-f", path)
        assert httpx.get(up.page, timeout=10).headers.get("x-envoyfilter") == "lua"
        up.shoal("delete", "-f", path)
    wait_for(lambda: "x-envoyfilter" not in httpx.get(up.page, timeout=10).headers, 30,
             "the patch to go with its EnvoyFilter")


def test_every_istio_bookinfo_sample_is_accepted_and_no_proxy_nacks(up: Up) -> None:
    """Istio's own files (samples/bookinfo from istio/istio, unchanged): each one applies
    and every proxy ACKs it (`apply --wait` fails on a NACK). The demo's config is put
    back afterwards."""
    files = sorted(BOOKINFO.rglob("*.yaml"))
    assert len(files) >= 20, files
    before = {(d["kind"], d["metadata"]["namespace"], d["metadata"]["name"]): d
              for d in httpx.get(f"{up.api}/api/v1/resources", headers=up.auth,
                                 timeout=10).json()["items"]}
    touched: set[tuple[str, str, str]] = set()
    try:
        for f in files:
            out = up.shoal("apply", "--wait", "--timeout", "60", "-f", str(f), check=False)
            assert out.returncode == 0, f"{f.relative_to(BOOKINFO)}: {out.stdout}{out.stderr}"
            touched |= {tuple(r.key) for r in parse_yaml(f.read_text())}
        assert ("EnvoyFilter", "istio-system", "filter-ratelimit") in touched, touched
    finally:
        for kind, ns, name in sorted(touched):
            if (kind, ns, name) in before:
                doc = dict(before[(kind, ns, name)])
                doc["metadata"] = {k: v for k, v in doc["metadata"].items()
                                   if k in ("name", "namespace", "labels", "annotations")}
                with up.shoal_input(json.dumps(doc)) as path:
                    up.shoal("apply", "-f", path)
            else:
                up.shoal("delete", kind, name, "-n", ns, "--ignore-not-found")
    up.shoal("apply", "--wait", "-f", str(SAMPLES / "reviews-v3.yaml"))  # a settled mesh


def test_a_gateway_api_mesh_route_splits_reviews_50_50(up: Up) -> None:
    """Gateway API mesh routing (GAMMA, docs/adr/0035), as Istio's Gateway API
    traffic-shifting task does it: reviews-v1 and reviews-v3 Services and an HTTPRoute on
    the reviews Service splitting 50/50. 400 calls: each version's share within 5 standard
    deviations of 200 (±50); no other version."""
    vs = httpx.get(f"{up.api}/api/v1/resources", params={"kind": "VirtualService"},
                   headers=up.auth, timeout=10).json()["items"]
    reviews = [d for d in vs if "reviews" in d["spec"]["hosts"]]
    for d in reviews:  # a VirtualService for the same host would win (ADR 0035)
        up.shoal("delete", "virtualservice", d["metadata"]["name"])
    sample = SAMPLES / "gateway-api" / "reviews-50-50.yaml"
    try:
        up.shoal("apply", "--wait", "-f", str(sample))
        served = up.reviews(400)
        assert set(served) == {"reviews-v1", "reviews-v3"}, served
        assert abs(served["reviews-v1"] - 200) <= 50, served
    finally:
        up.shoal("delete", "-f", str(sample), "--ignore-not-found")
        for d in reviews:
            d["metadata"] = {k: v for k, v in d["metadata"].items()
                             if k in ("name", "namespace", "labels", "annotations")}
            with up.shoal_input(json.dumps(d)) as path:
                up.shoal("apply", "--wait", "-f", path)


def _xds(up: Up) -> str:
    state = LocalProcesses(up.home).load()
    assert state is not None
    cp = next(p for p in state.processes if p.name == "control-plane")
    return cp.argv[cp.argv.index("--xds") + 1]


class Load:
    """Steady requests through the mesh in a background thread, counting failures."""

    def __init__(self, up: Up):
        self.up = up
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        url = f"{self.up.page.rsplit('/', 1)[0]}/api/v1/products/0/reviews"
        with httpx.Client(timeout=10) as http:
            while not self._stop.is_set():
                try:
                    r = http.get(url)
                    if r.status_code == 200 and "reviews" in r.json():
                        self.ok += 1
                    else:
                        self.failures.append(f"{r.status_code}: {r.text[:200]}")
                except httpx.HTTPError as e:
                    self.failures.append(repr(e))
                time.sleep(0.01)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_control_plane_crash_and_restart_keep_traffic_and_config(up: Up) -> None:
    up.shoal("apply", "-f", str(SAMPLES / "reviews-v3.yaml"))
    wait_for(lambda: up.reviews(1) == {"reviews-v3": 1}, 10, "reviews v3")
    procs = LocalProcesses(up.home)
    state = procs.load()
    assert state is not None
    cp = next(p for p in state.processes if p.name == "control-plane")
    with Load(up) as load:
        os.kill(cp.pid, signal.SIGKILL)
        time.sleep(2)  # sidecars run on their last config meanwhile
        ok_while_down = load.ok
        state.processes.remove(cp)
        procs.spawn(state, "control-plane", cp.argv)
        wait_for(lambda: httpx.get(f"{up.api}/readyz", timeout=2).status_code == 200, 30,
                 "control plane back")
        wait_for(lambda: len([p for p in json.loads(up.shoal("proxy-status", "-o", "json")
                                                    .stdout) if p["sync"] == "SYNCED"]) >= 6,
                 30, "every proxy to reconnect and sync")
        time.sleep(1)
    assert load.failures == []
    assert ok_while_down > 0 and load.ok > ok_while_down
    assert "hosts=reviews" in up.shoal("get", "vs").stdout  # config survived
    assert up.reviews(10) == {"reviews-v3": 10}  # and is still what the proxies apply
    workloads = up.shoal("get", "workloads").stdout
    assert all(f"reviews-{v}" in workloads for v in ("v1", "v2", "v3"))


def test_a_killed_envoy_is_restarted_by_its_agent(up: Up) -> None:
    pid_file = up.run_dir("reviews-v3") / "envoy.pid"
    old = int(pid_file.read_text())
    os.kill(old, signal.SIGKILL)
    new = wait_for(lambda: (p := int(pid_file.read_text())) != old and p, 30,
                   "a new envoy pid")
    assert new != old
    wait_for(lambda: up.reviews(3) == {"reviews-v3": 3}, 30, "reviews v3 served again")
    os.kill(new, 0)  # the new Envoy is alive
