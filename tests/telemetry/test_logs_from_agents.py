"""`shoal logs` without the access-log stream (issue 12): the control plane reads the
access logs the sidecars keep locally, from their agents.

A real control plane *without* ``--access-log-stream``, a service with two replicas and a
client under real agents with Envoy (the test process plays the client app through its
sidecar):

* `shoal logs SERVICE` shows the entries of both replicas merged by time, with status,
  response flags and request ids; following with the returned cursor (the API and
  `shoal logs -f`) gives only new entries;
* an agent's ``/logs`` answers the control plane's certificate only: a workload
  certificate gets 403, no certificate no TLS session; the control plane's
  ``/api/v1/logs`` wants an operator credential (401);
* an agent that does not answer is listed as unreachable while the others' entries are
  returned.

The control plane's lease TTL is long so that a stopped agent stays registered.
"""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from shoal.ca.authority import WORKLOAD_DNS_NAME
from shoal.telemetry.agent_logs import LOGS_PATH
from shoal.testing.local import AgentProcess, ControlPlaneProcess, wait_for
from tests.e2e.conftest import agent_info, app_command

pytestmark = [pytest.mark.envoy, pytest.mark.slow]
ECHO = "echo.default.svc.cluster.local"
REPLICAS = {"echo-1.default", "echo-2.default"}


@dataclass
class Mesh:
    cp: ControlPlaneProcess
    workdir: Path
    proxy: str  # the client sidecar's outbound HTTP proxy
    agents: dict[str, AgentProcess]
    info: dict[str, dict[str, Any]]  # workload -> its agent.json

    def send(self, path: str, status: int = 200) -> httpx.Response:
        with httpx.Client(proxy=self.proxy, timeout=10) as http:
            r = http.get(f"http://echo:8080{path}", headers={"x-echo-status": str(status)})
        assert r.status_code == status
        return r

    def logs(self, **params: Any) -> dict[str, Any]:
        """``GET /api/v1/logs`` as the operator."""
        with self.cp.http(timeout=60) as http:
            return dict(http.get("/api/v1/logs", params=params).raise_for_status().json())

    def shoal(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The real CLI, with the operator credential the control plane wrote."""
        return subprocess.run([sys.executable, "-m", "shoal", "-c", self.cp.url, *args],
                              capture_output=True, text=True, timeout=120)

    def agent_logs(self, workload: str, tls: ssl.SSLContext,
                   params: dict[str, str] | None = None) -> httpx.Response:
        """An agent's own ``/logs``, verified as a workload of the mesh."""
        port = self.info[workload]["metricsPort"]
        with httpx.Client(verify=tls, timeout=10) as http:
            return http.get(f"https://127.0.0.1:{port}{LOGS_PATH}", params=params,
                            extensions={"sni_hostname": WORKLOAD_DNS_NAME})

    def tls(self, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.cp.ca_bundle))
        if cert is not None:
            ctx.load_cert_chain(cert, key)
        return ctx


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    workdir = tmp_path_factory.mktemp("agent-logs")
    # no --access-log-stream; every request logged (the default logs failed ones only)
    with ControlPlaneProcess(workdir, lease_ttl=120.0, extra=["--access-log", "all"]) as cp:
        agents = {name: AgentProcess(cp, service="echo", port=8080, name=name,
                                     labels={"version": "v1"}, command=app_command("http"))
                  for name in ("echo-1", "echo-2")}
        agents["client"] = AgentProcess(cp, service="client", port=7000, name="client",
                                        command=app_command("http"))
        try:
            for a in agents.values():
                a.start()
            cp.wait_synced(set(agents))
            info = {name: agent_info(a) for name, a in agents.items()}
            proxy = f"http://127.0.0.1:{info['client']['outboundPort']}"
            with httpx.Client(proxy=proxy, timeout=5) as http:
                wait_for(lambda: http.get("http://echo:8080/warmup").status_code == 200, 60,
                         "echo to be reachable through the mesh")
            yield Mesh(cp, workdir, proxy, agents, info)
        finally:
            for a in agents.values():
                a.signal(signal.SIGCONT)  # in case a test stopped it
                a.stop()


def marked(entries: list[dict[str, Any]], marker: str) -> list[dict[str, Any]]:
    return [e for e in entries if marker in str(e.get("path", ""))]


def test_logs_of_both_replicas_merged_by_time(mesh: Mesh) -> None:
    marker = f"/m-{uuid.uuid4().hex[:8]}"
    sent = 0

    def both_replicas() -> bool:
        nonlocal sent
        mesh.send(f"{marker}/{sent}")  # until the balancer has picked each replica
        sent += 1
        reporters = {e["reporter"] for e in marked(
            mesh.logs(service="echo", tail=1000)["entries"], marker)}
        return reporters == REPLICAS

    wait_for(both_replicas, 90, "entries of both replicas", interval=0.2)
    mesh.send(f"{marker}/failed", 503)
    # the 503 is tried three times (two retries); Envoy flushes its log about once a second
    wait_for(lambda: len([e for e in mesh.logs(service="echo", tail=1000)["entries"]
                          if e["path"] == f"{marker}/failed"]) == 3, 30,
             "the three inbound entries of the failed request")

    out = mesh.shoal("logs", "echo", "--tail", "1000", "-o", "json")
    assert out.returncode == 0, out.stderr
    entries = [json.loads(line) for line in out.stdout.splitlines()]
    times = [e["start_time"] for e in entries]
    assert times == sorted(times)  # merged by time
    mine = marked(entries, marker)
    assert {e["reporter"] for e in mine} == REPLICAS
    assert len({e["path"] for e in mine}) == sent + 1  # every request (the 503 retried)
    for e in mine:
        assert e["direction"] == "inbound" and e["service"] == "echo"
        assert e["destination_workload"] in ("echo-1", "echo-2")
        assert e["request_id"] and "response_flags" in e
        assert e["source_principal"].endswith("/ns/default/sa/client") and e["mtls"]
        assert e["status"] == (503 if e["path"].endswith("/failed") else 200)
    assert "seq" not in mine[0]  # read from the agents, not the stream's ring

    # the client's side of the failed request: its status and response flags
    def failed() -> dict[str, Any] | None:
        client = mesh.logs(service="client", tail=1000)["entries"]
        return next((e for e in client if e.get("path") == f"{marker}/failed"), None)

    entry = wait_for(failed, 30, "the client's entry of the failed request")
    assert entry["status"] == 503 and entry["response_flags"] == "URX"
    assert entry["direction"] == "outbound" and entry["destination_service"] == ECHO
    assert entry["reporter"] == "client.default" and entry["request_id"]
    text = mesh.shoal("logs", "client", "--tail", "1000")
    assert text.returncode == 0, text.stderr
    line = next(x for x in text.stdout.splitlines() if f"{marker}/failed" in x)
    assert f"-> {ECHO} GET {marker}/failed 503 URX" in line
    assert f"id={entry['request_id']}" in line


def test_following_with_the_cursor_gives_only_new_entries(mesh: Mesh) -> None:
    first = mesh.logs(service="echo", tail=1000)
    seen_before = {(e["reporter"], e["request_id"]) for e in first["entries"]}
    marker = f"/f-{uuid.uuid4().hex[:8]}"
    for i in range(4):
        mesh.send(f"{marker}/{i}")
    cursor, got = first["cursor"], []

    def follow() -> bool:
        nonlocal cursor
        page = mesh.logs(service="echo", cursor=cursor, wait=5)
        got.extend(page["entries"])
        cursor = page["cursor"]
        return len(marked(got, marker)) >= 4

    wait_for(follow, 90, "the four new entries", interval=0)
    assert sorted(e["path"] for e in marked(got, marker)) == [
        f"{marker}/{i}" for i in range(4)]
    assert not seen_before & {(e["reporter"], e["request_id"]) for e in got}
    assert mesh.logs(service="echo", cursor=cursor)["entries"] == []

    # `shoal logs -f`: the newest line, then each new one once
    out_path = mesh.workdir / f"follow-{marker[3:]}.jsonl"
    with open(out_path, "w") as out:
        follower = subprocess.Popen(
            [sys.executable, "-m", "shoal", "-c", mesh.cp.url, "logs", "echo", "-f",
             "--tail", "1", "-o", "json"], stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        def lines() -> list[dict[str, Any]]:
            return [json.loads(x) for x in out_path.read_text().splitlines() if x]

        wait_for(lambda: lines(), 60, "the follower's first line")
        again = f"/g-{uuid.uuid4().hex[:8]}"
        for i in range(3):
            mesh.send(f"{again}/{i}")
        wait_for(lambda: len(marked(lines(), again)) >= 3, 90, "the follower's new lines")
        assert sorted(e["path"] for e in marked(lines(), again)) == [
            f"{again}/{i}" for i in range(3)]
        assert len(lines()) == 4  # the one it began with, and the three new ones
    finally:
        follower.terminate()
        follower.wait(20)


def test_only_the_control_plane_may_read_an_agents_log(mesh: Mesh) -> None:
    serving = mesh.workdir / "data" / "ca" / "serving"
    control_plane = mesh.tls(serving / "cert.pem", serving / "key.pem")
    ok = mesh.agent_logs("echo-1", control_plane, {"tail": "5"})
    assert ok.status_code == 200, ok.text
    assert ok.json()["entries"] and ok.json()["cursor"]
    chain, key = mesh.cp.workload_certificate("default", "intruder")
    (mesh.workdir / "intruder.pem").write_bytes(chain)
    (mesh.workdir / "intruder.key").write_bytes(key)
    intruder = mesh.agent_logs("echo-1", mesh.tls(mesh.workdir / "intruder.pem",
                                                  mesh.workdir / "intruder.key"))
    assert intruder.status_code == 403
    assert "only the control plane" in intruder.json()["error"]
    with pytest.raises(httpx.TransportError):  # no client certificate: no TLS session
        mesh.agent_logs("echo-1", mesh.tls())
    # the operator API wants a credential
    anonymous = httpx.get(f"{mesh.cp.url}/api/v1/logs", params={"service": "echo"},
                          timeout=10)
    assert anonymous.status_code == 401


def test_an_agent_that_does_not_answer_is_reported(mesh: Mesh) -> None:
    stopped = mesh.agents["echo-2"]
    stopped.signal(signal.SIGSTOP)  # registered still (long lease), but silent
    try:
        page = mesh.logs(service="echo", tail=1000)
        assert [(u["workload"], u["namespace"]) for u in page["unreachable"]] == [
            ("echo-2", "default")]
        assert page["entries"]
        assert {e["reporter"] for e in page["entries"]} == {"echo-1.default"}
        out = mesh.shoal("logs", "echo", "--tail", "3")
        assert out.returncode == 0, out.stderr
        assert "echo-2.default did not answer" in out.stderr
        assert len(out.stdout.splitlines()) == 3
    finally:
        stopped.signal(signal.SIGCONT)
    wait_for(lambda: not mesh.logs(service="echo")["unreachable"], 60,
             "echo-2's agent to answer again")
