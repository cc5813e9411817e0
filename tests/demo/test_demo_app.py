"""The bookinfo-shaped demo, run directly (no mesh): services wired by URL overrides,
or through a recording stand-in for the sidecar's HTTP proxy."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest

from shoal.api import parse_yaml
from shoal.cli.up import demo_config
from shoal.demo import topology
from shoal.demo.common import PROPAGATED_HEADERS
from shoal.envoy import free_port

NO_PROXY = {"http_proxy": "", "HTTP_PROXY": "", "no_proxy": "*", "NO_PROXY": "*"}
TRACE = {
    "x-request-id": "req-1",
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "tracestate": "a=b", "x-b3-traceid": "4bf92f3577b34da6", "x-b3-spanid": "00f067aa0ba902b7",
    "x-b3-parentspanid": "0000000000000001", "x-b3-sampled": "1", "x-b3-flags": "0",
    "b3": "4bf92f3577b34da6-00f067aa0ba902b7-1", "x-ot-span-context": "ctx",
}


def http_get(url: str, headers: dict[str, str] | None = None,
             data: bytes | None = None) -> tuple[int, dict[str, str], str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         NoRedirect())
    req = urllib.request.Request(url, headers=headers or {}, data=data)
    try:
        with opener.open(req, timeout=30) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kw: Any) -> None:
        return None


@dataclass
class Services:
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, module: str, **env: str) -> str:
        port = free_port()
        full = {**os.environ, **NO_PROXY, "PORT": str(port), **env}
        proc = subprocess.Popen([sys.executable, "-m", f"shoal.demo.{module}"], env=full,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if http_get(url + "/health")[0] == 200:
                    return url
            except OSError:
                pass
            assert proc.poll() is None, f"{module} exited with {proc.returncode}"
            assert time.monotonic() < deadline, f"{module} did not come up"
            time.sleep(0.05)

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture
def services() -> Iterator[Services]:
    s = Services()
    yield s
    s.stop()
    assert all(p.returncode is not None for p in s.procs)


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, str]]:
    s = Services()
    try:
        ratings = s.start("ratings")
        urls = {"details": s.start("details"), "ratings": ratings}
        for v in ("v1", "v2", "v3"):
            urls[f"reviews-{v}"] = s.start("reviews", SHOAL_DEMO_VERSION=v,
                                           SHOAL_DEMO_RATINGS_URL=ratings)
        yield urls
    finally:
        s.stop()


class Recorder:
    """Stands in for a service (or the sidecar proxy); records each request's headers."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        rec = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                rec.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                path = urlsplit(self.path).path
                if path.startswith("/reviews/"):
                    data: Any = {"served_by": "reviews-v9", "reviews": [
                        {"reviewer": "R", "text": "t", "rating": {"stars": 3, "color": "red"}}]}
                elif path.startswith("/details/"):
                    data = {"id": 0, "author": "Someone Recorded"}
                else:
                    data = {"id": 0, "ratings": {"Reviewer1": 1, "Reviewer2": 2}}
                body = json.dumps(data).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.close()


def test_leaf_services(backends):
    status, headers, body = http_get(backends["details"] + "/details/0")
    assert status == 200 and headers["x-shoal-demo-version"] == "details-v1"
    assert json.loads(body)["ISBN-13"] == "123-1234567890"
    status, headers, body = http_get(backends["ratings"] + "/ratings/0")
    assert json.loads(body) == {"id": 0, "ratings": {"Reviewer1": 5, "Reviewer2": 4}}
    assert headers["x-shoal-demo-version"] == "ratings-v1"
    assert http_get(backends["details"] + "/nope")[0] == 404


@pytest.mark.parametrize("version,color", [("v1", None), ("v2", "black"), ("v3", "red")])
def test_reviews_versions(backends, version, color):
    status, headers, body = http_get(backends[f"reviews-{version}"] + "/reviews/0")
    data = json.loads(body)
    assert status == 200 and headers["x-shoal-demo-version"] == f"reviews-{version}"
    assert data["served_by"] == f"reviews-{version}" and len(data["reviews"]) == 2
    ratings = [r.get("rating") for r in data["reviews"]]
    if color is None:
        assert ratings == [None, None]
    else:
        assert ratings == [{"stars": 5, "color": color}, {"stars": 4, "color": color}]


@pytest.mark.parametrize("version,color", [("v1", None), ("v2", "black"), ("v3", "red")])
def test_product_page_shows_reviews(services, backends, version, color):
    page = services.start("productpage", SHOAL_DEMO_DETAILS_URL=backends["details"],
                          SHOAL_DEMO_REVIEWS_URL=backends[f"reviews-{version}"],
                          SHOAL_DEMO_RATINGS_URL=backends["ratings"])
    status, headers, html = http_get(page + "/productpage")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert headers["x-shoal-demo-version"] == "productpage-v1"
    assert "The Comedy of Errors" in html and "William Shakespeare" in html
    assert f"reviews-{version}" in html and "Reviewer1" in html
    if color is None:
        assert "&#9733;" not in html
    else:
        assert f'style="color:{color}" title="5 stars"' in html
        assert f'style="color:{color}" title="4 stars"' in html
    products = json.loads(http_get(page + "/api/v1/products")[2])
    assert products[0]["title"] == "The Comedy of Errors"
    assert json.loads(http_get(page + "/api/v1/products/0")[2])["year"] == 1595
    assert json.loads(http_get(page + "/api/v1/products/0/reviews")[2])["served_by"] == (
        f"reviews-{version}")
    assert json.loads(http_get(page + "/api/v1/products/0/ratings")[2])["ratings"]
    assert http_get(page + "/api/v1/products/7")[0] == 404


def test_fallbacks_when_backends_are_down(services):
    dead = f"http://127.0.0.1:{free_port()}"
    page = services.start("productpage", SHOAL_DEMO_DETAILS_URL=dead,
                          SHOAL_DEMO_REVIEWS_URL=dead)
    status, _, html = http_get(page + "/productpage")
    assert status == 200
    assert "Sorry, product reviews are currently unavailable for this book." in html
    assert "Sorry, product details are currently unavailable for this book." in html
    assert http_get(page + "/api/v1/products/0/reviews")[0] == 503
    reviews = services.start("reviews", SHOAL_DEMO_VERSION="v2", SHOAL_DEMO_RATINGS_URL=dead)
    data = json.loads(http_get(reviews + "/reviews/0")[2])
    assert data["reviews"][0]["rating"] == {"error": "Ratings service is currently unavailable"}


def test_login_and_header_propagation(services, recorder):
    page = services.start("productpage", SHOAL_DEMO_DETAILS_URL=recorder.url,
                          SHOAL_DEMO_REVIEWS_URL=recorder.url)
    status, headers, _ = http_get(page + "/login", data=b"username=jason")
    assert status == 302 and headers["set-cookie"].startswith("user=jason")
    status, _, html = http_get(page + "/productpage",
                               {**TRACE, "cookie": "user=jason", "user-agent": "ua-test"})
    assert status == 200 and "jason" in html and "Someone Recorded" in html
    assert "reviews-v9" in html and 'style="color:red" title="3 stars"' in html
    paths = sorted(p for p, _ in recorder.requests)
    assert paths == ["/details/0", "/reviews/0"]
    for _, got in recorder.requests:
        assert got["end-user"] == "jason"
        for name, value in TRACE.items():
            assert got[name] == value, name
        assert "cookie" not in got and got.get("user-agent") != "ua-test"
    status, headers, _ = http_get(page + "/logout")
    assert status == 302 and "Max-Age=0" in headers["set-cookie"]


def test_reviews_propagates_to_ratings(services, recorder):
    reviews = services.start("reviews", SHOAL_DEMO_VERSION="v3",
                             SHOAL_DEMO_RATINGS_URL=recorder.url)
    data = json.loads(http_get(reviews + "/reviews/0", {**TRACE, "end-user": "ann"})[2])
    assert data["reviews"][0]["rating"] == {"stars": 1, "color": "red"}
    [(path, got)] = recorder.requests
    assert path == "/ratings/0" and got["end-user"] == "ann"
    assert all(got[k] == v for k, v in TRACE.items())


def test_calls_go_through_http_proxy(services, recorder):
    """In the mesh, http://details:9080/... goes to the sidecar named by HTTP_PROXY."""
    page = services.start("productpage", HTTP_PROXY=recorder.url, http_proxy=recorder.url,
                          NO_PROXY="localhost,127.0.0.1", no_proxy="localhost,127.0.0.1")
    status, _, html = http_get(page + "/productpage")
    assert status == 200 and "reviews-v9" in html
    seen = {p: h["host"] for p, h in recorder.requests}
    assert seen == {"http://details:9080/details/0": "details:9080",
                    "http://reviews:9080/reviews/0": "reviews:9080"}


def test_topology():
    names = [w.name for w in topology.WORKLOADS]
    assert names == ["productpage-v1", "details-v1", "reviews-v1", "reviews-v2", "reviews-v3",
                     "ratings-v1"]
    w = topology.WORKLOADS[3]
    assert w.labels == {"app": "reviews", "version": "v2"} and w.port == 9080
    assert w.command == (sys.executable, "-m", "shoal.demo.reviews")
    assert w.env == {"SHOAL_DEMO_VERSION": "v2"}
    args = topology.run_args(w, app_port=41000)
    assert args[args.index("--") + 1:] == list(w.command)
    assert "version=v2" in args and "41000" in args
    # Istio's bookinfo service accounts
    assert args[args.index("--service-account") + 1] == "bookinfo-reviews"
    config = parse_yaml(demo_config())
    services = {r.metadata.name for r in config if r.kind == "Service"}
    assert services == {w.service for w in topology.WORKLOADS}
    assert set(PROPAGATED_HEADERS) >= {"end-user", "x-request-id", "traceparent", "b3"}
