"""The two-cluster demo as a user runs it: `shoal up --clusters 2` (root), the product page
of cluster-a, `shoal cluster list`, failover of reviews to cluster-b when cluster-a's
instance dies, the dashboard's cross-cluster view, and `shoal down` leaving nothing behind.

One `shoal up --clusters 2` for the whole module (the tests run in file order). The demo
uses fixed addresses (10.97.1.0/24, 10.97.2.0/24, API ports 15080/15180, pod prefix
``demo-``): see docs/multicluster.md.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from shoal.cli.procs import LocalProcesses, marked_processes
from shoal.cli.up_clusters import PREFIX, unavailable
from shoal.demo.productpage import REVIEWS_ERROR
from shoal.testing.local import wait_for
from tests.conftest import ARTIFACTS, Browser
from tests.e2e.conftest import Up, auth_for

pytestmark = [pytest.mark.envoy, pytest.mark.slow]

DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
# Set to write the screenshot into docs/img too (like UPDATE_GOLDEN for golden files).
UPDATE_SCREENSHOTS = os.environ.get("SHOAL_UPDATE_SCREENSHOTS") == "1"
FAILOVER_REQUESTS = 40
MAX_FAILED = 10  # per switch on a loaded 2-core machine (docs/multicluster.md)
CLUSTER_B_REVIEWS = {"reviews-v2", "reviews-v3"}  # reviews-v1 runs in cluster-a only


@dataclass
class Demo:
    a: Up  # cluster-a: its control plane and product page
    b_api: str
    output: str  # what `shoal up --clusters 2` printed
    session: str  # the processes' marker (shoal.cli.procs)


def _ip_json(*argv: str) -> list[dict]:
    out = subprocess.run(["ip", "-j", *argv], capture_output=True, text=True, check=True)
    return json.loads(out.stdout or "[]")


def _demo_netns() -> list[str]:
    return [n["name"] for n in _ip_json("netns", "list")
            if n.get("name", "").startswith(f"shoal-{PREFIX}")]


def _demo_links() -> list[str]:
    """Bridges and veths of the demo (named by their alias, see shoal.hosts.netns)."""
    return [f"{link['ifname']} ({link['ifalias']})" for link in _ip_json("-d", "link", "show")
            if re.match(rf"^shoal:(network|pod):{re.escape(PREFIX)}", link.get("ifalias", ""))]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Iterator[Demo]:
    if reason := unavailable():
        pytest.skip(reason)
    home = tmp_path_factory.mktemp("home-clusters")
    urls = {}
    a = Up(home, "http://127.0.0.1:15080", "")
    try:
        proc = a.shoal("up", "--clusters", "2", "--timeout", "150")
        out = re.sub(r"\s+", " ", proc.stdout)  # rich may wrap long lines
        for name in ("cluster-a", "cluster-b"):
            m = re.search(rf"{name}: product page (http://\S+/productpage), dashboard "
                          r"(http://\S+)/ui/", out)
            assert m, f"no product page / dashboard printed for {name}:\n{proc.stdout}"
            urls[name] = m.groups()
        a.page, a.api = urls["cluster-a"]
        state = LocalProcesses(home).load()
        assert state is not None
        yield Demo(a, urls["cluster-b"][1], proc.stdout, state.session)
    finally:
        a.shoal("down", check=False)  # a no-op when test_down already ran
        from shoal.cli.up_clusters import down_clusters

        down_clusters(home)  # only if `down` did not (our state file names our prefix)


def _page(http: httpx.Client, url: str) -> str | None:
    """Who served reviews for one product page; None when the page failed."""
    try:
        r = http.get(url)
    except httpx.HTTPError:
        return None
    if r.status_code != 200 or REVIEWS_ERROR in r.text:
        return None
    m = re.search(r"reviews-v\d", r.text)
    return m.group(0) if m else None


def _pages(up: Up, n: int) -> Counter[str | None]:
    with httpx.Client(timeout=30) as http:
        return Counter(_page(http, up.page) for _ in range(n))


def _topology(api: str, home: Path) -> dict:
    return httpx.get(f"{api}/api/v1/topology", params={"window": 300}, timeout=10,
                     headers=auth_for(api, home)).json()


def _edge(topo: dict, source: str, target: str) -> dict | None:
    return next((e for e in topo["edges"] if e["source"].split(".")[0] == source
                 and e["target"].split(".")[0] == target), None)


def test_up_prints_the_product_pages_and_dashboards(demo: Demo) -> None:
    assert "shoal is up" in demo.output and "2 clusters" in demo.output
    assert demo.a.page.startswith("http://10.97.1.")
    assert demo.a.api == "http://127.0.0.1:15080"
    assert demo.b_api == "http://127.0.0.1:15180"
    for api in (demo.a.api, demo.b_api):
        assert httpx.get(f"{api}/ui/", timeout=10).status_code == 200


def test_the_product_page_of_cluster_a_is_served_in_cluster_a(demo: Demo) -> None:
    # reviews-v1 runs in cluster-a only: locality routing keeps the calls there
    assert _pages(demo.a, 10) == {"reviews-v1": 10}
    assert demo.a.reviews(5) == {"reviews-v1": 5}


def test_cluster_list_shows_both_clusters_with_their_gateways(demo: Demo) -> None:
    info = json.loads(demo.a.shoal("cluster", "list", "-o", "json").stdout)
    assert info["cluster"] == "cluster-a"
    clusters = {c["name"]: c for c in info["clusters"]}
    assert set(clusters) == {"cluster-a", "cluster-b"}
    assert clusters["cluster-a"]["state"] == "local"
    assert clusters["cluster-b"]["state"] == "reachable", clusters["cluster-b"]["lastError"]
    assert clusters["cluster-a"]["network"] == "net-a"
    assert clusters["cluster-b"]["network"] == "net-b"
    assert clusters["cluster-a"]["workloads"] >= 4  # productpage, details, reviews-v1, ratings
    assert clusters["cluster-b"]["workloads"] >= 5  # ... reviews-v2, reviews-v3
    assert clusters["cluster-a"]["gateways"] == ["10.97.1.1:15443"]
    assert clusters["cluster-b"]["gateways"] == ["10.97.2.1:15443"]
    table = demo.a.shoal("cluster", "list").stdout
    assert "cluster-b" in table and "reachable" in table


def test_reviews_fail_over_to_cluster_b(demo: Demo) -> None:
    pod = f"shoal-{PREFIX}a-reviews-v1"
    pids = subprocess.run(["ip", "netns", "pids", pod], capture_output=True, text=True,
                          check=True).stdout.split()
    assert pids, f"nothing runs in {pod}"
    subprocess.run(["kill", "-9", *pids], check=True)  # agent, Envoy and app of reviews-v1
    seen = _pages(demo.a, FAILOVER_REQUESTS)
    failed = seen[None]
    assert failed <= MAX_FAILED, f"{failed} of {FAILOVER_REQUESTS} pages failed: {seen}"
    # (a reviews-v1 answer could only have been in flight when it was killed)
    assert set(seen) - {None, "reviews-v1"} <= CLUSTER_B_REVIEWS, seen
    # from now on every page is served, with reviews from cluster-b
    after = _pages(demo.a, 10)
    assert set(after) <= CLUSTER_B_REVIEWS and sum(after.values()) == 10, after
    # once reviews-v1's lease expires, cluster-a has no reviews instance: the dashboard of
    # cluster-a marks productpage -> reviews cross-cluster
    def crossing() -> dict | None:
        _pages(demo.a, 2)
        topo = _topology(demo.a.api, demo.a.home)
        edge = _edge(topo, "productpage", "reviews")
        return topo if edge and edge["crossCluster"] else None

    topo = wait_for(crossing, 90, "productpage -> reviews marked cross-cluster")
    nodes = {n["name"]: n for n in topo["nodes"]}
    assert nodes["reviews"]["clusters"] == ["cluster-b"]
    assert nodes["productpage"]["clusters"] == ["cluster-a", "cluster-b"]
    assert not _edge(topo, "productpage", "details")["crossCluster"]

    # one mesh: what only cluster-b's sidecars measured shows in cluster-a's views too
    def federated() -> dict | None:
        _pages(demo.a, 2)
        topo = _topology(demo.a.api, demo.a.home)
        return topo if _edge(topo, "reviews", "ratings") else None

    topo = wait_for(federated, 60, "b's reviews -> ratings in a's topology")
    assert topo["remoteClusters"] == {"cluster-b": "ok"}
    # (sidecars send spans in batches, so a trace's spans arrive over a few seconds)
    spans = wait_for(lambda: _trace_across_clusters(demo), 60,
                     "a trace with productpage's spans from a and reviews' from b")
    assert {"productpage", "reviews"} <= {s["service"] for s in spans}
    # and in a's list of recent traces: ratings only runs in b, so only b's sidecars saw
    # it; a trace that crossed over is one line naming both clusters
    def ratings_traces() -> list[dict] | None:
        listed = httpx.get(f"{demo.a.api}/api/v1/traces", headers=demo.a.auth,
                           params={"service": "ratings", "limit": 20}, timeout=10).json()
        crossed = [t for t in listed["traces"] if t["clusters"] == ["cluster-a", "cluster-b"]]
        return listed["traces"] if crossed else None

    listed = wait_for(ratings_traces, 60, "b's ratings traces, one crossing, in a's list")
    assert all("ratings" in t["services"] and "cluster-b" in t["clusters"] for t in listed)


def _trace_across_clusters(demo: Demo) -> list[dict] | None:
    _pages(demo.a, 1)
    api = demo.a.api
    listed = httpx.get(f"{api}/api/v1/traces", params={"limit": 5}, timeout=10,
                       headers=demo.a.auth).json()
    for t in listed["traces"]:
        spans = httpx.get(f"{api}/api/v1/traces/{t['trace_id']}", timeout=10,
                          headers=demo.a.auth).json()["spans"]
        ours = {s["service"] for s in spans if not s.get("cluster")}  # no mark: ours
        theirs = {s["service"] for s in spans if s.get("cluster") == "cluster-b"}
        if "productpage" in ours and "reviews" in theirs:
            return spans
    return None


def test_the_dashboard_shows_both_clusters(demo: Demo, browser: Browser) -> None:
    _pages(demo.a, 20)  # recent traffic on every edge
    signed_in = demo.a.dashboard()
    dom = browser.dom(signed_in)
    for name in ("productpage", "details", "reviews"):
        assert dom.count(f'data-name="{name}"') == 1, f"want one graph node for {name}"
    assert "cluster-a" in dom and "cluster-b" in dom
    cross = set(re.findall(r'class="edge cross-cluster" data-source="([^".]+)[^"]*" '
                           r'data-target="([^".]+)', dom))
    assert cross == {("productpage", "reviews")}, cross
    shot = browser.screenshot(signed_in, ARTIFACTS / "e2e" / "dashboard-clusters.png",
                              "1400,1000")
    if UPDATE_SCREENSHOTS:
        (DOCS_IMG / shot.name).write_bytes(shot.read_bytes())


def test_down_removes_every_process_pod_and_bridge(demo: Demo) -> None:
    proc = demo.a.shoal("down")
    assert "Removed the pods and networks" in proc.stdout
    assert marked_processes(demo.session) == []
    assert _demo_netns() == []
    assert _demo_links() == []
    rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
    assert f"shoal:{PREFIX}" not in rules
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{demo.a.api}/api/v1/clusters", timeout=2)
