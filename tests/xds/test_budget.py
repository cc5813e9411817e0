"""The write budget shared by the ADS streams (xds/server/budget.py, issue 13 part 4):
bytes being written at once stay within the limit, waiting streams are served in order,
a lease is given back when its write ends or after ``hold`` (a stuck client does not hold
the others back), a cancelled wait takes nothing; and through a real gRPC server, a
client that stops reading does not stop another from converging."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.xds.test_server_sotw import cds_request

from shoal.xds.server.budget import WriteBudget


@asynccontextmanager
async def lease(budget: WriteBudget, size: int) -> AsyncIterator[None]:
    token = await budget.acquire(size)
    try:
        yield
    finally:
        budget.release(token)


async def test_leases_wait_in_order_and_stay_within_the_limit() -> None:
    budget = WriteBudget(limit=100, hold=60)
    order: list[str] = []
    first = asyncio.Event()

    async def write(name: str, size: int, gate: asyncio.Event | None = None) -> None:
        async with lease(budget, size):
            assert budget.used <= budget.limit
            order.append(name)
            if gate is not None:
                await gate.wait()

    a = asyncio.create_task(write("a", 80, first))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(write(n, s)) for n, s in (("b", 50), ("c", 10))]
    await asyncio.sleep(0)
    assert order == ["a"] and budget.used == 80  # c fits, but waits behind b
    first.set()
    await asyncio.gather(a, *waiting)
    assert order == ["a", "b", "c"] and budget.used == 0 and budget.peak <= 100


async def test_a_write_larger_than_the_budget_goes_alone() -> None:
    budget = WriteBudget(limit=10, hold=60)
    async with lease(budget, 1_000):
        assert budget.used == 10
    assert budget.used == 0


async def test_a_lease_not_given_back_lapses_after_hold() -> None:
    """A write that never ends (a client that stopped reading) keeps its own bytes
    pending but gives the budget back after ``hold``: the next write proceeds."""
    budget = WriteBudget(limit=10, hold=0.05)
    stuck = asyncio.Event()

    async def never_ends() -> None:
        async with lease(budget, 10):
            await stuck.wait()

    holder = asyncio.create_task(never_ends())
    await asyncio.sleep(0)

    async def next_write() -> bool:
        async with lease(budget, 10):
            return True

    assert await asyncio.wait_for(next_write(), 30)
    stuck.set()
    await holder
    assert budget.used == 0  # (the lapsed lease is not given back twice)


async def test_a_cancelled_wait_takes_nothing() -> None:
    budget = WriteBudget(limit=10, hold=60)
    gate = asyncio.Event()

    async def write(size: int) -> None:
        async with lease(budget, size):
            await gate.wait()

    holder = asyncio.create_task(write(10))
    await asyncio.sleep(0)
    cancelled = asyncio.create_task(write(5))
    after = asyncio.create_task(write(5))
    await asyncio.sleep(0)
    cancelled.cancel()
    gate.set()
    await asyncio.gather(holder, after)
    assert cancelled.cancelled() and budget.used == 0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 300), st.integers(0, 3)), min_size=1, max_size=30),
       st.integers(1, 200))
def test_any_writes_all_end_within_the_limit(writes: list[tuple[int, int]], limit: int) -> None:
    async def run() -> WriteBudget:
        budget = WriteBudget(limit=limit, hold=60)

        async def write(size: int, yields: int) -> None:
            async with lease(budget, size):
                assert budget.used <= limit
                for _ in range(yields):
                    await asyncio.sleep(0)

        await asyncio.wait_for(asyncio.gather(*(write(s, y) for s, y in writes)), 30)
        return budget

    budget = asyncio.run(run())
    assert budget.used == 0 and budget.peak <= limit


async def test_a_client_that_stops_reading_does_not_stop_another(make_harness: Any,
                                                                 build: Any) -> None:
    """A budget smaller than one CDS response and a client that never reads its own: the
    second client still converges (the stuck write's lease lapses)."""
    harness = await make_harness(ack_timeout=60.0, send_timeout=60.0)
    harness.xds.budget = WriteBudget(limit=1 << 10, hold=0.2)
    snap = build.snapshot({f"cluster-{i}": 8000 + i % 1000 for i in range(20_000)},
                          {"/": "cluster-0"})
    harness.hooks.initial = snap
    harness.cache.set(build.node, snap)
    # (no BDP probing: the stuck client's window stays at HTTP/2's 64 KiB, so the server's
    # write of its CDS cannot complete)
    async with grpc.aio.insecure_channel(harness.address,
                                         options=[("grpc.http2.bdp_probe", 0)]) as ch:
        stuck = ads_pb2_grpc.AggregatedDiscoveryServiceStub(ch).StreamAggregatedResources()
        await stuck.write(cds_request(build))  # ... and never reads
        async with harness.client("other.default") as other:
            await asyncio.wait_for(other.wait_for(snap), 60)
        stuck.cancel()
    assert harness.xds.budget.waited > 0  # the budget did make writes wait


async def test_waiting_for_the_budget_does_not_count_against_the_clients_ack_time(
        make_harness: Any, build: Any) -> None:
    """The ACK clock starts when the client has taken a response, not when the response
    is queued: one that waits for the write budget (the server's own pacing) longer than
    ``ack_timeout`` is written and answered, and its stream is not cut."""
    harness = await make_harness(ack_timeout=3.0, send_timeout=60.0)
    budget = harness.xds.budget = WriteBudget(limit=1 << 20, hold=60)
    snap = build.snapshot({"cluster-0": 8000}, {"/": "cluster-0"})
    harness.cache.set(build.node, snap)
    held = await budget.acquire(budget.limit)  # everything, for 2.5x the ACK timeout
    async with harness.client() as client:
        await asyncio.sleep(7.5)
        assert budget.waited > 0  # its first response waited all along
        budget.release(held)
        await asyncio.wait_for(client.wait_for(snap), 60)  # (raises if the stream was cut)
    assert harness.hooks.disconnected in ([], [build.node])  # (the client's own close)
