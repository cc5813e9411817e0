"""The agent end to end: real Envoy, real app process, fake control plane and ADS."""

from __future__ import annotations

import json
import os
import signal

import httpx
import pytest
from agent_helpers import wait_until
from fake_control_plane import process_alive

pytestmark = [pytest.mark.envoy, pytest.mark.slow]


def envoy_is_live(run) -> bool:
    addr = (run.run_dir / "envoy-admin-address")
    if not addr.exists() or not addr.read_text().strip():
        return False
    try:
        r = httpx.get(f"http://{addr.read_text().strip()}/ready", timeout=2.0, trust_env=False)
    except httpx.HTTPError:
        return False
    return r.text.strip() == "LIVE"


async def assert_all_gone(pids: list[int]) -> None:
    for pid in pids:
        await wait_until(lambda pid=pid: not process_alive(pid), 30, f"pid {pid} to be gone")


async def test_register_heartbeat_and_graceful_stop(control_plane, ads, agent_factory):
    run = agent_factory(
        f"http://127.0.0.1:{control_plane.port}",
        f"127.0.0.1:{ads.port}",
        "--label", "version=v2", "--upstream", "ratings.default:9080", "--lease-seconds", "2",
        "--locality", "eu/zone-a",
    )
    control_plane.app_pid_file = run.state / "app.pid"
    run.start()
    try:
        posts = await control_plane.wait_for("POST")
        await control_plane.wait_for("PUT", 2)  # lease 1.5 s -> a heartbeat every 0.5 s
        assert envoy_is_live(run)  # the fake ADS gave it (empty) LDS + CDS
        pids = [run.envoy_pid(), *run.app_pids()]
        assert len(pids) == 3 and all(pids)

        body = posts[0].body
        wl = body["workload"]
        name = wl["metadata"]["name"]
        assert name.startswith("reviews-") and len(name) == len("reviews-") + 5
        assert wl["kind"] == "Workload" and wl["apiVersion"] == "mesh.shoal.io/v1alpha1"
        # registered not ready: peers are sent here once the inbound listener is active
        assert wl["metadata"]["annotations"] == {"shoal.io/registered-by": "agent",
                                                 "shoal.io/ready": "false"}
        # no token here, so no certificate: the workload tells peers to send plaintext
        assert wl["spec"]["labels"] == {"app": "reviews", "version": "v2",
                                        "security.shoal.io/tlsMode": "disabled"}
        assert wl["spec"]["serviceAccount"] == "reviews"
        assert wl["spec"]["locality"] == "eu/zone-a"
        inbound = wl["spec"]["ports"]["http"]
        assert body["service"]["spec"] == {
            "selector": {"app": "reviews"},
            "ports": [{"name": "http", "port": 9080, "protocol": "http"}],
        }
        assert body["ttlSeconds"] == 2
        assert control_plane.of("PUT")[0].path == f"/api/v1/workloads/default/{name}/heartbeat"

        env = json.loads((run.state / "env.json").read_text())
        node = ads.nodes[0]
        md = node["metadata"]
        assert node["id"] == f"{name}.default" and node["cluster"] == "reviews"
        assert node["locality"] == {"region": "eu", "zone": "zone-a"}
        assert md["WORKLOAD"] == name and md["NAMESPACE"] == "default"
        assert md["APP_PORTS"] == {"http": int(env["PORT"])}
        proxy = f"http://127.0.0.1:{int(md['OUTBOUND_PORT'])}"
        assert env["HTTP_PROXY"] == env["http_proxy"] == proxy
        assert env["NO_PROXY"] == env["no_proxy"] == "localhost,127.0.0.1"
        assert env["SHOAL_APP_PORT"] == env["PORT"]
        assert (env["SHOAL_SERVICE"], env["SHOAL_WORKLOAD"], env["SHOAL_NAMESPACE"]) == (
            "reviews", name, "default")
        [up] = md["UPSTREAMS"]
        assert up["host"] == "ratings.default" and up["port"] == 9080
        assert env["SHOAL_UPSTREAM_RATINGS_DEFAULT_9080"] == f"127.0.0.1:{int(up['localPort'])}"
        assert inbound not in (int(env["PORT"]), int(md["OUTBOUND_PORT"]))
        state = json.loads((run.run_dir / "agent.json").read_text())
        assert state["inboundPort"] == inbound and state["nodeId"] == f"{name}.default"
        assert state["agentPid"] == run.proc.pid

        run.signal(signal.SIGTERM)
        assert await run.wait_exit() == 0
        [delete] = control_plane.of("DELETE")
        assert delete.path == f"/api/v1/workloads/default/{name}"
        assert delete.app_alive is True  # deregistered before the app was stopped
        await assert_all_gone(pids)  # Envoy, the app and the child the app spawned
    finally:
        print(run.tail())


async def test_control_plane_late_and_lease_lost(control_plane, agent_factory):
    """Control plane down at start: app starts after the ready timeout, registration is
    retried until it comes up; a 404 heartbeat makes the agent register again."""
    port = control_plane.port
    await control_plane.stop()  # nothing listens on `port` until we restart it below
    run = agent_factory(f"http://127.0.0.1:{port}", "127.0.0.1:1", "--ready-timeout", "1",
                        "--lease-seconds", "2", "--name", "reviews-fixed", "--xds-delta")
    run.start()
    try:
        await wait_until(lambda: len(run.app_pids()) == 2, 60, "app start")
        control_plane.heartbeat_404 = 1
        await control_plane.start(port)
        await control_plane.wait_for("POST", 2)
        puts = control_plane.of("PUT")
        assert puts and puts[0].path == "/api/v1/workloads/default/reviews-fixed/heartbeat"
        pids = [run.envoy_pid(), *run.app_pids()]
        run.signal(signal.SIGINT)
        assert await run.wait_exit() == 0
        assert control_plane.of("DELETE")
        await assert_all_gone(pids)
    finally:
        print(run.tail())


async def test_envoy_killed_is_restarted(control_plane, ads, agent_factory):
    run = agent_factory(f"http://127.0.0.1:{control_plane.port}", f"127.0.0.1:{ads.port}")
    run.start()
    try:
        await control_plane.wait_for("POST")
        await wait_until(lambda: envoy_is_live(run), 60, "envoy live")
        first = run.envoy_pid()
        assert first
        os.kill(first, signal.SIGKILL)
        await wait_until(lambda: run.envoy_pid() not in (None, first), 60, "envoy restart")
        await wait_until(lambda: envoy_is_live(run), 60, "restarted envoy live")
        second = run.envoy_pid()
        assert run.proc.poll() is None  # the agent and the app carried on
        assert all(process_alive(p) for p in run.app_pids())
        pids = [second, *run.app_pids()]
        run.signal(signal.SIGTERM)
        assert await run.wait_exit() == 0
        await assert_all_gone([first, *pids])
        assert "envoy restarted" in run.tail()
    finally:
        print(run.tail())


async def test_app_exit_status_is_the_agents(control_plane, ads, agent_factory):
    run = agent_factory(f"http://127.0.0.1:{control_plane.port}", f"127.0.0.1:{ads.port}",
                        app_args=("--exit-after", "1.5", "7"))
    run.start()
    try:
        await control_plane.wait_for("POST")
        await wait_until(lambda: len(run.app_pids()) == 2, 60, "app start")
        pids = [run.envoy_pid(), *run.app_pids()]
        assert await run.wait_exit() == 7
        assert control_plane.of("DELETE")
        await assert_all_gone(pids)  # includes the child the app left behind
    finally:
        print(run.tail())


async def test_app_that_cannot_start(control_plane, tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "shoal.agent", "run", "-s", "x", "-p", "9080",
         "--control-plane", f"http://127.0.0.1:{control_plane.port}", "--xds", "127.0.0.1:1",
         "--ready-timeout", "0.5", "--run-dir", str(tmp_path / "run"),
         "--", str(tmp_path / "no-such-program")],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "cannot start the application" in proc.stderr
    assert not control_plane.of("POST")
    pid_file = tmp_path / "run" / "envoy.pid"
    assert not pid_file.exists()
