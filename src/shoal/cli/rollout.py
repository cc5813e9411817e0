"""Has a config revision reached the proxies? (`shoal apply --wait`, test fixtures.)

The control plane reports, with the proxies' sync status, ``pushedRevision``: every
proxy's snapshot reflects the store up to that revision. A revision R has *rolled out*
when ``pushedRevision >= R`` and every connected proxy (or every named one) is SYNCED
with its newest snapshot. A NACK fails the rollout at once: waiting will not fix it.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from shoal.cli.client import ApiClient
from shoal.errors import ShoalError, Unavailable


class RolloutFailed(ShoalError):
    """A proxy rejected (NACKed) the config."""


@dataclass(frozen=True)
class Rollout:
    pushed: bool  # the control plane has computed every proxy's config at the revision
    missing: tuple[str, ...] = ()  # named workloads without a connected, ready proxy
    behind: tuple[str, ...] = ()  # node ids not SYNCED yet
    nacked: tuple[str, ...] = ()  # "node id: TYPE: message"
    proxies: list[dict[str, Any]] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.pushed and not self.missing and not self.behind

    def describe(self) -> str:
        parts = [] if self.pushed else ["not pushed yet"]
        if self.missing:
            parts.append(f"not connected or not ready: {', '.join(self.missing)}")
        if self.behind:
            parts.append(f"not synced: {', '.join(self.behind)}")
        parts += [f"NACK {n}" for n in self.nacked]
        return "; ".join(parts) or "done"


def rollout(state: dict[str, Any], revision: int,
            workloads: Collection[str] | None = None) -> Rollout:
    """Where revision ``revision`` stands, from one ``GET /api/v1/proxies`` answer.
    ``workloads``: only these (by workload name), all of which must be connected;
    None: every connected proxy."""
    proxies = [p for p in state.get("proxies", []) if p.get("connected", True)]
    if workloads is not None:
        proxies = [p for p in proxies if p.get("workload") in workloads]
    # a named workload counts once its proxy is connected and its workload registered and
    # ready (an endpoint for its peers): a proxy connects before its agent registers
    connected = {p.get("workload") for p in proxies if p.get("ready") is True}
    missing = tuple(sorted(w for w in (workloads or ()) if w not in connected))
    synced = {p.get("workload") for p in proxies if p.get("sync") == "SYNCED"}
    behind = tuple(sorted(p.get("node_id", "") for p in proxies
                          if p.get("sync") != "SYNCED" and p.get("workload") not in synced))
    nacked = tuple(_nacks(proxies))
    pushed = int(state.get("pushedRevision", 0)) >= revision
    return Rollout(pushed, missing, behind, nacked, proxies)


def _nacks(proxies: Iterable[dict[str, Any]]) -> Iterable[str]:
    for p in proxies:
        for t in p.get("types", []):
            nack = t.get("nack")
            if nack:
                yield f"{p.get('node_id')}: {t.get('type')}: {nack.get('message', '')}"


def wait_rollout(client: ApiClient, revision: int | None = None, *, timeout: float = 60.0,
                 workloads: Collection[str] | None = None, interval: float = 0.2) -> Rollout:
    """Poll until ``revision`` (default: the store's revision once every named workload
    is connected) has rolled out; raise RolloutFailed on a NACK, Unavailable on timeout."""
    deadline = time.monotonic() + timeout
    why = "no answer from the control plane"
    while True:
        try:
            state = client.sync_state()
        except Unavailable as e:  # restarting: keep asking until the deadline
            why = str(e)
        else:
            target = revision if revision is not None else int(state.get("revision", 0))
            last = rollout(state, target, workloads)
            if last.nacked:
                raise RolloutFailed("config rejected by proxies: " + "; ".join(last.nacked))
            if last.done:
                return last
            if revision is None and not last.missing:
                revision = target  # fixed once every named proxy is connected
            why = f"revision {target}: {last.describe()}"
        if time.monotonic() >= deadline:
            raise Unavailable(f"not rolled out within {timeout:g}s ({why})")
        time.sleep(interval)
