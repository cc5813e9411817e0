"""`shoal up --clusters 2`: the demo application spread over two clusters (needs root).

Each cluster gets its own network (a Linux bridge; pods of one cannot reach pods of the
other), its own control plane and east-west gateway (host namespace, on the bridge
address), and an intermediate CA under one shared root. The demo's workloads run in pods
(network namespaces) with their sidecars; each control plane follows the other; every
service fails over to the other cluster (DestinationRule localityLbSetting +
outlierDetection). `shoal down` stops every process and removes pods and bridges.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx

from shoal.ca.shared_root import create_intermediate, create_root
from shoal.cli.client import ApiClient
from shoal.cli.credentials import remember
from shoal.cli.output import console, err_console
from shoal.cli.procs import LocalProcesses, UpState
from shoal.demo.clusters import east_west_gateway, locality_failover, plans
from shoal.demo.topology import WORKLOADS, DemoWorkload, run_args
from shoal.envoy import free_port
from shoal.errors import ShoalError
from shoal.multicluster.secrets import READER_SERVICE_ACCOUNT

PREFIX = "demo-"
STATE = "clusters.json"
API_PORTS = (15080, 15180)
XDS_PORTS = (15010, 15110)
AGENT_API_PORT = 15017  # on the bridge address (15443 is the east-west gateway's)
SECURE_XDS_PORT = 15012
EAST_WEST_PORT = 15443
# Where each demo workload runs: productpage in both, reviews v1 in a, v2+v3 in b, ...
PLACEMENT = {0: ("productpage-v1", "details-v1", "reviews-v1", "ratings-v1"),
             1: ("productpage-v1", "details-v1", "reviews-v2", "reviews-v3", "ratings-v1")}


def unavailable() -> str | None:
    import os

    from shoal.hosts import netns

    if os.geteuid() != 0:
        return "`shoal up --clusters 2` needs root (network namespaces, bridges); run it " \
               "as root, or use `shoal up` (one cluster, no root needed)"
    return netns.unavailable()


def _demo_config() -> str:
    from shoal.cli.up import demo_config

    docs = [d for d in demo_config().split("\n---\n")
            if "kind: DestinationRule" not in d]  # reviews' subsets, with failover below
    reviews = locality_failover("reviews", subsets=("v1", "v2", "v3")).replace(
        "name: reviews-failover", "name: reviews")  # the name samples/ use
    rules = [locality_failover(h) for h in ("productpage", "details", "ratings")]
    return "\n---\n".join([*docs, reviews, *rules, east_west_gateway(EAST_WEST_PORT)])


def _token(client: ApiClient, home: Path, cluster: str, ns: str, sa: str) -> Path:
    from shoal.cli.up import _token_file

    return _token_file(client, home / cluster, ns, sa)


def up_clusters(home: Path, count: int, timeout: float, wait: Any) -> None:
    """Start the two-cluster demo under ``home`` (``wait(what, check, timeout, hint)``)."""
    from shoal.hosts import netns

    if count != 2:
        raise ShoalError("--clusters: the demo has 1 or 2 clusters")
    if reason := unavailable():
        raise ShoalError(reason)
    procs = LocalProcesses(home)
    state = UpState()
    ps = plans(PREFIX, count=count)
    (home / STATE).parent.mkdir(parents=True, exist_ok=True)
    (home / STATE).write_text(json.dumps({"prefix": PREFIX,
                                          "clusters": [p.name for p in ps]}))
    ca = home / "ca-shared"
    if not (ca / "root" / "root-cert.pem").exists():
        create_root(ca / "root", "cluster.local")
    clients: list[ApiClient] = []
    try:
        nets = [netns.create_network(p.network, p.subnet) for p in ps]
        netns.isolate(*nets)
        for i, (plan, net) in enumerate(zip(ps, nets, strict=True)):
            d = ca / plan.name
            if not (d / "ca-cert.pem").exists():
                create_intermediate(ca / "root", plan.name, d)
            gw = str(net.gateway)
            procs.spawn(state, f"control-plane-{plan.name}", [
                sys.executable, "-m", "shoal", "control-plane",
                "--api", f"127.0.0.1:{API_PORTS[i]}", "--xds", f"127.0.0.1:{XDS_PORTS[i]}",
                "--agent-api", f"{gw}:{AGENT_API_PORT}", "--secure-xds", f"{gw}:{SECURE_XDS_PORT}",
                "--data-dir", str(home / plan.name / "data"), "--cluster", plan.name,
                "--network", plan.network.removeprefix(PREFIX), "--trace-sampling", "100",
                "--access-log-stream", "--access-log", "all",
                "--trace-collector", "xds",  # pods cannot reach the loopback API
                "--ca-cert", str(d / "ca-cert.pem"), "--ca-key", str(d / "ca-key.pem"),
                "--ca-chain", str(d / "ca-chain.pem")])
            url = f"http://127.0.0.1:{API_PORTS[i]}"
            remember(url, home / plan.name / "data" / "admin.token", home)
            client = ApiClient(url)
            clients.append(client)
        state.api = clients[0].base_url
        procs.save(state)
        for plan, client in zip(ps, clients, strict=True):
            wait(f"starting the control plane of {plan.name}", client.ready, timeout,
                 str(procs.logs))
            client.apply(_demo_config(), source="demo/bookinfo.yaml + multi-cluster")
        _follow_each_other(clients)
        product_pages = []
        for i, (plan, net, client) in enumerate(zip(ps, nets, clients, strict=True)):
            gw = str(net.gateway)
            bundle = home / plan.name / "data" / "ca" / "root-cert.pem"
            agent_api = f"https://{gw}:{AGENT_API_PORT}"
            secure_xds = f"{gw}:{SECURE_XDS_PORT}"
            procs.spawn(state, f"eastwest-{plan.name}", [
                sys.executable, "-m", "shoal", "gateway", "run", "--name", "eastwest",
                "--workload", "eastwest-1", "--label", "istio=eastwestgateway",
                "--port", str(EAST_WEST_PORT), "--address", gw,
                "--control-plane", agent_api, "--xds", secure_xds, "--ca-bundle", str(bundle),
                "--token-file", str(_token(client, home, plan.name, "default", "eastwest")),
                "--run-dir", str(home / plan.name / "run" / "eastwest")])
            for w in (w for w in WORKLOADS if w.name in PLACEMENT[i]):
                pod = netns.create_pod(
                    f"{PREFIX}{plan.name.removeprefix('cluster-')}-{w.name}", net)
                argv = _agent_argv(w, home / plan.name, agent_api, secure_xds, str(pod.address),
                                   _token(client, home, plan.name, "default", w.service_account),
                                   bundle)
                procs.spawn(state, f"{plan.name}-{w.name}", pod.command(argv),
                            env=dict(w.env))
                if w.service == "productpage":
                    product_pages.append(f"http://{pod.address}:9080/productpage")
        state.product_page = product_pages[0]
        procs.save(state)
        for i, (plan, client) in enumerate(zip(ps, clients, strict=True)):
            wanted = {*PLACEMENT[i], "eastwest-1"}
            wait(f"starting the workloads of {plan.name}", lambda c=client, w=wanted: w <= {
                p.get("workload") for p in c.proxies() if p.get("sync") == "SYNCED"},
                timeout, str(procs.logs))
        for page in product_pages:
            wait(f"checking {page}", lambda p=page: httpx.get(p, timeout=5).status_code == 200,
                 timeout, str(procs.logs))
    except BaseException:
        err_console.print("[red]shoal up failed; stopping what it started[/red]")
        procs.stop(state)
        down_clusters(home)
        raise
    finally:
        for c in clients:
            c.close()
    console.print(f"[green]shoal is up[/green]: {count} clusters "
                  f"({', '.join(p.name for p in ps)}), each with its control plane, network "
                  "and east-west gateway.")
    for plan, page, client in zip(ps, product_pages, clients, strict=True):
        console.print(f"{plan.name}: product page [bold]{page}[/bold], dashboard "
                      f"[bold]{client.base_url}/ui/[/bold]")
    console.print("Try: shoal cluster list | shoal -c http://127.0.0.1:15180 cluster list | "
                  "shoal down")


def _agent_argv(w: DemoWorkload, home: Path, api: str, xds: str, address: str,
                token_file: Path, ca_bundle: Path) -> list[str]:
    argv = [sys.executable, "-m", "shoal", "run", "--control-plane", api, "--xds", xds,
            "--run-dir", str(home / "run" / w.name), "--drain-seconds", "1",
            "--token-file", str(token_file), "--ca-bundle", str(ca_bundle),
            "--address", address]
    if w.service == "productpage":
        argv += ["--inbound-port", "9080"]
    return argv + run_args(w, app_port=free_port())


def _follow_each_other(clients: list[ApiClient]) -> None:
    infos = [c.request("GET", "/api/v1/clusters") for c in clients]
    for i, client in enumerate(clients):
        for j, other in enumerate(clients):
            if i == j:
                continue
            token = other.create_token(infos[j]["rootNamespace"], READER_SERVICE_ACCOUNT,
                                       90 * 86400)["token"]
            client.request("POST", "/api/v1/clusters", json={
                "name": infos[j]["cluster"], "url": infos[j]["urls"]["agentApi"],
                "token": token})


def down_clusters(home: Path) -> bool:
    """Remove the demo's pods and bridges (after its processes stopped)."""
    path = home / STATE
    if not path.exists():
        return False
    from shoal.hosts import netns

    netns.cleanup(json.loads(path.read_text())["prefix"])
    path.unlink()
    return True

