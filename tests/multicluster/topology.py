"""Two clusters on one machine, for the multi-cluster tests and bench/failover.py.

Each cluster: its own network (a Linux bridge, isolated from the other: pods of one
cannot reach pods of the other), its own control plane (host namespace, agent listeners
on its bridge address), an intermediate CA under one shared root, and an east-west
gateway (host namespace, on its bridge address). Workloads run in pods (network
namespaces) with their sidecars, registered with the pod's address. Each control plane
follows the other (remote secrets). Needs root.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from shoal.demo.clusters import ClusterPlan, east_west_gateway, locality_failover, plans
from shoal.hosts import netns
from shoal.hosts.netns import Network, Pod
from shoal.testing.local import AgentProcess, ControlPlaneProcess, _Process, free_port, wait_for
from tests.e2e.conftest import agent_info

ROOT = Path(__file__).resolve().parents[2]
SHOAL = [sys.executable, "-m", "shoal"]


def app_command(kind: str = "http") -> list[str]:
    return [sys.executable, "-m", "shoal.testing.apps", kind]


@dataclass
class Cluster:
    plan: ClusterPlan
    network: Network
    cp: ControlPlaneProcess
    gateway: _Process
    gateway_argv: list[str]
    east_west_port: int
    pods: dict[str, Pod] = field(default_factory=dict)
    agents: dict[str, AgentProcess] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.plan.name

    def start_gateway(self) -> None:
        self.gateway._spawn(self.gateway_argv)

    def add(self, name: str, service: str, port: int = 8080, **kw: object) -> AgentProcess:
        """A workload in its own pod: the agent (and so Envoy and the app) run in it."""
        pod = self.pods.get(name) or netns.create_pod(name, self.network)
        self.pods[name] = pod
        agent = AgentProcess(self.cp, service=service, port=port, name=name,
                             command=app_command(), wrap=pod.command([]),
                             extra=["--address", str(pod.address)],
                             env={"SHOAL_WORKLOAD": name}, **kw)  # type: ignore[arg-type]
        self.agents[name] = agent
        return agent.start()

    def crash(self, name: str) -> None:
        """Every process of pod ``name`` killed at once (agent, Envoy, app)."""
        out = subprocess.run(["ip", "netns", "pids", self.pods[name].netns],
                             capture_output=True, text=True, check=False).stdout
        for pid in map(int, out.split()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        agent = self.agents[name]
        if agent.proc is not None:
            agent.proc.wait(10)

    def stop(self) -> None:
        for agent in self.agents.values():
            agent.stop()
        self.gateway.stop()
        self.cp.stop()


@dataclass
class Loader:
    """A sequential HTTP client in a pod, one JSON line per request (see loader.py)."""

    out: Path
    proc: subprocess.Popen[bytes]
    cursor: int = 0

    @staticmethod
    def start(pod: Pod, url: str, proxy_port: int, out: Path) -> Loader:
        log = open(out.with_suffix(".log"), "ab")  # noqa: SIM115 -- lives with the process
        proc = subprocess.Popen(
            pod.command([sys.executable, "-m", "tests.multicluster.loader", url,
                         f"http://127.0.0.1:{proxy_port}", str(out)]),
            cwd=ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            start_new_session=True)
        return Loader(out, proc)

    def _lines(self) -> list[dict[str, object]]:
        if not self.out.exists():
            return []
        text = self.out.read_text()
        return [json.loads(line) for line in text.splitlines()[:text.count("\n")]]

    def skip(self) -> None:
        """Forget what happened so far."""
        self.cursor = len(self._lines())

    def take(self, n: int, timeout: float = 120.0) -> list[dict[str, object]]:
        """The next ``n`` requests' results (waits for them)."""
        lines = wait_for(lambda: (ls := self._lines()) and len(ls) >= self.cursor + n and ls,
                         timeout, f"{n} more requests from the loader")
        got = lines[self.cursor:self.cursor + n]
        self.cursor += n
        return got

    def served(self, n: int) -> Counter[str]:
        return Counter(str(r["by"]) if r["status"] == 200 else f"HTTP {r['status']}"
                       for r in self.take(n))

    def until(self, predicate, timeout: float = 120.0) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
        """Requests up to and including the first for which ``predicate`` holds."""
        seen: list[dict[str, object]] = []

        def check() -> bool:
            seen.extend(self.take(1, timeout))
            return bool(predicate(seen[-1]))
        wait_for(check, timeout, "the loader to see the change", interval=0)
        return seen

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def start_clusters(workdir: Path, prefix: str, *, base: int = 97) -> list[Cluster]:
    """Shared root + intermediates, two isolated networks, a control plane and an
    east-west gateway per cluster, each following the other. Caller stops them
    (``Cluster.stop``) and removes the networks (``netns.cleanup(prefix)``)."""
    ca = workdir / "ca"
    subprocess.run([*SHOAL, "ca", "create-root", "--out", str(ca / "root")], check=True,
                   capture_output=True)
    clusters: list[Cluster] = []
    ps = plans(prefix, base)
    try:
        for plan in ps:
            d = ca / plan.name
            subprocess.run([*SHOAL, "ca", "create-intermediate", "--root", str(ca / "root"),
                            "--cluster", plan.name, "--out", str(d)], check=True,
                           capture_output=True)
            net = netns.create_network(plan.network, plan.subnet)
            gw_ip = str(net.gateway)
            cp = ControlPlaneProcess(
                workdir / plan.name, lease_ttl=6.0, agent_host=gw_ip,
                extra=["--cluster", plan.name, "--network", plan.network.removeprefix(prefix),
                       "--ca-cert", str(d / "ca-cert.pem"), "--ca-key", str(d / "ca-key.pem"),
                       "--ca-chain", str(d / "ca-chain.pem")])
            port = free_port(gw_ip)
            gw = _Process("eastwest", cp.workdir / "logs" / "eastwest.log")
            cluster = Cluster(plan, net, cp, gw, [], port)
            clusters.append(cluster)
            cp.start()
            cp.client().apply(east_west_gateway(port))
            cluster.gateway_argv = [
                *SHOAL, "gateway", "run", "--name", "eastwest", "--workload", "eastwest-1",
                "--label", "istio=eastwestgateway", "--port", str(port), "--address", gw_ip,
                "--control-plane", cp.agent_url, "--xds", cp.secure_xds,
                "--ca-bundle", str(cp.ca_bundle),
                "--token-file", str(cp.token_file("default", "eastwest")),
                "--run-dir", str(cp.workdir / "run" / "eastwest"), "--drain-seconds", "0.2",
                "--lease-seconds", "6"]
            cluster.start_gateway()
        a, b = clusters
        netns.isolate(a.network, b.network)
        for x, y in ((a, b), (b, a)):  # each follows the other
            secret = subprocess.run([*SHOAL, "-c", y.cp.url, "cluster", "remote-secret"],
                                    check=True, capture_output=True, text=True).stdout
            subprocess.run([*SHOAL, "-c", x.cp.url, "cluster", "add", "-f", "-"],
                           input=secret, check=True, capture_output=True, text=True)
        for x in clusters:
            x.cp.wait_synced({"eastwest-1"}, timeout=120)
            wait_for(lambda x=x: all(c["state"] in ("local", "reachable") and (
                c["local"] or c["gateways"]) for c in clusters_of(x)), 60,
                f"{x.name} to see the other cluster and its gateway")
    except BaseException:
        for c in clusters:
            c.stop()
        raise
    return clusters


def start_failover_mesh(clusters: list[Cluster], prefix: str, workdir: Path, *,
                        sync_timeout: float = 120.0) -> Loader:
    """``web`` with one instance per cluster under the demo's locality-failover rule, a
    client in cluster a, and a loader calling ``web`` from the client's pod."""
    a, b = clusters
    for c in clusters:
        c.cp.client().apply(locality_failover("web"))
    a.add(f"{prefix}web-a", "web")
    b.add(f"{prefix}web-b", "web")
    client = a.add(f"{prefix}client", "client", port=7070)
    for c in clusters:
        c.cp.wait_synced(set(c.agents), timeout=sync_timeout)
    info = agent_info(client, timeout=60)
    return Loader.start(a.pods[f"{prefix}client"], "http://web:8080/",
                        info["outboundPort"], workdir / "requests.jsonl")


def clusters_of(cluster: Cluster) -> list[dict[str, object]]:
    with cluster.cp.client() as c:
        return c.request("GET", "/api/v1/clusters")["clusters"]
