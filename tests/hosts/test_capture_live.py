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

from .conftest import app_command, needs_root

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
              protocol: str = "http", extra: tuple[str, ...] = ()) -> AgentProcess:
        return AgentProcess(
            self.cp, service=service, port=port, protocol=protocol, name=f"{service}-1",
            app_port=port, command=app_command(kind),  # the app runs as nobody
            extra=["--pod", self.pod(pod), "--network", self.network.name, *extra])

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

        # a name nobody knows does not resolve (asked of the host's resolvers, which
        # answer NXDOMAIN or, with no way out of this machine, nothing)
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


# A DNS server for the "outside" namespace: A records for the names in argv[2:], all
# pointing at argv[1]; NXDOMAIN for anything else.
DNS_SERVER = """
import socket, struct, sys
ip, names = sys.argv[1], {n.lower() for n in sys.argv[2:]}
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((ip, 53))
while True:
    q, peer = s.recvfrom(512)
    i, labels = 12, []
    while q[i]:
        labels.append(q[i + 1:i + 1 + q[i]].decode().lower())
        i += q[i] + 1
    question = q[12:i + 5]
    qtype = struct.unpack("!H", q[i + 1:i + 3])[0]
    known = ".".join(labels) in names
    answer = b""
    if known and qtype == 1:
        answer = b"\\xc0\\x0c" + struct.pack("!HHIH", 1, 1, 30, 4) + socket.inet_aton(ip)
    flags = 0x8180 if known else 0x8183
    header = q[:2] + struct.pack("!HHHHH", flags, 1, 1 if answer else 0, 0, 0)
    s.sendto(header + question + answer, peer)
"""

RESOLVE = "import socket, sys; print(socket.gethostbyname(sys.argv[1]))"


def test_pods_resolve_and_reach_names_outside_the_mesh(mesh: Mesh, tmp_path: Path) -> None:
    """Outside this machine, simulated: a namespace reachable only from the host, with a
    DNS server and a web server, and no route back to the pods' subnet. A pod's app
    resolves an outside name through its sidecar (forwarded to --dns-upstream), and a DNS
    ServiceEntry is reached through the sidecar, which resolves the name itself, its
    connection masqueraded to the host's address."""
    n = random.randrange(1, 60) * 4
    host_ip, out_ip = f"198.18.{n}.1", f"198.18.{n}.2"
    outside = netns.netns_name(mesh.pod("outside"))
    veth_host, veth_out = f"{mesh.prefix}oh", f"{mesh.prefix}oo"
    for argv in (["ip", "netns", "add", outside],
                 ["ip", "link", "add", veth_host, "type", "veth", "peer", "name", veth_out,
                  "netns", outside],
                 ["ip", "link", "set", "dev", veth_host, "alias",
                  f"shoal:pod:{mesh.pod('outside')}"],  # removed by the prefix's cleanup
                 ["ip", "addr", "add", f"{host_ip}/30", "dev", veth_host],
                 ["ip", "link", "set", "dev", veth_host, "up"],
                 ["ip", "-n", outside, "addr", "add", f"{out_ip}/30", "dev", veth_out],
                 ["ip", "-n", outside, "link", "set", "dev", veth_out, "up"],
                 ["ip", "-n", outside, "link", "set", "dev", "lo", "up"]):
        subprocess.run(argv, check=True, capture_output=True)
    (tmp_path / "index.html").write_text("outside\n")
    servers = [subprocess.Popen(["ip", "netns", "exec", outside, sys.executable, "-c",
                                 DNS_SERVER, out_ip, "api.outside.test", "dns.outside.test"]),
               subprocess.Popen(["ip", "netns", "exec", outside, sys.executable, "-m",
                                 "http.server", "8081", "--bind", out_ip,
                                 "--directory", str(tmp_path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    client = mesh.agent("client", "client", extra=("--dns-upstream", out_ip))
    try:
        with client:
            mesh.cp.wait_synced({"client-1"}, timeout=180)
            pod = mesh.pod("client")
            # an outside name, asked of the sidecar, forwarded to the outside resolver
            done = wait_for(lambda: (d := in_pod(pod, RESOLVE, "api.outside.test"))
                            .returncode == 0 and d, 60, "api.outside.test to resolve")
            assert done.stdout.strip() == out_ip
            assert in_pod(pod, RESOLVE, "nothing.outside.test").returncode != 0  # NXDOMAIN
            # the mesh's own names are answered by the sidecar, never asked outside
            assert in_pod(pod, RESOLVE, "nothing.default.svc.cluster.local").returncode != 0

            mesh.cp.client().apply("""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: outside}
spec:
  hosts: [dns.outside.test]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 8081, name: http, protocol: HTTP}]
""")
            vip = wait_for(lambda: (d := in_pod(pod, RESOLVE, "dns.outside.test"))
                           .returncode == 0 and d.stdout.strip() != out_ip and d.stdout.strip(),
                           60, "the ServiceEntry's VIP")
            assert ipaddress.ip_address(vip) in ipaddress.ip_network("240.240.0.0/16")
            code = ("import sys, urllib.request; o = urllib.request.build_opener("
                    "urllib.request.ProxyHandler({})); print(o.open(sys.argv[1], "
                    "timeout=20).read().decode())")
            page = wait_for(lambda: (d := in_pod(pod, code, "http://dns.outside.test:8081/"))
                            .returncode == 0 and d, 90, "the ServiceEntry through the sidecar")
            assert page.stdout.strip() == "outside"
    finally:
        for proc in servers:
            proc.kill()
            proc.wait()
