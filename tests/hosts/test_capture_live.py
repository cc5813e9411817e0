"""Pods with transparent capture, end to end: real namespaces, iptables, Envoys, apps.

The apps have no proxy settings: they dial ``web:8080`` by name and iptables hands the
connection to their sidecar; peers' connections to a pod are handed to its sidecar too.
"""

from __future__ import annotations

import ipaddress
import json
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shoal.hosts import capture, netns
from shoal.testing.local import AgentProcess, ControlPlaneProcess, wait_for
from shoal.xds.generate import names

from .conftest import needs_root

pytestmark = [needs_root, pytest.mark.envoy, pytest.mark.slow]

STRICT = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: STRICT}}
"""

GET = """
import json, sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
with opener.open(sys.argv[1], timeout=20) as r:
    print(json.dumps({"status": r.status, "body": json.loads(r.read())}))
"""

TCP = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20) as s:
    s.sendall(b"ping\\n")
    print(s.recv(1024).decode())
"""


def in_pod(pod: str, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Python run inside pod ``pod`` like its app would run (root, no proxy variables)."""
    env = {"PATH": "/usr/bin:/bin"}
    return subprocess.run(["ip", "netns", "exec", netns.netns_name(pod), sys.executable,
                           "-c", code, *args], capture_output=True, text=True, timeout=60,
                          env=env)


def get(pod: str, url: str) -> dict[str, Any]:
    done = in_pod(pod, GET, url)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@dataclass
class Mesh:
    cp: ControlPlaneProcess
    network: netns.Network
    prefix: str

    def pod(self, short: str) -> str:
        return self.prefix + short

    def agent(self, service: str, pod: str, kind: str = "http", port: int = 8080,
              protocol: str = "http") -> AgentProcess:
        return AgentProcess(
            self.cp, service=service, port=port, protocol=protocol, name=f"{service}-1",
            app_port=port, command=[sys.executable, "-m", "shoal.testing.apps", kind],
            extra=["--pod", self.pod(pod), "--network", self.network.name])

    def info(self, agent: AgentProcess) -> dict[str, Any]:
        path = agent.run_dir / "agent.json"
        return wait_for(lambda: path.exists() and json.loads(path.read_text()), 120,
                        f"{path}")

    def stats(self, pod: str, agent: AgentProcess) -> dict[str, int]:
        port = self.info(agent)["adminPort"]
        done = in_pod(pod, "import urllib.request,sys; print(urllib.request.urlopen("
                           f"'http://127.0.0.1:{port}/stats?format=json').read().decode())")
        assert done.returncode == 0, done.stderr
        return {s["name"]: s.get("value", 0) for s in json.loads(done.stdout)["stats"]
                if "value" in s}


@pytest.fixture
def mesh(prefix: str, tmp_path: Path) -> Iterator[Mesh]:
    subnet = f"10.197.{random.randrange(1, 250)}.0/24"
    network = netns.create_network(prefix + "net", subnet)
    with ControlPlaneProcess(tmp_path, lease_ttl=6.0, agent_host=str(network.gateway)) as cp:
        yield Mesh(cp, network, prefix)


def test_pods_talk_by_name_through_their_sidecars(mesh: Mesh) -> None:
    web = mesh.agent("web", "web")
    client = mesh.agent("client", "client")
    echo = mesh.agent("echo", "echo", kind="tcp", port=9000, protocol="tcp")
    with web, client, echo:
        mesh.cp.wait_synced({"web-1", "client-1", "echo-1"}, timeout=180)
        web_ip = mesh.info(web)["address"]
        assert ipaddress.ip_address(web_ip) in mesh.network.subnet  # its own pod IP
        # the app's view: a plain request by name, no proxy settings
        reply = wait_for(lambda: get(mesh.pod("client"), "http://web:8080/hello"), 120,
                         "web reachable from the client pod by name")
        assert reply["status"] == 200
        assert reply["body"]["served_by"] == "web-1"
        # mTLS: the server sidecar saw the client's SPIFFE certificate
        headers = {k.lower(): v for k, v in reply["body"]["headers"].items()}
        assert "spiffe://cluster.local/ns/default/sa/client" in \
            headers.get("x-forwarded-client-cert", ""), headers

        # both sidecars carried it: client outbound capture, server inbound capture
        before = mesh.stats(mesh.pod("client"), client)
        get(mesh.pod("client"), "http://web.default.svc.cluster.local:8080/again")
        after = mesh.stats(mesh.pod("client"), client)
        out_cx = "listener.0.0.0.0_15001.downstream_cx_total"
        # exactly one captured connection: the sidecar's own upstream one was not captured
        assert after[out_cx] - before[out_cx] == 1
        assert after["cluster.outbound|8080||web.default.svc.cluster.local.upstream_rq_total"] \
            > before.get("cluster.outbound|8080||web.default.svc.cluster.local"
                         ".upstream_rq_total", 0)
        server = mesh.stats(mesh.pod("web"), web)
        assert server["listener.0.0.0.0_15006.downstream_cx_total"] >= 1
        assert server[f"cluster.{names.inbound_cluster(8080, 'http')}.upstream_rq_total"] >= 2

        # names outside the mesh do not resolve in a pod (no upstream resolver)
        unknown = in_pod(mesh.pod("client"), "import socket\ntry:\n"
                         " socket.getaddrinfo('nothing.example', 80)\nexcept OSError as e:"
                         " print('ERR', e)")
        assert unknown.stdout.startswith("ERR"), unknown.stdout + unknown.stderr

        # a TCP service, by name
        done = wait_for(lambda: (d := in_pod(mesh.pod("client"), TCP, "echo", "9000"))
                        .returncode == 0 and d, 120, "the TCP service by name")
        assert done.stdout.startswith("echo-1")

        # a pod without a sidecar reaches web's app only through web's sidecar:
        # PERMISSIVE (default) lets its plaintext in, STRICT refuses it
        outsider = netns.create_pod(mesh.pod("outsider"), mesh.network)
        url = f"http://{web_ip}:8080/plain"
        got = wait_for(lambda: get(outsider.name, url), 60, "plaintext under PERMISSIVE")
        assert got["body"]["served_by"] == "web-1"
        assert "x-forwarded-client-cert" not in {k.lower() for k in got["body"]["headers"]}
        mesh.cp.client().apply(STRICT)
        wait_for(lambda: in_pod(outsider.name, GET, url).returncode != 0, 120,
                 "plaintext refused under STRICT")
        assert get(mesh.pod("client"), "http://web:8080/still")["status"] == 200

        # the rules that did it
        rules = capture.installed(netns.netns_name(mesh.pod("web")))
        assert "--uid-owner 1337 -j RETURN" in rules
        assert "--dport 8080 -j REDIRECT --to-ports 15006" in rules

    # pods are deleted when their agents stop
    for pod in ("web", "client", "echo"):
        assert not Path(f"/run/netns/{netns.netns_name(mesh.pod(pod))}").exists()
