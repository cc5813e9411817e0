"""Where a change's CPU goes without gRPC: the bench mesh generated in process for N
proxies, one delta stream core (``DeltaStream``) per proxy holding what a real client
would, then changes (a VirtualService weight, a workload joining, the weight back),
each timed in three parts: generating every proxy's snapshot, handing them to the
streams (new target, the response built), and the clients' ACKs. No sockets, no
asyncio tasks: what is left of a real change's CPU beside this is gRPC and the event
loop (compare ``bench.run controlplane``'s CPU per change).

    .venv/bin/python -m bench.streams --proxies 5000 --services 1000 [--profile]

Prints only (docs/benchmarks.md quotes it).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from envoy.service.discovery.v3 import discovery_pb2

from bench import mesh
from shoal.api.parse import parse_yaml
from shoal.registry.snapshot import MeshSnapshot
from shoal.xds.cache import SnapshotCache
from shoal.xds.generate import GenerationContext, generate
from shoal.xds.server.delta import DeltaStream
from shoal.xds.server.status import StatusTracker
from shoal.xds.server.stream import StreamContext
from shoal.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE, Proxy, ProxyMetadata


def _request(type_url: str, nonce: str = "", names: tuple[str, ...] = ()
             ) -> discovery_pb2.DeltaDiscoveryRequest:
    return discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, response_nonce=nonce,
                                               resource_names_subscribe=names)


class _Client:
    """What Envoy would answer on one stream: an ACK per response, and the
    subscriptions that follow CDS (EDS), LDS (SRDS) and SRDS (RDS)."""

    def __init__(self, stream: DeltaStream, eds: discovery_pb2.DeltaDiscoveryRequest,
                 rds: discovery_pb2.DeltaDiscoveryRequest) -> None:
        self.stream, self._eds, self._rds = stream, eds, rds

    def answer_all(self) -> None:
        s = self.stream
        while not s.outbox.empty():
            type_url, _ = s.outbox.get_nowait()
            s.on_request(_request(type_url, nonce=s.types[type_url].nonce))
            follow = {CLUSTER: (ENDPOINT, self._eds), LISTENER: (SCOPED_ROUTE, None),
                      SCOPED_ROUTE: (ROUTE, self._rds)}.get(type_url)
            if follow is not None and not s.types[follow[0]].requested:
                s.on_request(follow[1] if follow[1] is not None else _request(follow[0]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--proxies", type=int, default=5000, help="(%(default)s)")
    p.add_argument("--services", type=int, default=1000, help="(%(default)s)")
    p.add_argument("--profile", action="store_true", help="cProfile the last change")
    a = p.parse_args()
    docs = mesh.mesh_yaml(a.services).split("\n---\n")
    by_key = {r.key: r for k in range(0, len(docs), 1000)  # one parse is bounded
              for r in parse_yaml("\n---\n".join(docs[k:k + 1000]))}
    proxies = [Proxy(f"bench-{i}.default", mesh.NAMESPACE, ProxyMetadata(
        workload=mesh.workload_name(i % a.services, (i // a.services) % 2),
        outbound_port=15001, app_ports={"http": 8080}, admin_port=15000))
        for i in range(a.proxies)]
    cache, tracker = SnapshotCache(), StatusTracker()
    ctx = GenerationContext(MeshSnapshot.of(by_key, 1))
    clients = []
    t0 = time.perf_counter()
    for i, proxy in enumerate(proxies):
        snap = generate(ctx, proxy)
        cache.set(proxy.node_id, snap)
        tracker.connected(proxy.node_id, i, "delta")
        stream = DeltaStream(StreamContext(proxy.node_id, i, cache, tracker, 64))
        stream.on_request(_request(CLUSTER))
        stream.set_target(snap)
        stream.on_request(_request(LISTENER))
        clients.append(_Client(stream, _request(ENDPOINT, names=tuple(sorted(
            snap.get(ENDPOINT).items))), _request(ROUTE, names=tuple(sorted(
                snap.get(ROUTE).items)))))
    for c in clients:
        c.answer_all()
    print(f"{a.proxies} proxies, {a.services} services: connected and synced in "
          f"{time.perf_counter() - t0:.2f} s")
    changes = [mesh.virtual_service(0, 20), mesh.extra_workload(0), mesh.virtual_service(0, 80)]
    for k, doc in enumerate(changes):
        (r,) = parse_yaml(doc)
        by_key[r.key] = r
        workloads = frozenset({(r.metadata.namespace, r.metadata.name)}) \
            if r.kind == "Workload" else frozenset()
        new = GenerationContext(MeshSnapshot.of(by_key, 2 + k), ctx, frozenset({r.key}),
                                workloads)
        prof = cProfile.Profile() if a.profile and k == len(changes) - 1 else None
        t0 = time.perf_counter()
        snaps = [generate(new, proxy) for proxy in proxies]
        t1 = time.perf_counter()
        if prof:
            prof.enable()
        for proxy, snap, c in zip(proxies, snaps, clients, strict=True):
            cache.set(proxy.node_id, snap)
            c.stream.set_target(snap)
        t2 = time.perf_counter()
        for c in clients:
            c.answer_all()
        t3 = time.perf_counter()
        if prof:
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(20)
        n = a.proxies
        print(f"{r.kind} change: generate {(t1 - t0) * 1e3:.0f} ms, new targets and "
              f"responses {(t2 - t1) * 1e3:.0f} ms ({(t2 - t1) / n * 1e6:.0f} µs a stream), "
              f"ACKs {(t3 - t2) * 1e3:.0f} ms ({(t3 - t2) / n * 1e6:.0f} µs a stream)")
        ctx = new


if __name__ == "__main__":
    main()
