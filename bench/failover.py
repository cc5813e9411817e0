"""Multi-cluster failover benchmark: how long until a client's requests are served by
the other cluster when its own cluster's instance dies, and how many fail meanwhile.

Two clusters on this machine (network namespaces, one control plane and east-west
gateway each, shared root; see tests/multicluster/topology.py); ``web`` has an instance
in each; a client in cluster a sends sequential requests (~40/s) through its sidecar.
Each round crashes a's web (SIGKILL of every process in its pod), watches WINDOW seconds
of requests, then restarts it and waits until traffic is back in a. Scenarios:

* ``instance``: a's control plane and gateway keep running (the crash is also seen as a
  lease expiry and an EDS update);
* ``no control plane``: a's control plane and east-west gateway are stopped first, so
  the client's sidecar only has its last config (outlier detection does it all).

Needs root. ``python -m bench.run failover [--quick]``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.multicluster.topology import Cluster, Loader, start_clusters, start_failover_mesh

from shoal.hosts import netns

# seconds of requests counted after each crash: with the control plane up, the dead
# endpoint's lease (6 s) expires and it is removed long before its 1 min ejection ends;
# without it, the window covers the end of the first ejection (the requests sent to the
# dead endpoint again until it is re-ejected).
WINDOWS = (15.0, 75.0)


@dataclass
class Round:
    requests: int  # in the window
    failed: int
    to_b_ms: float  # crash -> first response served in b (includes that request)
    max_ms: float  # slowest request in the window


@dataclass
class Scenario:
    name: str
    window: float
    rounds: list[Round] = field(default_factory=list)

    @property
    def per_10k(self) -> float:
        total = sum(r.requests for r in self.rounds)
        return 10_000 * sum(r.failed for r in self.rounds) / total if total else 0.0


def _round(a: Cluster, loader: Loader, a_web: str, b_web: str, window: float) -> Round:
    loader.skip()
    crashed = time.time()
    a.crash(a_web)
    lines = loader.take(1)
    while float(lines[-1]["t"]) < crashed + window:  # type: ignore[arg-type]
        lines += loader.take(1)
    window = [r for r in lines if float(r["t"]) >= crashed]  # type: ignore[arg-type]
    first_b = next((r for r in window if r["by"] == b_web), None)
    to_b = ((float(first_b["t"]) + float(first_b["ms"]) / 1000 - crashed) * 1000  # type: ignore[arg-type]
            if first_b else float("nan"))
    return Round(len(window), sum(r["status"] != 200 for r in window), to_b,
                 max(float(r["ms"]) for r in window))  # type: ignore[arg-type]


def _recover(a: Cluster, loader: Loader, a_web: str) -> None:
    a.agents[a_web].start()
    loader.until(lambda r: r["by"] == a_web, timeout=180)


def run(rounds: int, log: Callable[[str], None] = print, *, cp_down_rounds: int | None = None
        ) -> list[Scenario]:
    unavailable = netns.unavailable()
    if unavailable:
        raise SystemExit(f"the failover benchmark needs root and network namespaces: "
                         f"{unavailable}")
    prefix = f"bf{uuid.uuid4().hex[:4]}-"
    with tempfile.TemporaryDirectory(prefix="shoal-failover-") as tmp:
        workdir = Path(tmp)
        clusters: list[Cluster] = []
        loader = None
        try:
            clusters = start_clusters(workdir, prefix, base=98)
            a = clusters[0]
            a_web, b_web = f"{prefix}web-a", f"{prefix}web-b"
            loader = start_failover_mesh(clusters, prefix, workdir, sync_timeout=180)
            loader.until(lambda r: r["by"] == a_web, timeout=180)
            out = [Scenario("instance crash", WINDOWS[0]),
                   Scenario("instance crash, a's control plane and gateway down", WINDOWS[1])]
            for i in range(rounds):
                out[0].rounds.append(r := _round(a, loader, a_web, b_web, out[0].window))
                log(f"{out[0].name} #{i + 1}: {r}")
                _recover(a, loader, a_web)
            a.cp.stop()
            a.gateway.stop()
            for i in range(rounds if cp_down_rounds is None else cp_down_rounds):
                out[1].rounds.append(r := _round(a, loader, a_web, b_web, out[1].window))
                log(f"{out[1].name} #{i + 1}: {r}")
                a.agents[a_web].start()  # no control plane: it cannot register; restart
                a.cp.start()             # everything for the next round
                a.start_gateway()
                loader.until(lambda r: r["by"] == a_web, timeout=180)
                a.cp.stop()
                a.gateway.stop()
            return out
        finally:
            if loader is not None:
                loader.stop()
            for c in clusters:
                c.stop()
            netns.cleanup(prefix)


def markdown(scenarios: list[Scenario], when: str, info: str, command: str) -> str:
    rows = []
    for s in scenarios:
        rs = s.rounds
        rows.append(
            f"| {s.name} | {len(rs)} | {s.window:.0f} s | {sum(r.requests for r in rs)} | "
            f"{sum(r.failed for r in rs)} | **{s.per_10k:.1f}** | "
            f"{statistics.median(r.to_b_ms for r in rs):.0f} / "
            f"{max(r.to_b_ms for r in rs):.0f} | {max(r.max_ms for r in rs):.0f} |")
    return "\n".join([
        "## Multi-cluster failover", "",
        f"{when} · {info} · `{command}`", "",
        "Two clusters on this machine (isolated network namespaces, a control plane and an "
        "east-west gateway each, shared root). A client in cluster a calls `web` "
        "sequentially (~40 req/s) through its sidecar; `web` has one instance per cluster "
        "and a DestinationRule with `localityLbSetting` + `outlierDetection` "
        "(consecutive5xxErrors 1, interval 100ms, baseEjectionTime 1m, maxEjectionPercent "
        "100) plus a VirtualService with `retryRemoteLocalities` "
        "(`shoal.demo.clusters.locality_failover`). Each round SIGKILLs every process of "
        "a's web pod and counts the requests "
        "of the window after it.", "",
        "| scenario | rounds | window | requests | failed | failed per 10,000 | crash → "
        "first response from b, ms (median / max) | slowest request, ms |",
        "|---|---|---|---|---|---|---|---|", *rows, "",
        "The first request after the crash fails to connect to a's instance; the "
        "VirtualService's retries (2, on connect-failure/reset/503, Istio's "
        "`retryRemoteLocalities: true`, i.e. Envoy's previous_priorities) send it to the "
        "next priority -- b's east-west gateway -- and outlier detection ejects a's "
        "instance: the switch costs a retried request, not a failed one. A request can "
        "still fail when both its retries land on a's instance before the priority "
        "update applies. With the control plane up the dead endpoint is removed when its "
        "lease expires (6 s here), before its ejection ends. Without it the endpoint stays "
        "in the sidecar's config: when the ejection ends (after 1 min, then longer: Envoy "
        "multiplies it) requests go to it again until it is re-ejected, and their retries "
        "go to b.",
    ])
