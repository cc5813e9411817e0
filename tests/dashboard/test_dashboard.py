"""The dashboard in headless Chromium against a real control plane (in-process), whose
metrics store is fed with samples of the demo's traffic: pages render, the graph shows
the demo's services and edges, numbers match the API; screenshots go to test-artifacts/."""

from __future__ import annotations

import re

import httpx

from tests.conftest import Browser
from tests.dashboard.conftest import ARTIFACTS, Served

DEMO = ("productpage", "details", "reviews", "ratings")


def test_api_topology_and_slos(dashboard_cp: Served):
    topo = dashboard_cp.get("/api/v1/topology", window=60).json()
    names = {n["name"] for n in topo["nodes"]}
    assert set(DEMO) <= names and topo["metrics"] is True
    pairs = {(e["source"].split(".")[0], e["target"].split(".")[0]) for e in topo["edges"]}
    assert ("productpage", "reviews") in pairs and ("reviews", "ratings") in pairs
    slos = {s["name"]: s for s in dashboard_cp.get("/api/v1/slos").json()["slos"]}
    assert slos["reviews-availability"]["state"] == "CRITICAL"  # 2% errors = 20x the budget
    assert slos["details-availability"]["state"] == "OK"
    assert slos["productpage-latency"]["attainment"] < 99  # 10% slower than 250 ms
    series = dashboard_cp.get("/api/v1/metrics/series", service="reviews", window=600,
                              step=30).json()
    assert len(series["points"]) == 21
    assert series["points"][-2]["errorRatio"] > 0.01 > series["points"][0]["errorRatio"]
    bad = dashboard_cp.get("/api/v1/topology", window="nope")
    assert bad.status_code == 422 and bad.json()["violations"][0]["path"] == "window"


def test_overview_shows_the_graph_and_golden_signals(dashboard_cp: Served, browser: Browser):
    dom = browser.dom(dashboard_cp.dashboard())
    assert 'data-ready="1"' in dom
    for name in DEMO:
        assert f'data-name="{name}"' in dom, f"no graph node for {name}"
    edges = set(re.findall(r'class="edge" data-source="([^"]+)" data-target="([^"]+)"', dom))
    short = {(s.split(".")[0], t.split(".")[0]) for s, t in edges}
    assert {("external", "productpage"), ("productpage", "details"),
            ("productpage", "reviews"), ("reviews", "ratings")} <= short
    # the golden-signals table shows what the API says
    topo = dashboard_cp.get("/api/v1/topology", window=60).json()
    reviews = next(n for n in topo["nodes"] if n["name"] == "reviews")
    row = re.search(r"<b>reviews</b>.*?</tr>", dom, re.S)
    assert row, "no reviews row in the golden-signals table"
    cells = re.findall(r'<td class="num">(?:<span[^>]*>)?([^<]*)<', row.group(0))
    assert cells[0] == f"{reviews['rps']:.1f}"  # 12.0 rps
    assert cells[1] == f"{reviews['errorRatio'] * 100:.2f}%"
    assert "CRITICAL" in dom and "reviews-availability" in dom
    browser.screenshot(dashboard_cp.dashboard(), ARTIFACTS / "overview.png", "1400,1000")


def test_every_page_renders(dashboard_cp: Served, browser: Browser):
    checks = {
        "slos": ("reviews-availability", "burning", "budget left"),
        "services": ("Requests / s", "Latency p50 / p99", "<polyline"),
        "proxies": ("No sidecars connected.",),
        "config": ("ServiceLevelObjective", "DestinationRule", "revision",
                   "Gateway.gateway.networking.k8s.io"),
        "traces": ("ingress GET /productpage", "wf-bar err", "ratings"),
    }
    for page, needles in checks.items():
        url = dashboard_cp.dashboard(page)
        dom = browser.dom(url)
        assert f'id="page-{page}" class="page active"' in dom
        for needle in needles:
            assert needle in dom, f"{needle!r} missing on the {page} page"
        browser.screenshot(url, ARTIFACTS / f"{page}.png")
    browser.screenshot(dashboard_cp.dashboard(query="?theme=light"),
                       ARTIFACTS / "overview-light.png", "1400,1000")


def test_ui_redirect_and_static_files(dashboard_cp: Served):
    r = httpx.get(f"{dashboard_cp.url}/ui", follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == "/ui/"
    for f in ("app.js", "style.css"):
        assert httpx.get(f"{dashboard_cp.url}/ui/static/{f}").status_code == 200


def test_without_a_token_the_dashboard_asks_for_one(dashboard_cp: Served, browser: Browser):
    """No credential: no data, no polling, a sign-in form that says why (the API's own
    401 message); the static page itself needs none."""
    dom = browser.dom(f"{dashboard_cp.url}/ui/")
    assert 'id="login" class="login"' in dom and 'id="login" class="login" hidden' not in dom
    assert "not signed in" in dom and "needs a credential" in dom
    assert 'data-name="productpage"' not in dom
    browser.screenshot(f"{dashboard_cp.url}/ui/", ARTIFACTS / "sign-in.png")


def test_the_config_page_shows_gateway_api_status(dashboard_cp: Served):
    """What the Config page shows of a resource is the API's document, with the status
    computed when read (issue 15: Gateway API status on the dashboard)."""
    from shoal.testing.local import wait_for

    def gateway() -> dict | None:
        listed = dashboard_cp.get("/api/v1/resources").json()["items"]
        (gw,) = [r for r in listed if r["apiVersion"].startswith("gateway.networking.k8s.io/")]
        return gw if "status" in gw else None  # (once the proxies' snapshot holds it)

    gw = wait_for(gateway, 30, "the Gateway's status")
    assert gw["kind"] == "Gateway"
    conditions = {c["type"]: (c["status"], c["reason"]) for c in gw["status"]["conditions"]}
    # nothing serves it in this fixture: accepted, and not programmed until a gateway runs
    assert conditions == {"Accepted": ("True", "Accepted"),
                          "Programmed": ("False", "NoResources")}
