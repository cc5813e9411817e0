"""Pods are real network namespaces on Linux bridges: who can reach whom."""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from shoal.errors import Conflict
from shoal.hosts import netns
from shoal.testing.local import wait_for

from .conftest import needs_root, tcp_connects

pytestmark = [needs_root]

SERVER = (
    "import socket,sys\n"
    "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen(16)\n"
    "while True:\n"
    "    c,_=s.accept(); c.sendall(b'hello'); c.close()\n"
)


def test_names_fit_linux_limits() -> None:
    assert netns.bridge_name("net-a") == "shoal-net-a"
    long = netns.bridge_name("a-network-with-a-long-name")
    assert len(long) <= 15 and long.startswith("shbr-")
    assert netns.bridge_name("a-network-with-a-long-name") == long


def test_two_pods_on_one_network_talk(prefix: str, tmp_path: Path) -> None:
    net = netns.create_network(prefix + "a", "10.61.7.0/24")
    assert netns.create_network(prefix + "a", "10.61.7.0/24") == net  # idempotent
    assert net.gateway == ipaddress.IPv4Address("10.61.7.1")
    one = netns.create_pod(prefix + "one", net)
    two = netns.create_pod(prefix + "two", net, "10.61.7.20")
    assert one.address == ipaddress.IPv4Address("10.61.7.2")
    assert two.address == ipaddress.IPv4Address("10.61.7.20")
    assert netns.create_pod(prefix + "one", net) == one  # idempotent
    with pytest.raises(Conflict):
        netns.create_pod(prefix + "three", net, "10.61.7.20")

    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(two.command([sys.executable, "-c", SERVER, "7000"]),
                              stdout=log, stderr=log, start_new_session=True)
    try:
        wait_for(lambda: tcp_connects(one, str(two.address), 7000), 60, "pod two's server")
        got = subprocess.run(one.command([sys.executable, "-c",
                             f"import socket; print(socket.create_connection(('{two.address}',"
                             " 7000)).recv(16).decode())"]),
                             capture_output=True, text=True, check=True, timeout=30)
        assert got.stdout.strip() == "hello"
        # the pod's own address is not the host's: the host sees it as a peer on the bridge
        assert not tcp_connects(one, "127.0.0.1", 7000)
    finally:
        server.kill()
        server.wait()

    netns.delete_pod(two)
    netns.delete_pod(two)  # idempotent
    assert not Path(f"/run/netns/{two.netns}").exists()
    netns.delete_network(net)
    netns.delete_network(net)


def test_isolated_networks_reach_only_the_host(prefix: str) -> None:
    a = netns.create_network(prefix + "a", "10.61.8.0/24")
    b = netns.create_network(prefix + "b", "10.61.9.0/24")
    pa = netns.create_pod(prefix + "pa", a)
    pb = netns.create_pod(prefix + "pb", b)

    with socket.socket() as host_listener:
        # a service in the host namespace (where control planes and gateways listen)
        host_listener.bind(("0.0.0.0", 0))
        host_listener.listen(16)
        host_port = host_listener.getsockname()[1]
        server = subprocess.Popen(pb.command([sys.executable, "-c", SERVER, "7001"]),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        try:
            wait_for(lambda: tcp_connects(pb, str(pb.address), 7001), 60, "pod b's server")
            # flat networks: routed through the host
            assert tcp_connects(pa, str(pb.address), 7001)

            netns.isolate(a, b)
            netns.isolate(a, b)  # idempotent
            assert not tcp_connects(pa, str(pb.address), 7001)
            for pod in (pa, pb):
                for gateway in (a.gateway, b.gateway):
                    assert tcp_connects(pod, str(gateway), host_port), (pod.name, gateway)
        finally:
            server.kill()
            server.wait()
    netns.cleanup(prefix)
    assert not Path(f"/run/netns/{pa.netns}").exists()
    assert subprocess.run(["ip", "link", "show", a.bridge], capture_output=True).returncode
