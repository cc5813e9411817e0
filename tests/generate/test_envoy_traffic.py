"""Generated config routes real requests: an app using the sidecar as its HTTP proxy."""

from __future__ import annotations

import http.server
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import json_format

from shoal.api.parse import parse_yaml
from shoal.registry.snapshot import MeshSnapshot
from shoal.xds.generate import GenerationContext, generate

from .conftest import proxy
from .envoy_check import envoy_binary, static_bootstrap

pytestmark = [
    pytest.mark.envoy,
    pytest.mark.skipif(not envoy_binary().is_file(), reason="no Envoy binary"),
]

MESH = """apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {{name: reviews}}
spec:
  selector: {{app: reviews}}
  ports: [{{name: http, port: 9080}}]
---
apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {{name: reviews-v1}}
spec: {{address: 127.0.0.1, labels: {{app: reviews, version: v1}}, ports: {{http: {p1}}}}}
---
apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {{name: reviews-v2}}
spec: {{address: 127.0.0.1, labels: {{app: reviews, version: v2}}, ports: {{http: {p2}}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews}}
spec:
  host: reviews
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
  - match: [{{headers: {{end-user: {{exact: jason}}}}}}]
    route: [{{destination: {{host: reviews, subset: v2}}}}]
  - route: [{{destination: {{host: reviews, subset: v1}}}}]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def backend(name: str) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            body = name.encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[int]:
    v1, v2 = backend("v1"), backend("v2")
    mesh = MeshSnapshot.build(parse_yaml(MESH.format(p1=v1.server_address[1],
                                                     p2=v2.server_address[1])), revision=1)
    port = free_port()
    snap = generate(GenerationContext(mesh), proxy("client", outbound_port=port))
    path = tmp_path / "bootstrap.json"
    path.write_text(json_format.MessageToJson(static_bootstrap(snap, "client.default")))
    log = (tmp_path / "envoy.log").open("w")
    envoy = subprocess.Popen(
        [str(envoy_binary()), "-c", str(path), "--disable-hot-restart", "--concurrency", "1",
         "-l", "warning"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:  # readiness: the listener accepts connections
            assert envoy.poll() is None, (tmp_path / "envoy.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "Envoy did not start listening"
                time.sleep(0.05)
        yield port
    finally:
        envoy.terminate()
        envoy.wait(timeout=10)
        log.close()
        v1.shutdown()
        v2.shutdown()


def get(port: int, url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{port}"}))
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_routes_through_the_sidecar(sidecar: int) -> None:
    assert get(sidecar, "http://reviews:9080/x") == (200, "v1")
    assert get(sidecar, "http://reviews:9080/x", {"end-user": "jason"}) == (200, "v2")
    assert get(sidecar, "http://reviews.default.svc.cluster.local:9080/") == (200, "v1")
    status, body = get(sidecar, "http://nowhere:1234/")
    assert status == 404
    assert body.startswith("shoal: no service matches host nowhere:1234,")
