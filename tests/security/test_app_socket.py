"""``shoal run --app-socket`` (issue 11 part 9): in unprivileged mode the app listens on a
Unix socket in a 0700 directory instead of a loopback port, so other users' processes
cannot skip its sidecar (docs/adr/0026-app-unix-socket.md). Pure parts first (config,
node metadata, the generated inbound cluster, accepted by Envoy), then real processes."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format

from shoal.agent.app import prepare_socket_dir
from shoal.agent.config import AgentConfig, app_env, make_plan
from shoal.errors import AgentError, ValidationError
from shoal.testing.local import AgentProcess, ControlPlaneProcess, wait_for
from shoal.xds.generate import GenerationContext, generate
from shoal.xds.node import node_metadata, parse_node
from shoal.xds.types import CLUSTER, Proxy, ProxyMetadata
from tests.e2e.conftest import agent_info, app_command
from tests.generate.conftest import load_mesh
from tests.generate.envoy_check import envoy_binary, envoy_validate, static_bootstrap
from tests.security.test_unprivileged_exposure import STRICT

UDS_APP = [sys.executable, str(Path(__file__).with_name("uds_app.py"))]


def _config(tmp_path: Path, **kw: Any) -> AgentConfig:
    return AgentConfig(service="web", port=8080, command=("app",), run_dir=tmp_path / "run",
                       app_socket=True, **kw)


def _ports() -> Any:
    n = iter(range(20000, 20100))
    return lambda: next(n)


def test_the_app_gets_a_socket_path_and_no_port(tmp_path: Path) -> None:
    plan = make_plan(_config(tmp_path), pick_port=_ports())
    assert plan.app_socket == tmp_path / "run" / "app" / "app.sock"
    env = app_env(_config(tmp_path), plan, {"PORT": "1", "SHOAL_APP_PORT": "1", "X": "y"})
    assert env["SHOAL_APP_SOCKET"] == str(plan.app_socket)
    assert "PORT" not in env and "SHOAL_APP_PORT" not in env  # not even inherited ones
    assert env["X"] == "y" and env["HTTP_PROXY"].startswith("http://127.0.0.1:")


def test_refused_in_a_pod_and_with_a_too_long_path(tmp_path: Path) -> None:
    with pytest.raises(AgentError, match="--app-socket is for unprivileged mode"):
        make_plan(_config(tmp_path, capture=True, address="10.0.0.5"), pick_port=_ports())
    with pytest.raises(AgentError, match="longer than 107 bytes"):
        make_plan(AgentConfig(service="web", port=8080, command=("app",), app_socket=True,
                              run_dir=tmp_path / ("x" * 100)), pick_port=_ports())
    pod = subprocess.run(
        [sys.executable, "-m", "shoal", "run", "-s", "web", "-p", "8080", "--pod", "p1",
         "--app-socket", "--", "true"], capture_output=True, text=True, timeout=60)
    assert pod.returncode == 2
    assert pod.stderr.strip().splitlines() == [
        "shoal run: --app-socket is for unprivileged mode: in a pod the app's port is "
        "already reached only through its sidecar"]


def test_the_socket_directory_is_private_or_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "app").mkdir(parents=True, mode=0o755)
    stale = run / "app" / "app.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(stale))  # an earlier run's socket, nobody listening
    prepare_socket_dir(stale)
    assert stat.S_IMODE((run / "app").stat().st_mode) == 0o700 and not stale.exists()
    run.chmod(0o777)  # another user could swap the directory: refused
    with pytest.raises(AgentError, match="can be changed by other users"):
        prepare_socket_dir(stale)
    run.chmod(0o1777)  # sticky, like /tmp: fine
    prepare_socket_dir(stale)


def _node(meta: ProxyMetadata) -> base_pb2.Node:
    node = base_pb2.Node(id=f"{meta.workload}.default")
    json_format.ParseDict(node_metadata(meta, "default"), node.metadata)
    return node


def test_node_metadata_carries_the_socket_and_is_validated() -> None:
    meta = ProxyMetadata(workload="web-1", outbound_port=15001, app_ports={"http": 8080},
                         app_socket="/run/web/app/app.sock")
    assert parse_node(_node(meta)).metadata == meta
    assert "APP_SOCKET" not in node_metadata(ProxyMetadata("w", 1), "default")
    for bad, why in (("app.sock", "absolute path"), ("/" + "x" * 107, "at most 107")):
        node = _node(meta)
        node.metadata.fields["APP_SOCKET"].string_value = bad
        with pytest.raises(ValidationError, match=why):
            parse_node(node)
    node = _node(meta)
    node.metadata.fields["APP_SOCKET"].number_value = 3
    with pytest.raises(ValidationError, match="APP_SOCKET"):
        parse_node(node)


@pytest.fixture(scope="module")
def ctx() -> GenerationContext:
    return GenerationContext(load_mesh())


def _socket_proxy() -> Proxy:
    return Proxy(node_id="reviews-v2.default", namespace="default", metadata=ProxyMetadata(
        workload="reviews-v2", outbound_port=15001, app_ports={"http": 9081},
        app_socket="/tmp/shoal-run/default.reviews-v2/app/app.sock"))


def test_the_inbound_cluster_points_at_the_socket(ctx: GenerationContext) -> None:
    clusters = generate(ctx, _socket_proxy()).get(CLUSTER).items
    [inbound] = [c for n, c in clusters.items() if n.startswith("inbound|")]
    [ep] = [e for loc in inbound.load_assignment.endpoints for e in loc.lb_endpoints]
    assert ep.endpoint.address.pipe.path == "/tmp/shoal-run/default.reviews-v2/app/app.sock"
    assert not ep.endpoint.address.HasField("socket_address")


@pytest.mark.envoy
@pytest.mark.skipif(not envoy_binary().is_file(), reason="no Envoy binary")
def test_envoy_accepts_the_socket_cluster(ctx: GenerationContext, tmp_path: Path) -> None:
    boot = static_bootstrap(generate(ctx, _socket_proxy()), "reviews-v2.default")
    res = envoy_validate(boot, tmp_path / "bootstrap.json")
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]


# -- real processes ---------------------------------------------------------------------------

def _call(client: dict[str, Any]) -> httpx.Response:
    with httpx.Client(proxy=f"http://127.0.0.1:{client['outboundPort']}", timeout=5) as h:
        return h.get("http://web:8080/hello")


def _refused(url: str) -> bool:
    try:
        httpx.get(url, timeout=2, trust_env=False)
    except httpx.HTTPError:
        return True
    return False


@pytest.mark.envoy
@pytest.mark.slow
def test_the_mesh_reaches_the_app_on_its_socket_and_nothing_else_does(tmp_path) -> None:
    with ControlPlaneProcess(tmp_path, lease_ttl=6.0) as cp:
        web = AgentProcess(cp, service="web", port=8080, name="web-1", labels={"app": "web"},
                           command=UDS_APP, extra=["--app-socket"], env={"PORT": "9"})
        client = AgentProcess(cp, service="frontend", port=7000, name="frontend-1",
                              command=app_command("http"))
        with web, client:
            cp.wait_synced({"web-1", "frontend-1"})
            info, front = agent_info(web), agent_info(client)
            resp = wait_for(lambda: (r := _call(front)).status_code == 200 and r, 30,
                            "frontend -> web over the app socket")
            body = resp.json()
            assert body["path"] == "/hello" and body["port"] is None  # no $PORT at all
            xfcc = body["headers"]["x-forwarded-client-cert"]  # the call came over mTLS
            assert "URI=spiffe://cluster.local/ns/default/sa/frontend" in xfcc
            # the socket sits in a private directory; the app has no TCP port
            sock = web.run_dir.absolute() / "app" / "app.sock"
            assert stat.S_ISSOCK(sock.stat().st_mode)
            assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
            assert sock.parent.stat().st_uid == os.getuid()
            with pytest.raises(OSError), socket.create_connection(
                    ("127.0.0.1", info["appPort"]), timeout=2):
                pass
            # STRICT: plaintext to the sidecar is refused, the mesh keeps working...
            with cp.client() as c:
                c.apply(STRICT)
            wait_for(lambda: _refused(f"http://127.0.0.1:{info['inboundPort']}/"), 30,
                     "plaintext to web's sidecar to be refused")
            assert _call(front).status_code == 200
            # ...and there is no exposure to warn about (the watcher would report in ~5 s)
            time.sleep(6)
            assert "unprivileged mode" not in web.log_text()
            assert web.alive() and client.alive()
