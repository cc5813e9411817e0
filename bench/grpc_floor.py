"""The floor under ``bench.run controlplane``'s endpoint rounds: one small delta response
to every one of N streams and its ACK, with no control plane at all.

A server process (grpc.aio, like the control plane) holds N ``DeltaAggregatedResources``
streams, one task each; worker processes hold the clients (grpc.aio, one connection
each, like the fake sidecars). Each round the server writes the same pre-serialized
response (one ClusterLoadAssignment, the size of an endpoint change's) to every stream;
each client decodes it and ACKs; the round's time per stream is from the start of the
push until the server has read that stream's ACK. What is measured is gRPC and the event
loop on both sides, on this machine's cores: no generation, no snapshot cache, no
per-stream bookkeeping. A control plane cannot push an endpoint change to N proxies
faster than this.

    .venv/bin/python -m bench.grpc_floor --streams 5000 --workers 4 --rounds 4 [--loop uvloop]

Prints only (docs/benchmarks.md quotes it).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing as mp
import time
from collections.abc import Coroutine
from multiprocessing.connection import Connection
from typing import Any

import grpc
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2

from bench.machine import describe, procs_stat
from bench.stats import percentile
from shoal.control.plane import GRPC_OPTIONS
from shoal.xds.server.server import ADS_SERVICE
from shoal.xds.types import ENDPOINT


def _payload(nonce: int) -> bytes:
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name="outbound|80||svc-1.default")
    group = cla.endpoints.add()
    for i in range(3):
        sa = group.lb_endpoints.add().endpoint.address.socket_address
        sa.address, sa.port_value = f"10.0.0.{i + 1}", 8080
    packed = any_pb2.Any()
    packed.Pack(cla)
    response = discovery_pb2.DeltaDiscoveryResponse(
        system_version_info=str(nonce), type_url=ENDPOINT, nonce=str(nonce))
    res = response.resources.add(name=cla.cluster_name, version=str(nonce))
    res.resource.CopyFrom(packed)
    return response.SerializeToString()


class _Server:
    def __init__(self) -> None:
        self.streams = 0
        self.go: asyncio.Future[bytes] | None = None
        self.acked: list[float] = []

    async def handle(self, requests, context) -> None:  # type: ignore[no-untyped-def]
        it = requests.__aiter__()
        await anext(it)
        self.streams += 1
        while True:
            while self.go is None:  # (between rounds)
                await asyncio.sleep(0.05)
            go = self.go
            payload = await go
            await context.write(payload)
            await anext(it)  # the ACK
            self.acked.append(time.monotonic())
            while self.go is go:
                await asyncio.sleep(0.05)


async def _serve(conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    state = _Server()
    server = grpc.aio.server(options=GRPC_OPTIONS)  # the control plane's
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(ADS_SERVICE, {
        "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
            state.handle, request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
            response_serializer=lambda b: b)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    conn.send(port)
    while True:
        msg = await loop.run_in_executor(None, conn.recv)
        if msg[0] == "stop":
            break
        if msg[0] == "count":
            conn.send(state.streams)
            continue
        n, nonce = msg[1], msg[2]
        state.acked = []
        state.go = loop.create_future()
        start = time.monotonic()
        state.go.set_result(_payload(nonce))
        while len(state.acked) < n:
            await asyncio.sleep(0.01)
        state.go = None
        conn.send([t - start for t in state.acked])
    await server.stop(None)


def _run(main: Coroutine[Any, Any, None], loop: str) -> None:
    """Run ``main`` on the standard loop, or on uvloop (not a dependency of shoal's:
    ``pip install uvloop`` to compare, ADR 0047)."""
    if loop == "uvloop":
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)


def _server(conn: Connection, loop: str) -> None:
    gc.set_threshold(100_000, 10, 2**31 - 1)  # as the control plane (ADR 0043)
    _run(_serve(conn), loop)


async def _client(target: str, ready: list[int]) -> None:
    channel = grpc.aio.insecure_channel(target)
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    outbox: asyncio.Queue[discovery_pb2.DeltaDiscoveryRequest] = asyncio.Queue()
    await outbox.put(discovery_pb2.DeltaDiscoveryRequest(type_url=ENDPOINT))

    async def requests():  # type: ignore[no-untyped-def]
        while True:
            yield await outbox.get()

    ready[0] += 1
    async for response in stub.DeltaAggregatedResources(requests()):
        for r in response.resources:  # decoded, as the fake sidecars do
            endpoint_pb2.ClusterLoadAssignment.FromString(r.resource.value)
        await outbox.put(discovery_pb2.DeltaDiscoveryRequest(
            type_url=ENDPOINT, response_nonce=response.nonce))


def _worker(conn: Connection, target: str, n: int, loop: str) -> None:
    gc.set_threshold(100_000, 10, 2**31 - 1)  # as bench.ads_worker

    async def main() -> None:
        ready = [0]
        tasks = [asyncio.create_task(_client(target, ready)) for _ in range(n)]
        while ready[0] < n:
            await asyncio.sleep(0.05)
        conn.send("ready")
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    _run(main(), loop)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--streams", type=int, default=5000)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                   help="the event loop of both sides")
    a = p.parse_args()
    ctx = mp.get_context("spawn")
    sconn, child = ctx.Pipe()
    server = ctx.Process(target=_server, args=(child, a.loop), daemon=True)
    server.start()
    target = f"127.0.0.1:{sconn.recv()}"
    workers, conns = [], []
    for i in range(a.workers):
        share = a.streams // a.workers + (1 if i < a.streams % a.workers else 0)
        mine, theirs = ctx.Pipe()
        w = ctx.Process(target=_worker, args=(theirs, target, share, a.loop), daemon=True)
        w.start()
        workers.append(w)
        conns.append(mine)
    for c in conns:
        c.recv()
    while True:  # every stream's first request read
        sconn.send(("count",))
        if sconn.recv() >= a.streams:
            break
        time.sleep(0.1)
    time.sleep(2.0)
    print(f"machine: {describe()}")
    print(f"{a.streams} streams, {a.workers} client processes, grpcio {grpc.__version__}, "
          f"{a.loop}")
    for r in range(a.rounds):
        before_s, before_c = procs_stat([server.pid]), procs_stat([w.pid for w in workers])
        sconn.send(("push", a.streams, r + 1))
        times = sconn.recv()
        cpu_s = procs_stat([server.pid]).cpu_s - before_s.cpu_s
        cpu_c = procs_stat([w.pid for w in workers]).cpu_s - before_c.cpu_s
        print(f"round {r + 1}: first {min(times) * 1e3:.0f} ms, p50 "
              f"{percentile(times, 50) * 1e3:.0f} ms, p99 {percentile(times, 99) * 1e3:.0f} ms;"
              f" CPU server {cpu_s:.2f} s ({cpu_s / a.streams * 1e6:.0f} us a stream), "
              f"clients {cpu_c:.2f} s")
        time.sleep(1.0)
    for c in conns:  # the clients go first: their streams end, the server stops idle
        c.send("stop")
    for w in workers:
        w.join(10)
    sconn.send(("stop",))
    server.join(10)


if __name__ == "__main__":
    main()
