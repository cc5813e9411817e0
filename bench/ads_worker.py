"""A worker process running many FakeAdsClients; driven by the benchmark over a Pipe.

Messages (tuples) from the parent: ("watch", vhost, weights) or ("watch_eds", cluster,
address, present) -> the worker answers ("watching",) once every client waits for that
route split (or for that address to be in, or out of, the cluster's endpoints), then
("done", [t, ...]) with each client's time.monotonic() of seeing it; ("stop",) ends the
worker. At start it answers ("synced", [t, ...]) (or ("error", text)). CLOCK_MONOTONIC is
system-wide, so the parent can subtract its own timestamps.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

from shoal.testing import FakeAdsClient
from shoal.xds.cache.bounded import ByIdentity
from shoal.xds.generate import names
from shoal.xds.node import node_metadata
from shoal.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, ProxyMetadata


def route_weights(client: FakeAdsClient, vhost: str) -> tuple[int, ...]:
    """The weights of the virtual host ``<fqdn>:<port>``: in its service port's route
    configuration (scoped routes), or in the single ``outbound_http`` table (ALLOW_ANY)."""
    fqdn, _, port = vhost.rpartition(":")
    routes = client.resources[ROUTE]
    rc = routes.get(names.upstream_route(fqdn, int(port))) or routes.get(names.OUTBOUND_HTTP)
    if rc is None:
        return ()
    # the decoded route configuration is shared by every client sent it: read it once
    got = _WEIGHTS.get((rc,), vhost)
    if got is None:
        got = _WEIGHTS.put((rc,), _weights(rc, vhost), extra=vhost)
    return got


_WEIGHTS: ByIdentity[tuple[int, ...]] = ByIdentity(max_entries=64)


def _weights(rc: object, vhost: str) -> tuple[int, ...]:
    for vh in rc.virtual_hosts:  # type: ignore[attr-defined]
        if vh.name == vhost:
            for r in vh.routes:
                if r.route.HasField("weighted_clusters"):
                    return tuple(c.weight.value for c in r.route.weighted_clusters.clusters)
            return ()
    return ()


def synced(client: FakeAdsClient, vhost: str) -> bool:
    have = all(t in client.versions for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE))
    return have and bool(route_weights(client, vhost))


def _has_split(vhost: str, want: tuple[int, ...]) -> Callable[[FakeAdsClient], bool]:
    return lambda c: route_weights(c, vhost) == want


def _has_endpoint(cluster: str, address: str, present: bool) -> Callable[[FakeAdsClient], bool]:
    def check(c: FakeAdsClient) -> bool:
        cla = c.resources[ENDPOINT].get(cluster)
        have = cla is not None and any(
            e.endpoint.address.socket_address.address == address
            for g in cla.endpoints for e in g.lb_endpoints)  # type: ignore[attr-defined]
        return have == present
    return check


async def _wait_all(clients: list[FakeAdsClient], check: Callable[[FakeAdsClient], bool],
                    timeout: float) -> list[float]:
    async def one(c: FakeAdsClient) -> float:
        await c.wait_for(check, timeout=timeout)
        return time.monotonic()

    return list(await asyncio.gather(*(one(c) for c in clients)))


async def _main(conn: Connection, target: str, nodes: list[tuple[str, str]], first_vhost: str,
                delta: bool, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    clients = []
    for node_id, workload in nodes:
        meta = ProxyMetadata(workload=workload, outbound_port=15001, app_ports={"http": 8080},
                             admin_port=15000)
        clients.append(FakeAdsClient(target, node_id, node_metadata(meta, "default"),
                                     shared_responses=True,
                                     delta=delta))
    try:
        await asyncio.gather(*(c.start() for c in clients))
        conn.send(("synced", await _wait_all(clients, lambda c: synced(c, first_vhost),
                                             timeout)))
        while True:
            msg = await loop.run_in_executor(None, conn.recv)
            if msg[0] == "stop":
                return
            check = (_has_split(msg[1], tuple(msg[2])) if msg[0] == "watch"
                     else _has_endpoint(*msg[1:]))
            task = asyncio.ensure_future(_wait_all(clients, check, timeout))
            await asyncio.sleep(0.05)  # let every waiter check once and park
            conn.send(("watching",))
            conn.send(("done", await task))
    except Exception as e:  # report to the parent instead of dying silently
        conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


def worker(conn: Connection, target: str, nodes: list[tuple[str, str]], first_vhost: str,
           delta: bool = False, timeout: float = 120.0) -> None:
    # The fake sidecars stand in for Envoys, which have no garbage collector: with
    # CPython's default thresholds a worker holding 1,250 clients' state ran a full
    # collection every couple of changes, stalling all of them for a few hundred ms and
    # setting that round's p99. As in the control plane (ADR 0043), no automatic full
    # collections, young ones every 100,000 allocations.
    gc.set_threshold(100_000, 10, 2**31 - 1)
    asyncio.run(_main(conn, target, nodes, first_vhost, delta, timeout))
