"""What the two Gateway API conformance harnesses share: the suite's files (read from
../shared, never copied); one case: apply a file as it is, wait until its check passes
five times in a row, delete what it applied; and the checks of the files the mesh and
the Gateway suites both have (the same routes on a Service or on a Gateway), written
here in our words from the spec. A check takes an HTTP client whose requests reach the
routes: through a sidecar, or with the gateway as the client's proxy."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from shoal.api import parse_yaml
from shoal.testing.local import ControlPlaneProcess, wait_for

SUITE = Path(__file__).resolve().parents[3] / "shared" / "gateway-api-conformance" \
    / "conformance"


def k8s(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def run_case(cp: ControlPlaneProcess, path: Path, check: Callable[[], None],
             errors: tuple[type[BaseException], ...], times: int = 5) -> None:
    """Apply ``path``; ``check`` must pass ``times`` times in a row (a default route
    cannot pass by chance that often) within a minute; ``errors`` are what a failing
    check raises. What was applied is deleted afterwards."""
    text = path.read_text()
    with cp.client() as c:
        c.apply(text)

    def passes() -> bool:
        try:
            check()
        except errors:
            return False
        return True

    try:
        wait_for(lambda: all(passes() for _ in range(times)), 60,
                 f"{path.name} to take effect")
    finally:
        with cp.client() as c:
            for r in parse_yaml(text):
                c.delete(r.kind, r.metadata.namespace, r.metadata.name)


# -- checks of the files both suites have ----------------------------------------------------

def call(http: httpx.Client, path: str, headers: dict[str, str] | None = None,
         host: str = "echo") -> tuple[httpx.Response, dict[str, Any]]:
    r = http.get(f"http://{host}{path}", headers=headers or {})
    body = r.json() if r.headers.get("content-type") == "application/json" else {}
    return r, body


def backend(http: httpx.Client, path: str, headers: dict[str, str] | None = None) -> str:
    """Which version answered (``v1`` for the suite's echo-v1 or infra-backend-v1), or
    the backend's name for the others."""
    _, body = call(http, path, headers)
    name = str(body.get("served_by", "")).rsplit("-", 1)[0]
    return m.group(1) if (m := re.search(r"-(v\d+)$", name)) else name


def seen_headers(http: httpx.Client, path: str, headers: dict[str, str]) -> dict[str, str]:
    _, body = call(http, path, headers)
    return {k.lower(): v for k, v in body["headers"].items()}


def matching(http: httpx.Client) -> None:
    assert backend(http, "/") == "v1"
    assert backend(http, "/example") == "v1"
    assert backend(http, "/", {"version": "one"}) == "v1"
    assert backend(http, "/v2") == "v2"
    assert backend(http, "/v2/example") == "v2"
    assert backend(http, "/", {"version": "two"}) == "v2"
    assert backend(http, "/v2example") == "v1"  # whole path segments


def weight(http: httpx.Client) -> None:
    served = Counter(backend(http, "/") for _ in range(200))
    assert set(served) == {"v1", "v2"}, served
    assert abs(served["v1"] - 140) <= 35, served  # 70 %: 5 standard deviations


def request_headers(http: httpx.Client) -> None:
    assert seen_headers(http, "/set", {"X-Header-Set": "some-other-value"})[
        "x-header-set"] == "set-overwrites-values"
    assert "add-appends-values" in seen_headers(http, "/add", {"X-Header-Add": "x"})[
        "x-header-add"]
    assert "x-header-remove" not in seen_headers(http, "/remove", {"X-Header-Remove": "x"})
    multi = seen_headers(http, "/multiple", {"X-Header-Remove-1": "x", "X-Header-Set-1": "y"})
    assert multi["x-header-set-1"] == "header-set-1" and "x-header-remove-1" not in multi
    assert multi["x-header-add-3"] == "header-add-3"


def rewrite(http: httpx.Client) -> None:
    assert call(http, "/prefix/one/two")[1]["path"] == "/one/two"
    assert call(http, "/strip-prefix/three")[1]["path"] == "/three"
    assert call(http, "/strip-prefix")[1]["path"] == "/"
    assert call(http, "/full/one/two")[1]["path"] == "/one"
    body = call(http, "/full/rewrite-path-and-modify-headers/x", {"X-Header-Remove": "r"})[1]
    assert body["path"] == "/test"
    assert "X-Header-Remove".lower() not in {k.lower() for k in body["headers"]}


def redirect(status: int, path: str) -> Callable[[httpx.Client], None]:
    def check(http: httpx.Client) -> None:
        r, _ = call(http, path)
        assert r.status_code == status, (r.status_code, r.headers)
        assert r.headers["location"].endswith(path)
    return check


def redirect_port(http: httpx.Client) -> None:
    r, _ = call(http, "/port")
    assert r.status_code == 302 and ":8083/port" in r.headers["location"]
    r, _ = call(http, "/port-and-host-and-status")
    assert r.status_code == 302 and "example.org:8083" in r.headers["location"]
    r, _ = call(http, "/port-and-status")
    assert r.status_code == 301


def query(http: httpx.Client) -> None:
    assert backend(http, "/?animal=whale") == "v1"
    assert backend(http, "/?animal=dolphin") == "v2"
    assert backend(http, "/path1?animal=whale") == "v1"


def named(http: httpx.Client) -> None:
    assert backend(http, "/named") == "v1"
    assert backend(http, "/unnamed") == "v2"


def redirect_scheme(http: httpx.Client) -> None:
    r, _ = call(http, "/scheme")
    assert r.status_code == 302 and r.headers["location"].startswith("https://")
    r, _ = call(http, "/scheme-and-host")
    assert r.headers["location"].startswith("https://example.org/scheme-and-host")
    assert call(http, "/scheme-and-status")[0].status_code == 301


def redirect_host(http: httpx.Client) -> None:
    r, _ = call(http, "/hostname-redirect")
    assert r.status_code == 302
    assert r.headers["location"] == "http://example.org/hostname-redirect"
    assert call(http, "/host-and-status")[0].status_code == 301


def simple(http: httpx.Client) -> None:
    assert {backend(http, "/") for _ in range(10)} == {"v1"}


def redirect_path(http: httpx.Client) -> None:
    """ReplacePrefixMatch replaces the matched prefix and keeps the rest of the path;
    ReplaceFullPath replaces the whole path; with a hostname or a status code too."""
    def location(path: str, status: int = 302) -> str:
        r, _ = call(http, path)
        assert r.status_code == status, (path, r.status_code)
        return r.headers["location"]

    assert location("/original-prefix/lemon").endswith("/replacement-prefix/lemon")
    assert location("/original-prefix").endswith("/replacement-prefix")
    assert location("/full/path/original").endswith("/full-path-replacement")
    assert location("/path-and-host/x") == "http://example.org/replacement-prefix/x"
    assert location("/path-and-status/x", 301).endswith("/replacement-prefix/x")
    assert location("/full-path-and-host/x") == "http://example.org/replacement-full"
    assert location("/full-path-and-status/x", 301).endswith("/replacement-full")


# file name -> its check, for the files both suites have
SHARED: dict[str, Callable[[httpx.Client], None]] = {
    "httproute-simple-same-namespace.yaml": simple,
    "httproute-matching.yaml": matching,
    "httproute-weight.yaml": weight,
    "httproute-request-header-modifier.yaml": request_headers,
    "httproute-rewrite-path.yaml": rewrite,
    "httproute-307-redirect.yaml": redirect(307, "/temporary"),
    "httproute-308-redirect.yaml": redirect(308, "/permanent"),
    "httproute-redirect-port.yaml": redirect_port,
    "httproute-query-param-matching.yaml": query,
    "httproute-named-rule.yaml": named,
    "httproute-redirect-scheme.yaml": redirect_scheme,
    "httproute-redirect-host-and-status.yaml": redirect_host,
    "httproute-redirect-path.yaml": redirect_path,
}
