"""Counter backends: all-or-nothing decisions, per-key counters, persisted quotas, and
one Redis shared by several service instances never admitting more than the limit."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shoal.ratelimit.backend import Check, MemoryBackend
from shoal.ratelimit.rules import Rule

from .procs import RedisProcess

SECOND = Rule("default/p/all", 100, 1, False, None, None, True)
DAILY = Rule("default/p/daily", 10, 86400, True, "x-api-key", None, True)
NOW = 1_800_000_000.25  # a fixed clock: no timing in these tests


def test_refused_request_moves_no_counter() -> None:
    async def run() -> None:
        b = MemoryBackend()
        tight = Rule("default/p/tight", 1, 60, False, None, None, True)
        checks = [Check(tight, "t|"), Check(DAILY, f"{DAILY.id}|k")]
        assert [o.over for o in await b.hit(checks, 1, NOW)] == [False, False]
        assert [o.over for o in await b.hit(checks, 1, NOW)] == [True, False]
        usage = await b.usage([DAILY], NOW)
        assert [(u.key, u.used) for u in usage] == [("k", 1)]  # the refusal used no quota
    asyncio.run(run())


def test_windows_are_fixed_and_epoch_aligned() -> None:
    async def run() -> None:
        b = MemoryBackend()
        c = [Check(SECOND, f"{SECOND.id}|")]
        admitted = [not (await b.hit(c, 1, NOW))[0].over for _ in range(150)]
        assert sum(admitted) == 100
        assert not (await b.hit(c, 1, NOW + 1))[0].over  # next second, next window
    asyncio.run(run())


def test_quota_file_survives_reopen(tmp_path: Path) -> None:
    async def run() -> None:
        b = MemoryBackend(tmp_path / "q.db")
        for _ in range(6):
            await b.hit([Check(DAILY, f"{DAILY.id}|k")], 1, NOW)
        await b.close()
        b = MemoryBackend(tmp_path / "q.db")
        got = [(await b.hit([Check(DAILY, f"{DAILY.id}|k")], 1, NOW))[0].over for _ in range(6)]
        assert got == [False] * 4 + [True] * 2
        await b.close()
    asyncio.run(run())


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    if not RedisProcess.available():
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    proc = RedisProcess(tmp_path_factory.mktemp("redis")).start()
    try:
        yield proc.url
    finally:
        proc.stop()


def test_redis_shared_by_two_instances_admits_exactly_the_limit(redis_url: str) -> None:
    from shoal.ratelimit.redis_backend import RedisBackend

    async def run() -> None:
        a, b = RedisBackend(redis_url), RedisBackend(redis_url)
        rule = Rule("default/p/shared", 100, 60, False, None, None, True)

        async def hit(backend: RedisBackend) -> bool:
            return not (await backend.hit([Check(rule, f"{rule.id}|")], 1, NOW))[0].over
        results = await asyncio.gather(*(hit(a if i % 2 else b) for i in range(300)))
        assert sum(results) == 100
        for _ in range(4):
            await a.hit([Check(DAILY, f"{DAILY.id}|redis-key")], 1, NOW)
        usage = await b.usage([DAILY], NOW)
        assert [(u.key, u.used, u.limit) for u in usage] == [("redis-key", 4, 10)]
        await a.close()
        await b.close()
    asyncio.run(run())
