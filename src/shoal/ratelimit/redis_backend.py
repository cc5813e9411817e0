"""Redis counters, shared by every instance of the rate-limit service.

One Lua script per request reads every counter, and only if none would exceed its limit
increments them all (INCRBY, and EXPIRE when a window's key is new), so concurrent
instances can never admit more than the limit. Keys: ``shoal:rl:<rule|value>:<start>``.
Quotas last as long as Redis keeps its data: run it with persistence (RDB or AOF).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from shoal.errors import Unavailable
from shoal.ratelimit.backend import Check, Outcome, Usage, decide, window_start
from shoal.ratelimit.rules import Rule

PREFIX = "shoal:rl:"

# KEYS: counters; ARGV: hits, then (limit, ttl) per key. Returns the counts before.
_SCRIPT = """
local hits = tonumber(ARGV[1])
local counts = {}
local over = false
for i, k in ipairs(KEYS) do
  local c = tonumber(redis.call('GET', k) or '0')
  counts[i] = c
  if c + hits > tonumber(ARGV[2 * i]) then over = true end
end
if not over then
  for i, k in ipairs(KEYS) do
    if redis.call('INCRBY', k, hits) == hits then
      redis.call('EXPIRE', k, tonumber(ARGV[2 * i + 1]))
    end
  end
end
return counts
"""


class RedisBackend:
    def __init__(self, url: str, max_connections: int = 64):
        # A blocking pool: bursts of concurrent checks wait for a connection.
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections)
        self._redis: Any = aioredis.Redis(connection_pool=pool)
        self._script = self._redis.register_script(_SCRIPT)

    @staticmethod
    def _key(check: Check, now: float) -> str:
        return f"{PREFIX}{check.key}:{window_start(now, check.rule.window)}"

    async def hit(self, checks: Sequence[Check], hits: int, now: float) -> list[Outcome]:
        keys = [self._key(ch, now) for ch in checks]
        argv: list[int] = [hits]
        for ch in checks:
            argv += [ch.rule.limit, ch.rule.window + 60]
        try:
            counts = await self._script(keys=keys, args=argv)
        except aioredis.RedisError as e:
            raise Unavailable(f"redis: {e}") from e
        return decide([int(c) for c in counts], checks, hits, now)[1]

    async def usage(self, quotas: Sequence[Rule], now: float) -> list[Usage]:
        out = []
        for rule in quotas:
            start = window_start(now, rule.window)
            pattern = f"{PREFIX}{rule.id}|*:{start}"
            async for raw in self._redis.scan_iter(match=pattern, count=500):
                name = raw.decode()
                value = name[len(PREFIX) + len(rule.id) + 1:].rpartition(":")[0]
                count = int(await self._redis.get(name) or 0)
                out.append(Usage(rule.id, value, count, rule.limit, rule.unit,
                                 start + rule.window - now))
        return sorted(out, key=lambda u: (u.rule, u.key))

    async def close(self) -> None:
        await self._redis.aclose(close_connection_pool=True)
