"""What every demo service shares: the HTTP server, JSON responses, header propagation
and calls to other services through the sidecar (``HTTP_PROXY``).

In the mesh a service calls ``http://reviews:9080/...`` and urllib sends it through the
sidecar's outbound proxy. Outside the mesh (tests, local hacking) set
``SHOAL_DEMO_<SERVICE>_URL=http://127.0.0.1:PORT`` to call a service directly.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import signal
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

from shoal.errors import Unavailable

log = logging.getLogger("shoal.demo")

# Headers a service copies from its incoming request to the requests it makes, so a
# trace (and the logged-in user, for routing rules) follows the call chain.
PROPAGATED_HEADERS = (
    "end-user",
    "x-request-id",
    "traceparent",
    "tracestate",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    "x-ot-span-context",
)
VERSION_HEADER = "x-shoal-demo-version"


def demo_version(default: str = "v1") -> str:
    return os.environ.get("SHOAL_DEMO_VERSION", default)


def service_url(service: str, port: int = 9080) -> str:
    """Base URL for calling ``service``: ``$SHOAL_DEMO_<SERVICE>_URL`` or the mesh name."""
    override = os.environ.get(f"SHOAL_DEMO_{service.upper()}_URL")
    return (override or f"http://{service}:{port}").rstrip("/")


def propagated(headers: Message | Mapping[str, str]) -> dict[str, str]:
    """The subset of ``headers`` to forward downstream."""
    out = {}
    for name in PROPAGATED_HEADERS:
        value = headers.get(name)
        if value:
            out[name] = value
    return out


def fetch_json(
    url: str, headers: Mapping[str, str], *, timeout: float, retries: int = 0
) -> Any:
    """GET ``url`` (through ``$HTTP_PROXY`` when set) and decode JSON; raises Unavailable."""
    opener = urllib.request.build_opener()  # ProxyHandler reads http_proxy/no_proxy
    last: Exception | None = None
    for _ in range(retries + 1):
        req = urllib.request.Request(url, headers=dict(headers))
        try:
            with opener.open(req, timeout=timeout) as resp:
                return json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError) as e:
            last = e
    raise Unavailable(f"GET {url}: {last}")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Message
    body: bytes = b""

    @property
    def cookies(self) -> dict[str, str]:
        jar = SimpleCookie(self.headers.get("cookie") or "")
        return {k: m.value for k, m in jar.items()}

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode(errors="replace")).items()}


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)

    @staticmethod
    def json(data: Any, status: int = 200) -> Response:
        return Response(status, json.dumps(data, indent=1).encode())

    @staticmethod
    def html(text: str, status: int = 200) -> Response:
        return Response(status, text.encode(), "text/html; charset=utf-8")

    @staticmethod
    def redirect(location: str, *headers: tuple[str, str]) -> Response:
        return Response(302, b"", "text/plain", [("Location", location), *headers])


Route = Callable[[Request], Response]


class DemoHandler(http.server.BaseHTTPRequestHandler):
    """Dispatches to ``app.route(request)``; sets Content-Length and the version header."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "shoal-demo"
    route: Route  # set by make_handler
    served_by: str

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        req = Request(self.command, parts.path, parse_qs(parts.query), self.headers, body)
        try:
            resp = type(self).route(req)
        except Exception as e:  # the edge of a demo server: answer 500, keep serving
            log.exception("request failed")
            resp = Response.json({"error": f"{type(e).__name__}: {e}"}, 500)
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(resp.body)))
        self.send_header(VERSION_HEADER, self.served_by)
        for k, v in resp.headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(resp.body)

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


def make_handler(route: Route, served_by: str) -> type[DemoHandler]:
    return type("Handler", (DemoHandler,), {"route": staticmethod(route),
                                            "served_by": served_by})


def wait_for_signal() -> None:
    """Block until SIGTERM or SIGINT."""
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()


def serve(route: Route, served_by: str, default_port: int = 9080,
          beside: Callable[[], Callable[[], None]] | None = None) -> None:
    """Serve on 127.0.0.1:$PORT until SIGTERM/SIGINT. ``beside`` starts another server
    next to it (after logging is set up) and returns how to stop that one."""
    logging.basicConfig(level=os.environ.get("SHOAL_LOG_LEVEL", "INFO").upper(),
                        stream=sys.stderr, format=f"{served_by} %(levelname)s %(message)s")
    port = int(os.environ.get("PORT") or default_port)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), make_handler(route, served_by))
    server.daemon_threads = True
    stop_beside = beside() if beside is not None else None

    def stop(*_: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("%s listening on 127.0.0.1:%d", served_by, port)
    try:
        server.serve_forever()
    finally:
        if stop_beside is not None:
            stop_beside()
        server.server_close()
