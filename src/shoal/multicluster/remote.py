"""Following remote clusters: their Workloads, Services and Gateways, kept in memory.

One :class:`RemoteCluster` per remote secret reads the remote control plane's discovery
stream (``GET /api/v1/discovery``: a full SYNC, then changes, with BOOKMARKs while idle)
and hands the :class:`~shoal.multicluster.view.ClusterView` its current view of that
cluster after every change. When the remote cannot be reached, or the stream stops
(no line for ``read_timeout``), the last known resources are KEPT and marked stale
(Istio keeps a lost cluster's endpoints too): endpoints behind a dead network are then
avoided by outlier detection and retries, and a cluster that is only unreachable from
here keeps serving. It reconnects with capped back-off and resynchronizes from a full
SYNC. ``shoal cluster remove`` forgets a cluster and its endpoints.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from shoal.agent.backoff import Backoff
from shoal.api import load_resource
from shoal.api.meta import Resource, ResourceKey
from shoal.errors import ShoalError
from shoal.multicluster import secrets as secret_files
from shoal.multicluster.labels import DISCOVERED_KINDS, EAST_WEST_ANNOTATION, remote_view
from shoal.multicluster.secrets import RemoteSecret
from shoal.multicluster.view import ClusterView

log = logging.getLogger("shoal.multicluster")
DISCOVERY_PATH = "/api/v1/discovery"
READ_TIMEOUT = 15.0  # the remote sends a BOOKMARK every 5 s while idle


@dataclass
class RemoteStatus:
    reachable: bool = False
    synced_once: bool = False
    attempted: bool = False  # a first connection attempt ended (synced or failed)
    network: str = ""  # the remote's network (the secret's, or what it reported)
    last_error: str = ""
    last_change: float = 0.0  # time.time() of the last reachable/unreachable switch
    revision: int = 0

    @property
    def state(self) -> str:
        if self.reachable:
            return "reachable"
        return "stale" if self.synced_once else "unreachable"


@dataclass
class RemoteCluster:
    secret: RemoteSecret
    view: ClusterView
    ssl_context: Callable[[], ssl.SSLContext | None] = lambda: None
    read_timeout: float = READ_TIMEOUT
    status: RemoteStatus = field(default_factory=RemoteStatus)
    _raw: dict[ResourceKey, Resource] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.secret.name

    def summary(self) -> dict[str, Any]:
        resources = self.view.remote_resources(self.name)
        workloads = [r for r in resources if r.kind == "Workload"]
        gateways = [f"{w.spec.address}:{w.metadata.annotations[EAST_WEST_ANNOTATION]}"
                    for w in workloads if EAST_WEST_ANNOTATION in w.metadata.annotations]
        return {"name": self.name, "local": False, "url": self.secret.url,
                "network": self.status.network, "state": self.status.state,
                "workloads": len(workloads) - len(gateways),
                "services": sum(r.kind == "Service" for r in resources),
                "gateways": gateways, "lastError": self.status.last_error,
                "since": self.status.last_change, "revision": self.status.revision}

    def _publish(self) -> None:
        gateways = [r for r in self._raw.values() if r.kind == "Gateway"]
        view = {}
        for r in self._raw.values():
            if r.kind == "Gateway":
                continue  # only used to find the remote's east-west gateways
            v = remote_view(r, self.name, self.status.network, gateways)
            view[v.key] = v
        self.view.replace_remote(self.name, view)

    def _set_reachable(self, reachable: bool, error: str = "") -> None:
        if reachable != self.status.reachable:
            self.status.last_change = time.time()
            log.log(logging.INFO if reachable else logging.WARNING,
                    "remote cluster " + ("reachable" if reachable else "unreachable"),
                    extra={"cluster": self.name, "error": error,
                           "kept": len(self._raw) if not reachable else None})
        self.status.reachable = reachable
        self.status.last_error = error

    async def run(self) -> None:
        backoff = Backoff(initial=0.5, maximum=5.0)
        while True:
            try:
                await self._follow(backoff)
                error = "the stream ended"
            except (httpx.HTTPError, OSError, ValueError, ShoalError) as e:
                error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            self._set_reachable(False, error)  # keep the last known resources: stale
            self.status.attempted = True
            await asyncio.sleep(backoff.next())

    async def _follow(self, backoff: Backoff) -> None:
        headers = {"Authorization": f"Bearer {self.secret.token}"} if self.secret.token else {}
        timeout = httpx.Timeout(5.0, read=self.read_timeout)
        verify: ssl.SSLContext | bool = self.ssl_context() or True
        async with httpx.AsyncClient(timeout=timeout, trust_env=False, verify=verify) as http, \
                http.stream("GET", self.secret.url + DISCOVERY_PATH, headers=headers) as resp:
            if resp.status_code != 200:
                body = (await resp.aread()).decode(errors="replace")[:300]
                raise ShoalError(f"HTTP {resp.status_code}: {body}")
            async for line in resp.aiter_lines():
                if line.strip():
                    self._handle(json.loads(line))
                    backoff.reset()

    def _handle(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        self.status.revision = int(msg.get("revision") or self.status.revision)
        if kind == "SYNC":
            reported = str(msg.get("cluster") or "")
            if reported and reported != self.name:
                raise ShoalError(
                    f"the control plane at {self.secret.url} is cluster {reported!r}, "
                    f"not {self.name!r}")
            self.status.network = self.secret.network or str(msg.get("network") or "")
            self._raw = {r.key: r for r in map(load_resource, msg.get("resources", []))
                         if r.kind in DISCOVERED_KINDS}
            self.status.synced_once = True
            self._set_reachable(True)
            self._publish()
            self.status.attempted = True
        elif kind in ("PUT", "DELETE"):
            r = load_resource(msg["resource"])
            if r.kind not in DISCOVERED_KINDS:
                return
            if kind == "PUT":
                self._raw[r.key] = r
            else:
                self._raw.pop(r.key, None)
            self._publish()


class RemoteClusters:
    """The remote clusters this control plane follows: loaded from, and saved to, the
    remote secrets file; added and removed while running."""

    def __init__(self, view: ClusterView, data_dir: Path,
                 ssl_context: Callable[[], ssl.SSLContext | None],
                 *, read_timeout: float = READ_TIMEOUT):
        self.view = view
        self._dir = data_dir
        self._ssl = ssl_context
        self._read_timeout = read_timeout
        self.clusters: dict[str, RemoteCluster] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._tg: asyncio.TaskGroup | None = None

    def secrets(self) -> list[RemoteSecret]:
        return [c.secret for c in self.clusters.values()]

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            try:
                for secret in secret_files.load(self._dir):
                    self._start(secret)
                await asyncio.Event().wait()
            finally:
                self._tg = None

    def _start(self, secret: RemoteSecret) -> None:
        cluster = RemoteCluster(secret, self.view, self._ssl, self._read_timeout)
        self.clusters[secret.name] = cluster
        if self._tg is not None:
            self._tasks[secret.name] = self._tg.create_task(cluster.run(),
                                                            name=f"remote:{secret.name}")

    def add(self, secret: RemoteSecret) -> RemoteCluster:
        """Follow ``secret``'s cluster (replacing an earlier secret of that name)."""
        self.remove(secret.name, save=False)
        self._start(secret)
        secret_files.save(self._dir, self.secrets())
        return self.clusters[secret.name]

    def remove(self, name: str, *, save: bool = True) -> bool:
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
        found = self.clusters.pop(name, None) is not None
        self.view.replace_remote(name, {})
        if save and found:
            secret_files.save(self._dir, self.secrets())
        return found

    async def wait_initial(self, timeout: float) -> None:
        """Until every remote cluster has synced or failed once (at most ``timeout``), so
        that proxies connecting to a (re)started control plane get the remote endpoints
        in their first config (Istio waits for remote clusters too)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while any(not c.status.attempted for c in self.clusters.values()) and \
                asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)

    def summaries(self) -> list[dict[str, Any]]:
        return [self.clusters[n].summary() for n in sorted(self.clusters)]


def trust_context(bundle: Path) -> Callable[[], ssl.SSLContext | None]:
    """Verify https:// remotes against the mesh roots (re-read on every connect: the
    bundle may rotate). None (system roots) when there is no bundle file."""
    def make() -> ssl.SSLContext | None:
        if not bundle.exists():
            return None
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(bundle))
    return make
