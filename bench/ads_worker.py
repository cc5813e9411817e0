"""A worker process running many FakeAdsClients; driven by the benchmark over a Pipe.

Messages (tuples) from the parent: ("watch", vhost, weights) -> the worker answers
("watching",) once every client waits for that route split, then ("done", [t, ...]) with
each client's time.monotonic() of seeing it; ("stop",) ends the worker. At start it
answers ("synced", [t, ...]) (or ("error", text)). CLOCK_MONOTONIC is system-wide, so
the parent can subtract its own timestamps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

from shoal.testing import FakeAdsClient
from shoal.xds.node import node_metadata
from shoal.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, ProxyMetadata

ROUTE_CONFIG = "outbound_http"


def route_weights(client: FakeAdsClient, vhost: str) -> tuple[int, ...]:
    rc = client.resources[ROUTE].get(ROUTE_CONFIG)
    if rc is None:
        return ()
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
                                     delta=delta))
    try:
        await asyncio.gather(*(c.start() for c in clients))
        conn.send(("synced", await _wait_all(clients, lambda c: synced(c, first_vhost),
                                             timeout)))
        while True:
            msg = await loop.run_in_executor(None, conn.recv)
            if msg[0] == "stop":
                return
            _, vhost, weights = msg
            task = asyncio.ensure_future(_wait_all(clients, _has_split(vhost, tuple(weights)),
                                                   timeout))
            await asyncio.sleep(0.05)  # let every waiter check once and park
            conn.send(("watching",))
            conn.send(("done", await task))
    except Exception as e:  # report to the parent instead of dying silently
        conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


def worker(conn: Connection, target: str, nodes: list[tuple[str, str]], first_vhost: str,
           delta: bool = False, timeout: float = 120.0) -> None:
    asyncio.run(_main(conn, target, nodes, first_vhost, delta, timeout))
